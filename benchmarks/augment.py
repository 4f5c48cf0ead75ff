"""Top-down augmentation on images with no "up": upright (horizontal flips) against top-down (flips both
ways and 90-degree turns), on the bundled nuclei sample, with the demo's recipe and several seeds.

    python benchmarks/augment.py --seeds 0 1 2

Each run is `pixelwise demo`'s training (60 epochs of the default model) with --augment fixed, scored
on the sample's test split. Also reports what `--augment auto` picks for nuclei and for CamVid, with
the measured vertical asymmetry of their labels. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import CAMVID, run_record
from pixelwise.api import evaluate
from pixelwise.config import TrainConfig
from pixelwise.data.formats import load_spec
from pixelwise.data.io import read_mask
from pixelwise.data.transforms import vertical_asymmetry
from pixelwise.demo import sample_root
from pixelwise.training import engine


def asymmetry(root: Path) -> float:
    spec = load_spec(root)
    return round(vertical_asymmetry((read_mask(m) for _, m in spec.splits["train"]), spec.num_classes), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60, help="the demo's (default: 60)")
    parser.add_argument("--out", default="runs/bench_augment")
    args = parser.parse_args()
    data = sample_root()
    runs = []
    for augment in ("upright", "top-down"):
        for seed in args.seeds:
            out = Path(args.out) / f"{augment}_seed{seed}"
            summary = engine.fit(TrainConfig(data=str(data), out=str(out), epochs=args.epochs, seed=seed,
                                             augment=augment), overwrite=True)
            test = evaluate(out / "best.pt", data, split="test")
            runs.append({"augment": augment, "seed": seed, "test_mean_iou": round(test["mean_iou"], 4),
                         "best_val_mean_iou": round(summary["best_mean_iou"], 4), "minutes": round(summary["minutes"], 2)})
            print(json.dumps(runs[-1]), flush=True)
    mean = {a: round(statistics.mean(r["test_mean_iou"] for r in runs if r["augment"] == a), 4)
            for a in ("upright", "top-down")}
    print(json.dumps({"benchmark": "augment", **run_record(), "dataset": "nuclei sample (test split)",
                      "runs": runs, "test_mean_iou": mean,
                      "gain_points": round(100 * (mean["top-down"] - mean["upright"]), 2),
                      "vertical_asymmetry": {"nuclei": asymmetry(data),
                                             **({"camvid": asymmetry(CAMVID)} if CAMVID.is_dir() else {})}}))


if __name__ == "__main__":
    main()
