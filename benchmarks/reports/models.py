"""docs/models.md: FCN's skips, measured on CamVid."""
from __future__ import annotations

from reports import results, rounded, signed, source, table

FCN_SKIPS = "fcn_skips_6min"


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


def fcn_skip_gains() -> str:
    gains = results(FCN_SKIPS)["skip_gains_points"]
    return f"{signed(gains[0])} points for the stride-16 skip and {signed(gains[1])} for the stride-8 one"
