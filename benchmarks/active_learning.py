"""What labelling by uncertainty is worth: on CamVid (at 240x180), start from 20 labelled training images,
add 40 chosen by a rule over the 20-image model's predictions (`pixelwise data suggest --measure`, or a
rule tried here only) or 40 chosen at random, fine-tune from the 20-image model for the same number of
steps, and compare validation mean IoU, over 3 seeds.

    python benchmarks/active_learning.py [--arms uncertainty,diverse,random,random2,random3] [--seeds 3]
    python benchmarks/active_learning.py --arms diverse,random --rounds 4    # 4 x 10 picks, retraining between
    python benchmarks/active_learning.py --arms diverse,diverse@4,random     # the same rule both ways, one run
    python benchmarks/active_learning.py --eval heldout --arms diverse,random

Rules (--arms): uncertainty (mean entropy), spread (entropy, near-identical frames waiting), balanced,
diverse, typical (see pixelwise.inference.uncertainty), diverse_features (diverse on encoder features),
disagreement (mutual information of a committee of 3 models trained on the 20 images from other seeds)
and stratified (picks per kind of scene in proportion to its size, the most uncertain of each kind).
random2, random3, ... are further random draws: one draw swings by points, so with several the gains
are taken against their mean. RULE@N picks in N rounds (overriding --rounds for that arm); its results
are named RULE_Nrounds.

CamVid's val split is one 7-second clip (101 frames of sequence 0016E5), so its mean IoU rewards the
picks that happen to look like that street. `--eval heldout` scores instead on a middle block of every
train sequence, taken out of the pool.

Runs are counted in epochs, not minutes, so every arm takes the same optimizer steps whatever else
the machine is doing, and a rerun of the same code gives the same figures.

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
from common import CAMVID, machine, run_record
from transfer import CACHE, half_size_camvid

from pixelwise.api import train
from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint
from pixelwise.inference.predict import load
from pixelwise.data.duplicates import perceptual_hash
from pixelwise.data.io import read_image, read_mask
from pixelwise.inference.uncertainty import (balanced_order, class_layout, class_uncertainty, diverse_order, kmeans,
                                             pixel_entropy, rank_by_uncertainty, spread_out, typical_order)


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


def pick(arm: str, checkpoint: Path, pool: list[Path], labelled: list[Path], count: int, seed: int,
         args) -> list[Path]:
    """The images `arm` labels next: the first `count` of its order over `pool`, from the probabilities
    of `checkpoint`'s model. `labelled`: the images that already have masks."""
    predictor = load(checkpoint)
    probabilities = {p: predictor.predict_proba(p) for p in pool}
    ranked = rank_by_uncertainty(probabilities.__getitem__, probabilities, args.measure)
    first = next(iter(probabilities.values()))
    labelled_pixels = sum(np.bincount(read_mask(p.parent.with_name(p.parent.name + "annot") / p.name).ravel(),
                                      minlength=256)[:len(first)] for p in labelled)
    entropy = {p: score["entropy"] for p, score in ranked}
    layouts = {p: class_layout(q) for p, q in probabilities.items()}
    pickers = {
        "uncertainty": lambda: [p for p, _ in ranked],
        "disagreement": lambda: committee_order(checkpoint, probabilities, args.committee, seed, args.reuse_base),
        "stratified": lambda: stratified_order(ranked, encoder_embeddings(checkpoint, pool), count, args.strata,
                                               {p: perceptual_hash(read_image(p)) for p in pool}, args.spread, seed),
        "balanced": lambda: balanced_order({p: class_uncertainty(q) for p, q in probabilities.items()},
                                           labelled_pixels),
        "diverse": lambda: diverse_order(entropy, layouts, groups=count, seed=seed),
        "diverse_features": lambda: diverse_order(  # grouping by encoder features instead of class layout
            entropy, encoder_embeddings(checkpoint, list(probabilities)), groups=count, seed=seed),
        "typical": lambda: typical_order(layouts, groups=count, seed=seed, labelled=[
            class_layout(predictor.predict_proba(p)) for p in labelled]),
        "spread": lambda: [p for p, _ in spread_out(ranked, {p: perceptual_hash(read_image(p)) for p in entropy},
                                                    args.spread)],
    }
    return pickers[arm]()[:count]


