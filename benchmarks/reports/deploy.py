"""docs/deploy.md and the home page (docs/index.md): what each `--profile` gives, and a folder's speed."""
from __future__ import annotations

from reports import results, source, table


def _quality(label: str, setting: str) -> float:
    """CamVid val mean IoU of a speed.json cell, from its quality points."""
    return next(point["mean_iou"] for point in results("speed")["quality"]["points"]
                if point["label"] == label and point["setting"] == setting)


def _speed_ms(label: str, setting: str, size: str = "360x480", batch: int = 1) -> float:
    return next(row["median_ms"] for row in results("speed")["rows"]
                if (row["label"], row["setting"], row["size"], row["batch"]) == (label, setting, size, batch))


def predict_profiles() -> str:
    """The two profiles on OpenVINO at 360x480, batch 1: mean IoU, latency and the model's images/s.

    `accurate`'s latency is accurate_vs_peer.json's interleaved timing, the one the peers are compared by."""
    accurate_ms = results("accurate_vs_peer")["median_ms"]["pixelwise accurate (openvino)"]
    fast_ms = _speed_ms("pixelwise fast", "openvino-bf16")
    rows = [["`accurate` (default; masks equal to fp32's)", f"{_quality('pixelwise accurate', 'openvino-fp32'):.3f}",
             f"{accurate_ms:.0f} ms", f"{1000 / accurate_ms:.0f}"],
            ["`fast` (bf16)", f"{_quality('pixelwise fast', 'openvino-bf16'):.3f}", f"{fast_ms:.1f} ms",
             f"{1000 / fast_ms:.0f}"]]
    header = ["`pixelwise predict --profile`", "CamVid val mean IoU", "latency", "images/s (model)"]
    return table(header, rows) + "\n\n" + source("speed", "accurate_vs_peer")


def folder_command_speed() -> str:
    """`pixelwise predict --profile fast --no-overlay` over a folder, start-up included."""
    return f"{results('predict_folder')['pixelwise_fast_no_overlay_command_images_per_s']:.1f} images/s"


def folder_vs_smp_loop() -> str:
    """The whole command against a plain smp loop timed without its start-up, in the same run."""
    data = results("predict_folder")
    return f"{data['pixelwise_fast_no_overlay_command_images_per_s'] / data['smp_loop_images_per_s']:.1f}×"
