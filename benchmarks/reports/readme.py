"""The README's headline: speed against the smp peer, and what a new street scores, from one machine each."""
from __future__ import annotations

from reports import results, source, table
from reports.benchmarks import FULL_SIZE

PEER = "smp Unet mobilenet_v2 onnxruntime-fp32"
LATENCY_ROWS = {  # results key -> what the reader runs
    "pixelwise accurate fcn8s x1.75 (openvino)": "FCN-8s/Lite0 at `--profile accurate` (today's default)",
    "pixelwise accurate context_fpn x1 (openvino)": "context_fpn/Lite0 at `--profile accurate`",
    "pixelwise accurate context_fpn x1 + flip (openvino)": "context_fpn/Lite0 + flip TTA at `--profile accurate`",
}


def latency() -> str:
    data = results("accurate_vs_peer_flip")
    rows = [[label, f"{data['median_ms'][key]:.1f} ms", f"{data['ratios_to_best_peer'][key]:.2f}×"]
            for key, label in LATENCY_ROWS.items()]
    rows.append(["smp Unet/MobileNetV2 at its best here (ONNX Runtime fp32)", f"{data['median_ms'][PEER]:.1f} ms",
                 "1.00×"])
    return table(["model (OpenVINO, 360×480, batch 1)", "median latency", "vs the peer"], rows) + "\n\n" + \
        source("accurate_vs_peer_flip")


def heldout() -> str:
    """The screen (240x180, five minutes) beside the full-size run (480x360, 45 minutes) of the same two models."""
    screen = results("camvid_holdout_screen_240x180_5min")["configs"]
    default_name, candidate_name, _ = FULL_SIZE[0]
    full = {"fcn8s": results(default_name)["runs"][0], "context_scale1": results(candidate_name)["runs"][0]}
    names = {"fcn8s": "FCN-8s/Lite0 (the default)",
             "context_scale1": "context_fpn/Lite0, inference scale 1 (full size: + flip TTA)"}
    rows = []
    for key, label in names.items():
        per = screen[key]["heldout_mean_iou_per_sequence"]
        rows.append([label, f"{per['0006R0']:.3f}", f"{screen[key]['heldout_mean_iou']:.3f}",
                     f"**{full[key]['heldout_mean_iou']:.3f}**", f"{full[key]['val_mean_iou']:.3f}"])
    sequence = full["fcn8s"]["sequence"]
    header = ["model", f"screen: {sequence} held out", "screen: mean of 2 drives",
              f"full size: {sequence} held out", "full size: val (seen drives)"]
    return table(header, rows) + "\n\n" + source("camvid_holdout_screen_240x180_5min", default_name, candidate_name)