def stratified_order(ranked: list[tuple[Path, dict[str, float]]], features: dict[Path, np.ndarray], count: int,
                     strata: int, hashes: dict[Path, int], spread: int, seed: int) -> list[Path]:
    """`count` images: the pool falls into `strata` kinds of scene (k-means on encoder features), each
    kind gets picks in proportion to its size, as random picks would in expectation, and within a kind
    the most uncertain go first (near-identical frames waiting, `spread_out`). Uncertainty alone
    crowds into the hardest kind of scene (on CamVid, the dusk sequence)."""
    paths = [p for p, _ in ranked]
    groups = kmeans(np.stack([features[p] for p in paths]), strata, seed)
    sizes = np.bincount(groups, minlength=strata)
    quota = np.floor(sizes * count / len(paths)).astype(int)
    for g in np.argsort(-(sizes * count / len(paths) - quota), kind="stable")[: count - quota.sum()]:
        quota[g] += 1  # largest remainders
    chosen = []
    for g in range(strata):
        members = [item for item, group in zip(ranked, groups) if group == g]  # still most uncertain first
        chosen += [p for p, _ in spread_out(members, hashes, spread)[: quota[g]]]
    return chosen


def committee_order(checkpoint: Path, probabilities: dict[Path, np.ndarray], size: int, seed: int,
                    reuse: bool = False) -> list[Path]:
    """The pool (`probabilities`: image -> `checkpoint`'s model's), most disagreed on first: the mean
    per-pixel mutual information of that model and `size` - 1 others trained on the same images from
    other seeds (base_1, base_2, ... beside it)."""
    others = [load(committee_member(checkpoint, k, seed, reuse)) for k in range(1, size)]
    score = {p: float(pixel_disagreement([q] + [o.predict_proba(p) for o in others]).mean())
             for p, q in probabilities.items()}
    return sorted(probabilities, key=lambda p: (-score[p], p.name))


def pixel_disagreement(probas: list[np.ndarray]) -> np.ndarray:
    """[(C, H, W) probabilities of each model of a committee] -> (H, W) mutual information in nats: the
    entropy of their mean minus the mean of their entropies (BALD: Houlsby et al. 2011). 0 where the
    models agree however unsure each is (a blurred edge: noise no label removes); log 2 where two
    models are sure of different classes."""
    mean = np.mean(probas, axis=0)
    return np.maximum(pixel_entropy(mean) - np.mean([pixel_entropy(q) for q in probas], axis=0), 0.0)


def committee_member(checkpoint: Path, k: int, seed: int, reuse: bool) -> Path:
    """The k-th other model trained like `checkpoint` (same data folder, epochs, strategy), seed + 1000 k;
    with `reuse`, the one an earlier run left beside it, as --reuse-base keeps the base."""
    run = checkpoint.parent.with_name(f"{checkpoint.parent.name}_{k}")
    if not (reuse and (run / "best.pt").is_file()):
        state = load_checkpoint(checkpoint)
        config = state["config"]
        fine_tune(Path(config["data"]), run, config["epochs"], config.get("init_from"), seed + 1000 * k)
    return run / "best.pt"


def fine_tune(data: Path, out: Path, epochs: int, init_from: Path | None, seed: int) -> float:
    # last-k is what --strategy auto picks for CamVid-like data; pinned so no arm pays for the advisor
    summary = train(data, out=out, epochs=epochs, strategy="last-k", val_every=1000, seed=seed,
                    init_from=str(init_from) if init_from else None, overwrite=True, log=lambda _: None)
    return summary["best_mean_iou"]


def arm_rounds(specs: list[str], default_rounds: int) -> dict[str, tuple[str, int]]:
    """--arms' RULE or RULE@N -> {name: (rule, rounds)}, named RULE_Nrounds when picked in N > 1 rounds.
    Random draws take no rounds: they do not look at the model."""
    arms = {}
    for spec in specs:
        rule, _, count = spec.partition("@")
        rounds = 1 if rule.startswith("random") else int(count or default_rounds)
        arms[rule if rounds == 1 else f"{rule}_{rounds}rounds"] = (rule, rounds)
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--add", type=int, default=40)
    parser.add_argument("--base-epochs", type=int, default=40, help="epochs on the initial images")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each arm's fine-tuning")
    parser.add_argument("--measure", default="entropy", choices=("entropy", "margin"))
    parser.add_argument("--spread", type=int, default=16, help="perceptual-hash bits between chosen images")
    parser.add_argument("--arms", default="uncertainty,diverse,random,random2,random3",
                        help="comma-separated, of uncertainty, disagreement, balanced, diverse, diverse_features, typical, "
                        "spread, random; random2, random3, ... are other random draws (the spread of chance)")
    parser.add_argument("--eval", default="val", choices=("val", "heldout"),
                        help="score on CamVid's val split, or on a middle block of each train sequence "
                        "(--held-out-share of its frames), left out of the pool")
    parser.add_argument("--held-out-share", type=float, default=0.15)
    parser.add_argument("--strata", type=int, default=8, help="kinds of scene for --arms stratified")
    parser.add_argument("--committee", type=int, default=3,
                        help="models (the base and others from other seeds) whose disagreement ranks the pool")
    parser.add_argument("--rounds", type=int, default=1,
                        help="pick the --add images in this many rounds, fine-tuning on the labels so far "
                        "between rounds (the app's label, retrain, next loop); random picks need no rounds")
    parser.add_argument("--round-epochs", type=int, default=20, help="epochs of each fine-tuning between rounds")
    parser.add_argument("--reuse-base", action="store_true",
                        help="keep each seed's 20-image model (and the committee's) from an earlier run with the "
                        "same settings")
    parser.add_argument("--out", default=str(CACHE / "active_learning"))
    args = parser.parse_args()
    arms = arm_rounds(args.arms.split(","), args.rounds)
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

        initial_paths = [full / "train" / n for n in initial]
        random_picks = [pool[i] for i in rng.choice(len(pool), args.add, replace=False)]
        chosen = {}
        for arm, (rule, rounds) in arms.items():
            if rule == "random":
                chosen[arm] = random_picks
                continue
            if rule.startswith("random"):  # random2, random3, ...: other draws, to see how far chance alone moves
                draw = np.random.default_rng([seed, int(rule[len("random"):])])
                chosen[arm] = [pool[i] for i in draw.choice(len(pool), args.add, replace=False)]
                continue
            picked, model = [], base_dir / "best.pt"
            for r in range(rounds):  # label a share, retrain on all labels so far, rank again
                count = args.add * (r + 1) // rounds - len(picked)
                taken = set(picked)
                left = [full / "train" / n for n in pool if n not in taken]
                picked += [p.name for p in pick(rule, model, left, initial_paths + [
                    full / "train" / n for n in picked], count, seed, args)]
                if r + 1 < rounds:
                    model = out / f"seed{seed}" / f"{arm}_{r + 1}"
                    fine_tune(subset(full, initial + picked, model.with_name("data_" + model.name),
                                     held_out), model, args.round_epochs, base_dir / "best.pt", seed)
                    model = model / "best.pt"
            chosen[arm] = picked
        row = {"seed": seed, "base": round(base, 4)}
        for arm in arms:
            data = subset(full, initial + chosen[arm], out / f"seed{seed}" / f"data_{arm}", held_out)
            row[arm] = round(fine_tune(data, out / f"seed{seed}" / arm, args.epochs, base_dir / "best.pt", seed), 4)
        draws = [row[arm] for arm in arms if arm.startswith("random")]
        if len(draws) > 1:  # what random picks score on average: one draw alone swings by points
            row["random_mean"] = round(statistics.mean(draws), 4)
        reference = row.get("random_mean", row.get("random"))
        for arm in arms:
            if not arm.startswith("random") and reference is not None:
                row[f"gain_{arm}"] = round(row[arm] - reference, 4)
        rows.append(row)
        print(f"seed {seed}: {args.initial} images {base:.4f}; +{args.add}: "
              + ", ".join(f"{arm} {row[arm]:.4f}" for arm in arms), flush=True)
    scored_on = "CamVid val" if held_out is None else (
        f"{len(held_out)} held-out train images (a middle block of {args.held_out_share:.0%} of each sequence), "
        f"pool {len(names) - args.initial}")
    result = {"benchmark": "active_learning", **run_record(), "scored_on": scored_on,
              "setting": f"CamVid 240x180, {args.initial} labelled + {args.add}, "
              f"{args.base_epochs} + {args.epochs} epochs, strategy last-k, measure {args.measure}, spread {args.spread}"
              + "".join(f"; {arm}: picked in {rounds} rounds of {args.add // rounds} with {args.round_epochs} "
                        "epochs of fine-tuning between" for arm, (_, rounds) in arms.items() if rounds > 1),
              "gains_against": "the mean of the random draws" if "random_mean" in rows[0] else "random",
              "seeds": rows}
    for arm in arms:
        result[f"mean_{arm}"] = round(statistics.mean(r[arm] for r in rows), 4)
        if f"gain_{arm}" in rows[0]:
            result[f"mean_gain_{arm}"] = round(statistics.mean(r[f"gain_{arm}"] for r in rows), 4)
            result[f"wins_{arm}"] = sum(r[f"gain_{arm}"] > 0 for r in rows)
    if "random_mean" in rows[0]:
        result["mean_random_draws"] = round(statistics.mean(r["random_mean"] for r in rows), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
