"""End to end over a folder: `pixelwise predict` against a plain smp loop and against its own model speed.

    python benchmarks/predict_folder.py --checkpoint runs/camvid/best.pt [--images 500] [--accurate]

The folder holds --images CamVid-sized photos (CamVid train and val, repeated to the count, linked
into a temporary folder; CamVid is never copied). Three figures, images/s, on this machine:

- `pixelwise predict --profile fast` as a user runs it, with overlays (the default) and with
  --no-overlay, twice over: the pipeline's own rate as the command prints it (from the first image
  read to the last file written) and the whole command in a fresh process (start-up and model load
  included);
- its pure-model throughput: the same engine on already decoded images, nothing else, at its
  best: one call at a time over every core (latency mode), or one call a core side by side (the
  streams predict uses); the pipeline is measured against the better of the two (target >= 85%);
- the plain loop a user would write with segmentation_models_pytorch's Unet/MobileNetV2 at its best
  CPU setting (channels_last + bf16): decode, model, argmax, PNG write, one image at a time
  (target: pixelwise fast >= 2x its images/s).

--accurate also times `pixelwise predict` at the default profile. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common import CAMVID
from cpu import cpu_model, run_record

from pixelwise.data.io import IMAGE_SUFFIXES, read_image
from pixelwise.inference.selection import create_engine
from pixelwise.runtime import physical_cores
from pixelwise.inference.tiling import to_batch


def link_images(folder: Path, count: int) -> list[Path]:
    """`count` CamVid photos linked into `folder`, repeating train+val with new names as needed."""
    sources = sorted(p for split in ("train", "val") for p in (CAMVID / split).iterdir()
                     if p.suffix.lower() in IMAGE_SUFFIXES)
    links = []
    for i in range(count):
        link = folder / f"{i:04d}_{sources[i % len(sources)].name}"
        link.symlink_to(sources[i % len(sources)].resolve())
        links.append(link)
    return links


def time_command(args: list[str]) -> tuple[float, float]:
    """-> (seconds for the whole command, the images/s its pipeline printed)"""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pixelwise", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"pixelwise {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    seconds = time.perf_counter() - start
    return seconds, float(re.search(r"\(([\d.]+) images/s\)", done.stdout).group(1))


@torch.inference_mode()
def pure_model(checkpoint: Path, images: list[Path], streams: int) -> tuple[str, float]:
    """The fast profile's engine alone on decoded images, one image a call, `streams` calls at once
    -> (engine name, images/s)."""
    engine = create_engine("auto", checkpoint, profile="fast", log=lambda message: None, streams=streams)
    batches = [to_batch([read_image(p)]) for p in images]
    if engine.streams == 1:  # from the main thread, as predict calls it (OpenVINO runs it there at full speed)
        engine.logits(batches[0])
        start = time.perf_counter()
        for batch in batches:
            engine.logits(batch)
        return engine.name, len(batches) / (time.perf_counter() - start)
    with ThreadPoolExecutor(engine.streams) as pool:
        list(pool.map(engine.logits, batches[:2 * engine.streams]))  # kernels are picked on the first calls
        start = time.perf_counter()
        list(pool.map(engine.logits, batches))
    return engine.name, len(batches) / (time.perf_counter() - start)


class SmpUnet(torch.nn.Module):
    """smp Unet/MobileNetV2 with ImageNet normalisation, padded to a multiple of 32 as smp requires."""

    def __init__(self, classes: int):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.Unet("mobilenet_v2", encoder_weights=None, classes=classes)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        h, w = x.shape[-2:]
        return self.net(F.pad((x - self.mean) / self.std, (0, -w % 32, 0, -h % 32)))[..., :h, :w]


@torch.inference_mode()
def smp_loop(images: list[Path], out: Path) -> float:
    """The plain loop: decode, model (channels_last + bf16), argmax, PNG write. -> images/s."""
    model = SmpUnet(11).eval().to(memory_format=torch.channels_last)
    start = None
    for i, path in enumerate(images):
        if i == 1:  # the first image picks the kernels
            start = time.perf_counter()
        x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        Image.fromarray(logits[0].argmax(0).to(torch.uint8).numpy()).save(out / f"{path.stem}.png")
    return (len(images) - 1) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a CamVid checkpoint from pixelwise train")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--accurate", action="store_true", help="also time the default (accurate) profile")
    parser.add_argument("--json", default="benchmarks/results/predict_folder.json")
    args = parser.parse_args()
    checkpoint = Path(args.checkpoint).resolve()
    result = {"benchmark": "predict_folder", **run_record(), "cpu": cpu_model(), "threads": torch.get_num_threads(),
              "checkpoint": str(checkpoint), "images": args.images}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        images = link_images(tmp / "in", args.images)
        create_engine("auto", checkpoint, profile="fast")  # exports the .onnx beside it first, if auto needs one
        runs = {"fast": ["--profile", "fast"], "fast_no_overlay": ["--profile", "fast", "--no-overlay"]}
        if args.accurate:
            runs["accurate"] = []
        for name, extra in runs.items():
            seconds, pipeline = time_command(["predict", "--checkpoint", str(checkpoint), str(tmp / "in"),
                                              "--out", str(tmp / name), *extra])
            result[f"pixelwise_{name}_images_per_s"] = pipeline
            result[f"pixelwise_{name}_command_images_per_s"] = round(args.images / seconds, 2)
            result[f"pixelwise_{name}_command_seconds"] = round(seconds, 1)
            print(f"pixelwise predict {' '.join(extra) or '(default)'}: pipeline {pipeline:.2f} images/s; whole "
                  f"command {seconds:.1f} s, {args.images / seconds:.2f} images/s", flush=True)
        for mode, streams in (("latency", 1), ("streams", physical_cores())):
            engine, speed = pure_model(checkpoint, images, streams)
            result[f"pure_model_{mode}_images_per_s"] = round(speed, 2)
            print(f"pure model ({engine}, fast profile, {streams} call(s) at once): {speed:.2f} images/s", flush=True)
        model_speed = max(result["pure_model_latency_images_per_s"], result["pure_model_streams_images_per_s"])
        result.update(fast_engine=engine, pure_model_images_per_s=model_speed)
        (tmp / "smp").mkdir()
        smp_speed = smp_loop(images, tmp / "smp")
        result["smp_loop_images_per_s"] = round(smp_speed, 2)
        print(f"plain smp Unet/MobileNetV2 bf16 loop: {smp_speed:.2f} images/s", flush=True)
    # The smp loop is timed from its second image, as the pipelines are: start-up is reported apart.
    result["targets"] = {f"{name}_{what}": round(result[f"pixelwise_{name}_images_per_s"] / reference, 3)
                         for name in runs for what, reference in (("vs_smp_loop", smp_speed),  # target >= 2
                                                                  ("share_of_pure_model", model_speed))}  # >= 0.85
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
