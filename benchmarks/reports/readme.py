"""The README's headline: speed against the smp peer, and what a new street scores, from one machine each."""
from __future__ import annotations

from reports import results, source, table

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
    data = results("camvid_holdout_screen_240x180_5min")
    names = {"fcn8s": "FCN-8s/Lite0 (today's default)", "context_scale1": "context_fpn/Lite0, inference scale 1"}
    rows = []
    for key, label in names.items():
        config = data["configs"][key]
        per = config["heldout_mean_iou_per_sequence"]
        rows.append([label, f"{per['0006R0']:.3f}", f"{per['0001TP']:.3f}", f"{config['heldout_mean_iou']:.3f}",
                     f"{config['val_mean_iou']:.3f}"])
    return table(["model", "0006R0 held out", "0001TP held out", "held-out mean", "val (a seen drive)"], rows) + \
        "\n\n" + source("camvid_holdout_screen_240x180_5min")
