"""The default profile against the smp Unet/MobileNetV2 peer at its best CPU setting, interleaved:
the two take turns in rounds, in one process, so a slow spell of the machine slows both alike.

    python benchmarks/accurate_vs_peer.py --checkpoint runs/camvid/best.pt [more.pt ...] [--rounds 8] [--calls 10]

pixelwise runs what `pixelwise predict` runs by default (`--engine auto --profile accurate`); the peer
runs bf16 + channels_last in PyTorch and fp32 in ONNX Runtime (its two best settings in speed.py).
One 360x480 image, batch 1. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from common import machine, run_record
from speed import BF16_SETTING, peer_engine

from pixelwise.checkpoint import load_checkpoint, model_config
from pixelwise.inference.selection import create_engine

PEER = "smp Unet mobilenet_v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, nargs="+", help="one or more, timed in the same rounds")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10, help="timed calls of each subject a round")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/pixelwise/benchmarks/speed").expanduser())
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    subjects = {}
    for checkpoint in args.checkpoint:
        engine = create_engine("auto", checkpoint, profile="accurate", log=lambda _: None)
        model = model_config(load_checkpoint(checkpoint)).model
        flip = " + flip" if getattr(engine, "flip", False) else ""
        subjects[f"pixelwise accurate {model} x{engine.scale:g}{flip} ({engine.name})"] = engine
    mine = list(subjects)
    subjects |= {f"{PEER} {BF16_SETTING}": peer_engine(PEER, BF16_SETTING, args.cache),
                f"{PEER} onnxruntime-fp32": peer_engine(PEER, "onnxruntime-fp32", args.cache)}
    image = torch.rand(1, 3, 360, 480, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in subjects}
    with torch.inference_mode():
        for engine in subjects.values():  # warm-up: kernels picked, shape-specific graphs compiled
            for _ in range(3):
                engine.logits(image)
        for _ in range(args.rounds):
            for name, engine in subjects.items():
                for _ in range(args.calls):
                    start = time.perf_counter()
                    engine.logits(image)
                    times[name].append((time.perf_counter() - start) * 1000)
    medians = {name: round(statistics.median(t), 2) for name, t in times.items()}
    best_peer = min((n for n in medians if n not in mine), key=medians.get)
    for name, ms in medians.items():
        print(f"{name:45s} {ms:8.2f} ms")
    print(json.dumps({"benchmark": "accurate_vs_peer", **run_record(), "size": "360x480, batch 1",
                      "calls": args.rounds * args.calls, "median_ms": medians, "best_peer": best_peer,
                      "ratio_to_best_peer": round(medians[mine[0]] / medians[best_peer], 3),
                      "ratios_to_best_peer": {n: round(medians[n] / medians[best_peer], 3) for n in mine}}))


if __name__ == "__main__":
    main()
