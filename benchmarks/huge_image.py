"""Tiled prediction of one huge image: time and peak memory. Target: an 8000x6000 image under 1.5 GB
of peak RSS (the process's ru_maxrss, imports and the image itself included).

    python benchmarks/huge_image.py [--checkpoint runs/camvid/best.pt] [--photo street.png]
    python benchmarks/huge_image.py --size 2000x1500 --compare   # also whole-image, for agreement
    python benchmarks/huge_image.py --cli --checkpoint runs/camvid/best.pt   # as a user: pixelwise predict
    python benchmarks/huge_image.py --checkpoint runs/camvid/best.pt --runs openvino:fast openvino:accurate \
        torch:accurate                     # several engines and profiles, each in a fresh process, one file

Without a checkpoint the model is an untrained FCN-8s / EfficientNet-Lite0 with 11 classes (CamVid's
count). The image is synthetic (smooth gradients, discs, stripes and noise), or --photo repeated to
the size. With --compare, a fresh subprocess predicts the whole image in one pass (it must fit in
memory) and the share of equal labels is reported. With --cli the figure is a user's: the image is saved
as a JPEG and `pixelwise predict --tile` runs on it twice in fresh processes, beside a fresh copy of the
checkpoint, so the first run exports the ONNX file and the second reuses it; the peak RSS of each is that
of its whole process tree (an export child included). The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# Only inference modules: the benchmark's own RSS is the figure, and common.py loads the trainer.
from cpu import cpu_model, run_record

from pixelwise.data.io import read_image
from pixelwise.inference.selection import create_engine
from pixelwise.runtime import TorchEngine
from pixelwise.inference.tiling import class_argmax, image_tiling, predict_tiled, tile_starts, to_batch


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_engine(args):
    if args.checkpoint:
        return create_engine(args.engine, args.checkpoint, device=args.device, precision=args.precision,
                             profile=args.profile, log=lambda message: None)
    from pixelwise.models.registry import create_model  # the zoo's imports count only where a model is built

    torch.manual_seed(0)
    model = create_model("fcn8s", backbone="efficientnet_lite0", num_classes=11, pretrained=False)
    for module in model.modules():  # FCN score layers start at zero: give the classes different logits
        if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
            torch.nn.init.normal_(module.weight, std=0.1)
    return TorchEngine(model, device=args.device, precision=args.precision)


def make_image(height: int, width: int, photo: str | None) -> np.ndarray:
    """HxWx3 uint8, filled a block of rows at a time so no float copy of the whole image exists."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    if photo:
        tile = read_image(photo)
        reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
        for r in range(0, height, tile.shape[0]):
            rows = min(tile.shape[0], height - r)
            image[r:r + rows] = np.tile(tile[:rows], reps[1:])[:, :width]
        return image
    rng = np.random.default_rng(0)
    xx = np.arange(width, dtype=np.float32)[None, :]
    centres = rng.uniform(0, 1, (40, 2)) * (height, width)
    for r in range(0, height, 256):
        yy = np.arange(r, min(r + 256, height), dtype=np.float32)[:, None]
        block = np.empty((len(yy), width, 3), dtype=np.float32)
        block[..., 0] = 255 * xx / width
        block[..., 1] = 255 * yy / height
        block[..., 2] = 127 + 100 * np.sin(xx / 97 + yy / 53)
        for cy, cx in centres:  # discs with sharp edges, some crossing tile borders
            block[(yy - cy) ** 2 + (xx - cx) ** 2 < 300 ** 2] = rng.uniform(0, 255, 3)
        block += rng.normal(0, 8, block.shape).astype(np.float32)
        image[r:r + len(yy)] = block.clip(0, 255).astype(np.uint8)
    return image


def whole_image(args) -> None:
    """Child process of --compare: predict the whole image in one pass, save the labels."""
    image = make_image(*args.hw, args.photo)
    with torch.no_grad():
        labels = class_argmax(make_engine(args).logits(to_batch([image]))[0])
    np.save(args.whole_out, labels)


PEAK_OF_TREE = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); sys.exit(done.returncode)")


def cli_runs(args) -> dict:
    """`pixelwise predict --tile` on a saved JPEG, first run (exports) and warm run: seconds and peak RSS."""
    import shutil

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Image.fromarray(make_image(*args.hw, args.photo)).save(tmp / "big.jpg", quality=90)
        shutil.copy(args.checkpoint, tmp / "best.pt")  # no .onnx beside it yet
        runs = {}
        for name in ("first", "warm"):
            command = [sys.executable, "-m", "pixelwise", "predict", "--checkpoint", str(tmp / "best.pt"), "--tile",
                       str(args.tile), "--overlap", str(args.overlap), "--engine", args.engine, "--profile",
                       args.profile, str(tmp / "big.jpg"), "--out", str(tmp / "out")]
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PEAK_OF_TREE, *command], capture_output=True, text=True,
                                  check=True)
            runs[name] = {"seconds": round(time.perf_counter() - start, 1),
                          "peak_rss_mb": int(done.stdout.strip().splitlines()[-1])}
            print(f"{name} run: {runs[name]}", flush=True)
    return runs


