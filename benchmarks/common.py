"""Shared pieces of the benchmarks: where CamVid lives, one training run, CPU latency."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from cpu import machine, run_record  # noqa: F401  (benchmarks import them from here)

from pixelwise.api import evaluate
from pixelwise.config import TrainConfig
from pixelwise.models.summary import count_parameters
from pixelwise.training import engine
from pixelwise.runtime import inference_setup, predict_logits
from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


@torch.no_grad()
def latency_ms(model: torch.nn.Module, size=(360, 480), runs: int = 10) -> float:
    """Median wall time of one forward pass on one image, with the precision training used."""
    model, device, dtype = inference_setup(model, "cpu")
    x = torch.rand(1, 3, *size)
    times = []
    for i in range(runs + 2):
        t = time.perf_counter()
        predict_logits(model, x, device, dtype)
        if i >= 2:  # the first calls pick kernels
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def train_and_score(cfg: TrainConfig) -> dict:
    """Train with `cfg`, then score best.pt on val. -> mIoU, epochs, parameters, latency."""
    summary = engine.fit(cfg, overwrite=True)  # benchmark runs replace their own earlier output
    best = Path(cfg.out) / "best.pt"
    metrics = evaluate(best, cfg.data, split="val")
    model = model_from_checkpoint(load_checkpoint(best))
    return {"val_mean_iou": round(metrics["mean_iou"], 4), "epochs": summary["epochs"],
            "train_minutes": round(summary["minutes"], 2), "params_m": round(count_parameters(model) / 1e6, 3),
            "latency_ms_360x480": round(latency_ms(model), 1),
            "per_class_iou": {k: None if v is None else round(v, 3) for k, v in metrics["per_class_iou"].items()}}


# ---------------------------------------------------------------- CamVid views for screening

def sequence_of(path: Path) -> str:
    return path.name.split("_")[0]  # CamVid names frames <sequence>_<frame>


def place(source: Path, target: Path, size: tuple[int, int] | None, resample) -> None:
    """`source` at `target`: a link, or with `size` (W, H) a copy resized with `resample`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if size is None:
        target.unlink(missing_ok=True)
        target.symlink_to(source.resolve())
    else:
        Image.open(source).resize(size, resample).save(target)


def screening_crop(size: tuple[int, int] | None) -> dict:
    """The recipe's crop is for 480x360 frames: on copies downscaled to `size` (W, H), keep its share."""
    if size is None:
        return {}
    crop = TrainConfig(data="").crop_size
    return {"crop_size": (size[1] * crop[0] // 360, size[0] * crop[1] // 480)}


def parse_overrides(pairs: list[str]) -> dict:
    """--set KEY=VALUE ... -> TrainConfig fields, each value read as JSON where it parses, else as text."""
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides
