"""Memory stays bounded: resident memory (RSS) across 20 epochs of training and across a 10,000-image
predict run must stay flat (under 5% growth), and a pool of 10,000 unlabelled images must not raise
the trainer's memory over a pool of 10 (each run in a fresh process).

    python benchmarks/memory.py [--epochs 40] [--images 10000] [--pool 10000] [--only pool]

Training reports growth over the first 20 epochs (from epoch 2, after the optimizer state exists) and
over the next 20: the allocator and the kernel caches warm up during the first ones.

Training runs the bundled sample (the demo's recipe); prediction runs the predict pipeline over 10,000
links to the sample's 16 tiles, each under its own name, with the demo's checkpoint. RSS is read from
/proc/self/status every 0.2 s by a thread. The pool runs train the sample's tiles with `--unlabelled`
a folder of links to its training tiles (copies of training images are not leakage): 10 links, --pool
links, 10 again, each in a fresh process, and compare the peak RSS of their epochs. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import run_record

from pixelwise.api import train
from pixelwise.demo import sample_root
from pixelwise.inference.pipeline import predict_folder
from pixelwise.inference.predict import load


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """RSS over time, in the background."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.running = True

    def run(self):
        start = time.perf_counter()
        while self.running:
            self.samples.append((time.perf_counter() - start, rss_mb()))
            time.sleep(0.2)

    def stop(self) -> list[tuple[float, float]]:
        self.running = False
        self.join()
        return self.samples


def growth(after_warmup: float, end: float) -> float:
    return round(100 * (end - after_warmup) / after_warmup, 2)


def pool_memory(pool_size: int, epochs: int = 8) -> dict:
    """Peak RSS of the epochs of semi-supervised runs on the sample, each in a fresh process (a second run in
    the same process would inherit the first one's heap): a pool of 10 images, then of `pool_size` (links
    to the training tiles), then of 10 again."""
    peaks = []
    for size in (10, pool_size, 10):
        done = subprocess.run([sys.executable, __file__, "--pool-run", str(size), "--epochs", str(epochs)],
                              capture_output=True, text=True, check=True)
        peaks.append(json.loads(done.stdout.strip().splitlines()[-1])["rss_mb_peak"])
        print(f"pool of {size}: peak RSS {peaks[-1]} MB", flush=True)
    return {"epochs": epochs, "pool_sizes": [10, pool_size, 10], "rss_mb_peak": peaks,
            "growth_percent": growth(max(peaks[0], peaks[2]), peaks[1])}


def pool_run(size: int, epochs: int) -> None:
    """Child of pool_memory: one run with a pool of `size`; prints the peak RSS of epochs 2 and later."""
    sample = sample_root()
    tiles = [sample / "images" / f"{stem}.png" for stem in (sample / "splits" / "train.txt").read_text().split()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pool"
        folder.mkdir()
        for i in range(size):
            (folder / f"img{i:05d}.png").symlink_to(tiles[i % len(tiles)])
        per_epoch = []
        train(sample, out=Path(tmp) / "run", epochs=epochs, unlabelled=[str(folder)],
              log=lambda line: per_epoch.append(rss_mb()) if line.startswith("epoch") else None)
    print(json.dumps({"rss_mb_peak": round(max(per_epoch[1:]), 1)}))  # from epoch 2, as above


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--pool", type=int, default=10000)
    parser.add_argument("--only", choices=("pool",), help="run the unlabelled-pool part alone")
    parser.add_argument("--pool-run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pool_run:
        return pool_run(args.pool_run, args.epochs)
    result = run_record()
    print(f"machine: {result['machine']}", flush=True)
    if args.only in (None, "pool"):
        result["unlabelled_pool"] = pool_memory(args.pool, epochs=8)
        print(f"unlabelled pool: {result['unlabelled_pool']}", flush=True)
        if args.only:
            print(json.dumps(result))
            return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_epoch = []
        train(sample_root(), out=tmp / "run", epochs=args.epochs, val_every=1,
              log=lambda line: per_epoch.append(rss_mb()) if line.startswith("epoch") else None)
        # the first epoch allocates the optimizer state: growth counts from epoch 2
        result["training"] = {"epochs": len(per_epoch), "rss_mb_per_epoch": [round(mb) for mb in per_epoch],
                              # peaks of 5-epoch windows: a single epoch may land in a dip right after a collection
                              "growth_percent_epochs_2_to_20": growth(max(per_epoch[1:6]), max(per_epoch[15:20])),
                              "growth_percent_epochs_20_to_40": growth(max(per_epoch[15:20]), max(per_epoch[35:40])),
                              "rss_mb_max": round(max(per_epoch), 1)}
        print(f"training: {result['training']}", flush=True)

        tiles = sorted((sample_root() / "images").glob("*.png"))
        folder = tmp / "many"
        folder.mkdir()
        images = []
        for i in range(args.images):
            link = folder / f"img{i:05d}.png"
            link.symlink_to(tiles[i % len(tiles)])
            images.append(link)
        predictor = load(tmp / "run" / "best.pt")
        sampler = Sampler()
        sampler.start()
        summary = predict_folder(predictor, images, tmp / "predictions", overlay=True, log=lambda _: None)
        samples = sampler.stop()
        total = samples[-1][0]
        warm = [mb for t, mb in samples if 0.1 * total <= t <= 0.15 * total]  # after the first 10%
        tail = [mb for t, mb in samples if t >= 0.9 * total]
        result["predict"] = {"images": summary.written, "images_per_s": round(summary.images_per_s, 1),
                             "rss_mb_at_10pct": round(max(warm), 1), "rss_mb_last_10pct": round(max(tail), 1),
                             "rss_mb_max": round(max(mb for _, mb in samples), 1),
                             "growth_percent": growth(max(warm), max(tail))}
        print(f"predict: {result['predict']}", flush=True)
    result["target_growth_percent"] = 5
    print(json.dumps(result))


if __name__ == "__main__":
    main()