def several_runs(args) -> None:
    """--runs: this script once per ENGINE:PROFILE in a fresh process, its last line kept; one JSON of all."""
    runs = []
    for pair in args.runs:
        engine, _, profile = pair.partition(":")
        argv = [*passed_on(sys.argv[1:]), "--engine", engine, "--profile", profile or "accurate"]
        lines = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                               check=True).stdout.strip().splitlines()
        print(lines[-2], flush=True)
        run = json.loads(lines[-1])
        runs.append({k: v for k, v in run.items() if k not in ("date", "commit", "torch", "command", "cpu_flags")})
    print(json.dumps({"benchmark": "huge_image", **run_record(), "runs": runs}))


def passed_on(argv: list[str]) -> list[str]:
    """argv less --runs, --engine and --profile with their values: each run sets its own."""
    kept, dropping = [], False
    for arg in argv:
        if arg.startswith("--"):
            dropping = arg in ("--runs", "--engine", "--profile")
        if not dropping:
            kept.append(arg)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a .pt from pixelwise train (default: an untrained fcn8s)")
    parser.add_argument("--photo", help="a real photo, repeated to --size (default: synthetic)")
    parser.add_argument("--size", default="8000x6000", help="WIDTHxHEIGHT")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    parser.add_argument("--engine", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"),
                        help="with --checkpoint (default: auto, as pixelwise predict)")
    parser.add_argument("--profile", default="accurate", choices=("accurate", "fast"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--compare", action="store_true", help="also predict the whole image (subprocess)")
    parser.add_argument("--whole-out", help=argparse.SUPPRESS)
    parser.add_argument("--cli", action="store_true", help="time `pixelwise predict --tile` as a user runs it")
    parser.add_argument("--runs", nargs="+", metavar="ENGINE:PROFILE",
                        help="run each in a fresh process (peak RSS is per process) and print one JSON of all")
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    args.hw = (height, width)
    if args.whole_out:
        return whole_image(args)
    if args.runs:
        return several_runs(args)
    if args.cli:
        if not args.checkpoint:
            raise SystemExit("--cli needs --checkpoint")
        print(json.dumps({"benchmark": "huge_image_cli", **run_record(), "cpu": cpu_model(), "size": args.size, "tile": args.tile,
                          "engine": args.engine, "profile": args.profile, "target_peak_rss_mb": 1500,
                          **cli_runs(args)}))
        return

    engine = make_engine(args)
    image = make_image(height, width, args.photo)
    # the image tiles predict_tiled cuts: --tile is what the network sees, after the inference scale
    image_tile, image_overlap = image_tiling(args.tile, args.overlap, engine.scale)
    engine.logits(to_batch([image[:image_tile, :image_tile]]))  # first call picks kernels; not timed
    before = max_rss_mb()
    start = time.perf_counter()
    labels = predict_tiled(engine, image, args.tile, args.overlap, batch=args.batch)
    seconds = time.perf_counter() - start
    tiles = len(tile_starts(height, image_tile, image_overlap)) * len(tile_starts(width, image_tile, image_overlap))
    result = {"benchmark": "huge_image", **run_record(), "cpu": cpu_model(), "threads": torch.get_num_threads(),
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "model": args.checkpoint or "untrained fcn8s/efficientnet_lite0, 11 classes",
              "engine": getattr(engine, "name", "torch"), "profile": args.profile if args.checkpoint else None,
              "infer_scale": engine.scale,
              "image": args.photo or "synthetic", "size": f"{width}x{height}", "tile": args.tile,
              "overlap": args.overlap, "image_tile": image_tile, "batch": args.batch, "tiles": tiles,
              "seconds": round(seconds, 2),
              "megapixels_per_s": round(width * height / 1e6 / seconds, 3),
              "rss_before_predict_mb": round(before), "max_rss_mb": round(max_rss_mb()),
              "classes_predicted": int(len(np.unique(labels)))}
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "whole.npy"
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--whole-out", str(out)], check=True)
            result["agreement_with_whole_image"] = round(float((np.load(out) == labels).mean()), 5)
    print(f"{result['size']} in {result['tiles']} tiles of {args.tile} (overlap {args.overlap}): "
          f"{seconds:.1f} s, peak RSS {result['max_rss_mb']} MB on {result['cpu']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
