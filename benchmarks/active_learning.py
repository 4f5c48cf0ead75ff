"""What labelling by uncertainty is worth: on CamVid (at 240x180), start from 20 labelled training images,
add 40 chosen by the model's uncertainty (`pixelwise data suggest`), 40 chosen by uncertainty spread
over distinct scenes (`--spread 16`: near-identical video frames wait their turn) or 40 chosen at random,
fine-tune from the 20-image model for the same number of steps, and compare validation mean IoU, over 3 seeds.

    python benchmarks/active_learning.py [--seeds 3] [--initial 20] [--add 40] [--epochs 30]
    python benchmarks/active_learning.py --eval heldout --arms diverse,uncertainty,random

CamVid's val split is one 7-second clip (101 frames of sequence 0016E5), so its mean IoU rewards the
picks that happen to look like that street. `--eval heldout` scores instead on a middle block of every
train sequence, taken out of the pool.

Runs are counted in epochs, not minutes, so both arms take the same optimizer steps whatever else
the machine is doing.

CamVid is read from ../shared/data/camvid; the half-size copy and the subsets (links) live in
~/.cache/pixelwise/benchmarks, outside the repository. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import torch
from common import CAMVID, machine
from transfer import CACHE, half_size_camvid

from pixelwise.api import train
from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint
from pixelwise.inference.predict import load
from pixelwise.data.duplicates import perceptual_hash
from pixelwise.data.io import read_image, read_mask
from pixelwise.inference.uncertainty import (balanced_order, class_layout, class_uncertainty, diverse_order,
                                             rank_by_uncertainty, spread_out, typical_order)


def subset(full: Path, names: list[str], root: Path, held_out: list[str] | None = None) -> Path:
    """A CamVid-layout folder training on `names` of `full`'s train split (links), validating on full's val
    split, or on the `held_out` train images."""
    if root.exists():
        shutil.rmtree(root)
    for sub in ("train", "trainannot"):
        (root / sub).mkdir(parents=True)
        for name in names:
            (root / sub / name).symlink_to(full / sub / name)
    if held_out is None:
        for sub in ("val", "valannot"):
            (root / sub).symlink_to(full / sub)
    else:
        for sub, source in (("val", "train"), ("valannot", "trainannot")):
            (root / sub).mkdir()
            for name in held_out:
                (root / sub / name).symlink_to(full / source / name)
    (root / "classes.txt").write_text((full / "classes.txt").read_text())
    return root


@torch.no_grad()
def encoder_embeddings(checkpoint: Path, images: list[Path]) -> dict[Path, np.ndarray]:
    """image -> the model's deepest encoder features, averaged over the image and scaled to unit
    length: what the image looks like to the network, beyond the classes it predicts."""
    encoder = model_from_checkpoint(load_checkpoint(checkpoint)).encoder.eval()  # it normalises its input
    out = {}
    for path in images:
        x = torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].float() / 255
        feature = encoder(x)[-1].mean((2, 3))[0].numpy().astype(np.float64)
        out[path] = feature / (np.linalg.norm(feature) + 1e-12)
    return out


def held_out_blocks(names: list[str], share: float) -> list[str]:
    """A contiguous block of frames from the middle of each video sequence (CamVid names are
    SEQUENCE_FRAME.png): an evaluation set spanning every sequence, unlike CamVid's val split, which is
    one 7-second clip (0016E5 frames 07959-08159)."""
    sequences: dict[str, list[str]] = {}
    for name in sorted(names):
        sequences.setdefault(name.split("_")[0], []).append(name)
    held = []
    for frames in sequences.values():
        k = round(len(frames) * share)
        start = (len(frames) - k) // 2
        held += frames[start:start + k]
    return held


def fine_tune(data: Path, out: Path, epochs: int, init_from: Path | None, seed: int) -> float:
    # last-k is what --strategy auto picks for CamVid-like data; pinned so no arm pays for the advisor
    summary = train(data, out=out, epochs=epochs, strategy="last-k", val_every=1000, seed=seed,
                    init_from=str(init_from) if init_from else None, overwrite=True, log=lambda _: None)
    return summary["best_mean_iou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--add", type=int, default=40)
    parser.add_argument("--base-epochs", type=int, default=40, help="epochs on the initial images")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each arm's fine-tuning")
    parser.add_argument("--measure", default="entropy", choices=("entropy", "margin"))
    parser.add_argument("--spread", type=int, default=16, help="perceptual-hash bits between chosen images")
    parser.add_argument("--arms", default="uncertainty,balanced,random",
                        help="comma-separated, of uncertainty, balanced, diverse, diverse_features, typical, spread, "
                        "random")
    parser.add_argument("--eval", default="val", choices=("val", "heldout"),
                        help="score on CamVid's val split, or on a middle block of each train sequence "
                        "(--held-out-share of its frames), left out of the pool")
    parser.add_argument("--held-out-share", type=float, default=0.15)
    parser.add_argument("--reuse-base", action="store_true",
                        help="keep each seed's 20-image model from an earlier run with the same settings")
    parser.add_argument("--out", default=str(CACHE / "active_learning"))
    args = parser.parse_args()
    args.arms = args.arms.split(",")
    print(f"machine: {machine()}", flush=True)
    full = half_size_camvid(CAMVID, CACHE / "camvid_240x180")
    names = sorted(p.name for p in (full / "train").glob("*.png"))
    held_out = None
    out = Path(args.out)
    if args.eval == "heldout":
        held_out = held_out_blocks(names, args.held_out_share)
        names = [n for n in names if n not in set(held_out)]
        out = out.with_name(out.name + "_heldout")
    rows = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(names))
        initial = [names[i] for i in order[: args.initial]]
        pool = [names[i] for i in order[args.initial:]]
        base_dir = out / f"seed{seed}" / "base"
        if args.reuse_base and (base_dir / "best.pt").is_file():  # the same seed, images and epochs as before
            base = load_checkpoint(base_dir / "best.pt")["state"]["best_mean_iou"]
        else:
            base = fine_tune(subset(full, initial, out / f"seed{seed}" / "data_base", held_out), base_dir,
                             args.base_epochs, None, seed)

        predictor = load(base_dir / "best.pt")
        probabilities = {full / "train" / n: predictor.predict_proba(full / "train" / n) for n in pool}
        ranked = rank_by_uncertainty(probabilities.__getitem__, probabilities, args.measure)
        labelled = sum(np.bincount(read_mask(full / "trainannot" / n).ravel(), minlength=256)[:len(probabilities[
            ranked[0][0]])] for n in initial)
        entropy = {p: score["entropy"] for p, score in ranked}
        layouts = {p: class_layout(q) for p, q in probabilities.items()}
        pickers = {  # each arm's 40 picks, computed only for the arms asked for
            "uncertainty": lambda: [p for p, _ in ranked],
            "balanced": lambda: balanced_order({p: class_uncertainty(q) for p, q in probabilities.items()}, labelled),
            "diverse": lambda: diverse_order(entropy, layouts, groups=args.add, seed=seed),
            "diverse_features": lambda: diverse_order(  # grouping by encoder features instead of class layout
                entropy, encoder_embeddings(base_dir / "best.pt", list(probabilities)), groups=args.add, seed=seed),
            "typical": lambda: typical_order(layouts, groups=args.add, seed=seed, labelled=[
                class_layout(predictor.predict_proba(full / "train" / n)) for n in initial]),
            "spread": lambda: [p for p, _ in spread_out(ranked, {p: perceptual_hash(read_image(p)) for p in entropy},
                                                        args.spread)],
            "random": lambda: [full / "train" / pool[i] for i in rng.choice(len(pool), args.add, replace=False)],
        }
        chosen = {arm: [p.name for p in pickers[arm]()[: args.add]] for arm in args.arms}
        probabilities.clear()  # 600 MB at CamVid's size, not needed while the arms train
        row = {"seed": seed, "base": round(base, 4)}
        for arm in args.arms:
            extra = chosen[arm]
            data = subset(full, initial + extra, out / f"seed{seed}" / f"data_{arm}", held_out)
            row[arm] = round(fine_tune(data, out / f"seed{seed}" / arm, args.epochs, base_dir / "best.pt", seed), 4)
        for arm in args.arms:
            if arm != "random" and "random" in row:
                row[f"gain_{arm}"] = round(row[arm] - row["random"], 4)
        rows.append(row)
        print(f"seed {seed}: {args.initial} images {base:.4f}; +{args.add}: "
              + ", ".join(f"{arm} {row[arm]:.4f}" for arm in args.arms), flush=True)
    scored_on = "CamVid val" if held_out is None else (
        f"{len(held_out)} held-out train images (a middle block of {args.held_out_share:.0%} of each sequence), "
        f"pool {len(names) - args.initial}")
    result = {"machine": machine(), "scored_on": scored_on,
              "setting": f"CamVid 240x180, {args.initial} labelled + {args.add}, "
              f"{args.base_epochs} + {args.epochs} epochs, strategy last-k, measure {args.measure}, spread {args.spread}",
              "seeds": rows}
    for arm in args.arms:
        result[f"mean_{arm}"] = round(statistics.mean(r[arm] for r in rows), 4)
        if arm != "random" and "random" in args.arms:
            result[f"mean_gain_{arm}"] = round(statistics.mean(r[f"gain_{arm}"] for r in rows), 4)
            result[f"wins_{arm}"] = sum(r[f"gain_{arm}"] > 0 for r in rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
