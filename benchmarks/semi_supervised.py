"""Semi-supervised benchmark: a small labelled part of CamVid, the rest as an unlabelled pool.

    python benchmarks/semi_supervised.py --fractions 0.125 0.25 --seeds 0 1 --minutes 20
    python benchmarks/semi_supervised.py --fractions 0.125 --seeds 0 --minutes 5 --size 240x180   # screening
    python benchmarks/semi_supervised.py --holdout-sequence 0006R0 0001TP --fractions 0.125 --minutes 20
    python benchmarks/semi_supervised.py --nuclei --minutes 2

Each setting builds a view of the data with a fraction of the training frames labelled, picked with a fixed
seed in the same share from every drive, and the other training frames as a folder of images alone: their
masks are never linked into the view, so no run can read them. Two arms train on it with the same wall-clock
budget, the same model and recipe: `supervised` (the labelled part only) and `semi` (`--unlabelled` the
pool). Without --holdout-sequence they are scored on CamVid val; with it, the named drive is held out
whole, as in benchmarks/camvid.py: train and pool come from the other drives' train and val frames (10% kept
by name hash to pick the best epoch) and the score is the held-out drive's. --nuclei runs the bundled
sample: 4 labelled tiles, the other training tiles unlabelled, scored on its test split.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from PIL import Image

from common import CAMVID, parse_overrides, place, run_record, screening_crop, sequence_of

from pixelwise.api import evaluate
from pixelwise.config import TrainConfig
from pixelwise.data.formats import hash_split, load_spec
from pixelwise.training import engine


def pick_labelled(images: list[Path], fraction: float, seed: int) -> set[Path]:
    """round(fraction x N) images, drawn with `seed` in proportion from every sequence (at least one each)."""
    by_sequence: dict[str, list[Path]] = {}
    for image in sorted(images):
        by_sequence.setdefault(sequence_of(image), []).append(image)
    wanted = max(1, round(fraction * len(images)))
    picked: set[Path] = set()
    rng = random.Random(seed)
    for sequence, frames in sorted(by_sequence.items()):
        share = max(1, round(wanted * len(frames) / len(images)))
        picked.update(rng.sample(frames, min(share, len(frames))))
    return picked


def build_view(data: str, root: Path, fraction: float, seed: int, size: tuple[int, int] | None,
               holdout: str | None) -> Path:
    """A CamVid-layout dataset at `root`: train = the labelled part, val (and test) for scoring, and
    root/pool holding the unlabelled images alone. -> root"""
    spec = load_spec(data)
    train, val = spec.splits.get("train", []), spec.splits.get("val", [])
    if holdout:
        frames = train + val
        if not any(sequence_of(image) == holdout for image, _ in frames):
            raise SystemExit(f"no frame of sequence {holdout} in {data}")
        test = [pair for pair in frames if sequence_of(pair[0]) == holdout]
        rest = [pair for pair in frames if sequence_of(pair[0]) != holdout]
        val = [pair for pair in rest if hash_split(pair[0].stem) == "val"]
        train = [pair for pair in rest if hash_split(pair[0].stem) == "train"]
    else:
        test = spec.splits.get("test", [])
    labelled = pick_labelled([image for image, _ in train], fraction, seed)
    if (root / "done").is_file():
        return root
    for split, pairs in (("train", [p for p in train if p[0] in labelled]), ("val", val), ("test", test)):
        for image, mask in pairs:
            place(image, root / split / image.name, size, Image.BILINEAR)
            place(mask, root / f"{split}annot" / mask.name, size, Image.NEAREST)
    for image, _ in train:  # the pool: images only, never a mask
        if image not in labelled:
            place(image, root / "pool" / image.name, size, Image.BILINEAR)
    if (Path(data) / "classes.txt").is_file():
        (root / "classes.txt").write_text((Path(data) / "classes.txt").read_text())
    (root / "done").write_text("")
    return root


def run_arm(view: Path, out: Path, arm: str, minutes: float, seed: int, overrides: dict, split: str) -> dict:
    cfg = TrainConfig(data=str(view), out=str(out), time_budget=minutes, seed=seed)
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **overrides,
                                 "unlabelled": [str(view / "pool")] if arm != "supervised" else [],
                                 **({"semi_method": "self-training"} if arm == "self-training" else {})})
    summary = engine.fit(cfg, overwrite=True)
    best = Path(cfg.out) / "best.pt"
    scores = {name: evaluate(best, view, split=name) for name in ("val", split) if name}
    history = json.loads((Path(cfg.out) / "history.json").read_text())
    result = {"arm": arm, "seed": seed, "epochs": summary["epochs"], "train_minutes": round(summary["minutes"], 2),
              "val_mean_iou": round(scores["val"]["mean_iou"], 4),
              "confident_share_last": history[-1].get("confident_share"),
              "train_images_per_s": round(statistics.median(e["images_per_s"] for e in history), 2)}
    if split != "val":
        result |= {f"{split}_mean_iou": round(scores[split]["mean_iou"], 4),
                   f"{split}_per_class_iou": {k: None if v is None else round(v, 4)
                                              for k, v in scores[split]["per_class_iou"].items()}}
    else:
        result["val_per_class_iou"] = {k: None if v is None else round(v, 4)
                                       for k, v in scores["val"]["per_class_iou"].items()}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(CAMVID))
    parser.add_argument("--nuclei", action="store_true", help="the bundled sample: 4 labelled tiles")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--size", help="WxH copies for screening, e.g. 240x180")
    parser.add_argument("--holdout-sequence", nargs="+", default=[None])
    parser.add_argument("--arms", nargs="+", default=["supervised", "semi"],
                        choices=("supervised", "semi", "self-training"),
                        help="supervised first: the others' gains are against it; semi is --semi consistency")
    parser.add_argument("--out", default="runs/semi")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="TrainConfig fields to change")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    overrides = {**screening_crop(size), **parse_overrides(args.set)}
    if args.nuclei:
        from pixelwise.demo import sample_root
        args.data, args.fractions, args.holdout_sequence = str(sample_root()), [4 / 10], [None]
    results = []
    for holdout in args.holdout_sequence:
        for fraction in args.fractions:
            for seed in args.seeds:
                name = f"{'nuclei' if args.nuclei else 'camvid'}_{holdout or 'val'}_{fraction:g}_seed{seed}" + \
                       (f"_{args.size}" if size else "")
                view = build_view(args.data, Path(args.out) / "data" / name, fraction, seed, size, holdout)
                split = "test" if (holdout or args.nuclei) else "val"
                arms = {arm: run_arm(view, Path(args.out) / f"{name}_{arm}", arm, args.minutes, seed, overrides,
                                     split) for arm in args.arms}
                key = f"{split}_mean_iou"
                results.append({"holdout": holdout, "fraction": fraction, "seed": seed,
                                "labelled": len(list((view / "train").iterdir())),
                                "pool": len(list((view / "pool").iterdir())), "arms": arms,
                                **{f"gain_points_{arm}": round(100 * (arms[arm][key] - arms["supervised"][key]), 2)
                                   for arm in arms if arm != "supervised"},
                                **{f"val_gain_points_{arm}": round(100 * (arms[arm]["val_mean_iou"]
                                                                         - arms["supervised"]["val_mean_iou"]), 2)
                                   for arm in arms if arm != "supervised"}})
                print(json.dumps(results[-1]), flush=True)
    summary = {}
    for holdout in args.holdout_sequence:
        for fraction in args.fractions:
            scored = holdout or ("test" if args.nuclei else "val")  # what gain_points was measured on
            for arm in args.arms[1:]:
                gains = [r[f"gain_points_{arm}"] for r in results
                         if r["holdout"] == holdout and r["fraction"] == fraction]
                summary[f"{arm} {scored}@{fraction:g}"] = {"mean_gain_points": round(statistics.mean(gains), 2),
                                                            "every_seed_positive": all(g > 0 for g in gains)}
    print(json.dumps({"benchmark": "semi_supervised", **run_record(), "minutes": args.minutes, "size": args.size,
                      "overrides": overrides, "results": results, "summary": summary}))


if __name__ == "__main__":
    main()
