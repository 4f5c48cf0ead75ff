"""docs/models.md: FCN's skips and the four upsampling operators, measured on CamVid."""
from __future__ import annotations

from reports import results, rounded, source, table

FCN_SKIPS = "fcn_skips_6min"
SEGNET_UPSAMPLING = "ablation_upsampling_segnet_basic_4min_240x180"


def fcn_skips() -> str:
    """FCN-32s, 16s and 8s at one budget each: val mean IoU, poles (the thinnest class), size and latency."""
    data = results(FCN_SKIPS)
    rows = []
    for name, run in data["results"].items():
        rows.append([name, rounded(run["val_mean_iou"], 3), rounded(run["per_class_iou"]["pole"], 3), run["epochs"],
                     rounded(run["params_m"], 2), rounded(run["latency_ms_360x480"], 1),
                     rounded(run["paper_voc_mean_iou"], 1)])
    return table(["model", "CamVid val mean IoU", "pole IoU", "epochs", "parameters (M)", "latency 360×480 (ms)",
                  "paper (VOC 2011)"], rows) + "\n\n" + source(FCN_SKIPS)


def _signed(value: float) -> str:
    return ("+" if value > 0 else "") + rounded(value, 1).replace("-", "−")


def fcn_skip_gains() -> str:
    gains = results(FCN_SKIPS)["skip_gains_points"]
    return f"{_signed(gains[0])} points for the stride-16 skip and {_signed(gains[1])} for the stride-8 one"


def segnet_upsampling() -> str:
    """SegNet-Basic from scratch with each upsampling operator in its decoder, beside the SegNet paper."""
    data = results(SEGNET_UPSAMPLING)
    rows = []
    for mode, run in sorted(data["results"].items(), key=lambda item: -item[1]["val_mean_iou"]):
        paper = run.get("paper_segnet_mean_iou")
        rows.append([f"`{mode}`", rounded(run["val_mean_iou"], 3), run["epochs"], rounded(run["params_m"], 3),
                     rounded(run["latency_ms_360x480"], 1), "–" if paper is None else rounded(paper, 1)])
    return table(["decoder upsampling", "CamVid val mean IoU (240×180)", "epochs", "parameters (M)",
                  "latency 360×480 (ms)", "paper (SegNet, converged)"], rows) + "\n\n" + source(SEGNET_UPSAMPLING)
