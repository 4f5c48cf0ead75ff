"""How unsure a model is, per pixel and per image: what to label next, and where to look first.

Per pixel, from class probabilities p (C, H, W):
- margin: p_top1 - p_top2, in 0..1; small means the model hesitates between two classes;
- entropy: -sum_c p_c log p_c, in nats, 0 when sure, log C when uniform.
An image's score is the mean over its pixels. Active learning labels the highest-entropy
(or lowest-margin) images first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tqdm import tqdm

from pixelwise.data.duplicates import popcount

MEASURES = ("entropy", "margin", "balanced", "diverse", "typical")
# What `data suggest` and the app's "next" follow. On CamVid (benchmarks/active_learning.py) `diverse`
# beat plain entropy and came level with random draws: no rule beats random picks there. The figures are
# in docs/ground-truth.md.
DEFAULT_MEASURE = "diverse"


def pixel_margin(proba: np.ndarray) -> np.ndarray:
    """(C, H, W) probabilities -> (H, W) top-1 minus top-2 probability."""
    if proba.shape[0] < 2:
        return np.ones(proba.shape[1:], dtype=np.float32)
    top2 = np.partition(proba, -2, axis=0)[-2:]
    return (top2[1] - top2[0]).astype(np.float32)


def pixel_entropy(proba: np.ndarray) -> np.ndarray:
    """(C, H, W) probabilities -> (H, W) entropy in nats."""
    p = np.clip(proba, 1e-12, 1.0)
    return -(proba * np.log(p)).sum(0).astype(np.float32)


def image_uncertainty(proba: np.ndarray) -> dict[str, float]:
    """Mean per-pixel entropy and margin of one image."""
    return {"entropy": float(pixel_entropy(proba).mean()), "margin": float(pixel_margin(proba).mean())}


def rank_by_uncertainty(proba_of: Callable[[Path], np.ndarray], images: Iterable[Path],
                        measure: str = DEFAULT_MEASURE, labelled_pixels: np.ndarray | None = None, groups: int = 20,
                        seed: int = 0, labelled_layouts: Iterable[np.ndarray] = ()
                        ) -> list[tuple[Path, dict[str, float]]]:
    """Most uncertain first: highest mean entropy, lowest mean margin, `balanced` (see `balanced_order`;
    needs `labelled_pixels`, the (C,) class pixel counts of the masks there are), `diverse` (see
    `diverse_order`: `groups` groups of look-alike scenes, k-means seeded by `seed`) or `typical` (see
    `typical_order`; `labelled_layouts`: `class_layout` of the images that have masks). Ties keep name order.
    -> [(image, {"entropy": mean entropy, "margin": mean margin})]"""
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; choose {', '.join(MEASURES)}")
    images = sorted(images)
    scored, profiles = [], {}
    for path in tqdm(images, desc="scoring", unit="img", leave=False, disable=len(images) < 20):
        proba = proba_of(path)
        scored.append((path, image_uncertainty(proba)))
        if measure == "balanced":
            profiles[path] = class_uncertainty(proba)
        elif measure in ("diverse", "typical"):
            profiles[path] = class_layout(proba)
    if measure in ("diverse", "typical") and scored:
        scores = dict(scored)
        entropy = {path: score["entropy"] for path, score in scored}
        order = (diverse_order(entropy, profiles, groups, seed) if measure == "diverse"
                 else typical_order(profiles, groups, seed, labelled_layouts))
        return [(path, scores[path]) for path in order]
    if measure == "balanced" and scored:
        scores = dict(scored)
        counts = np.zeros_like(profiles[images[0]][0]) if labelled_pixels is None else labelled_pixels
        return [(path, scores[path]) for path in balanced_order(profiles, counts)]
    sign = -1 if measure == "entropy" else 1
    return sorted(scored, key=lambda item: sign * item[1][measure])


def spread_out(ranked: list[tuple[Path, dict[str, float]]], hashes: dict[Path, int],
               min_distance: int = 16) -> list[tuple[Path, dict[str, float]]]:
    """Keep the uncertainty order, but an image within `min_distance` perceptual-hash bits of one already
    taken waits until no other image is left: frames of one video shot are uncertain together, and
    labelling ten of them teaches little more than labelling one. (Neighbouring CamVid frames one second
    apart are a median 14 bits apart; unrelated photos about 32.)"""
    taken, waiting = [], []
    chosen = np.zeros(0, dtype=np.uint64)
    for item in ranked:
        code = np.uint64(hashes[item[0]])
        if chosen.size and int(popcount(chosen ^ code).min()) < min_distance:
            waiting.append(item)
            continue
        taken.append(item)
        chosen = np.append(chosen, code)
    return taken + waiting


def class_uncertainty(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) probabilities -> (expected pixels of each class: sum of p_c, (C,); the entropy those pixels
    carry: sum of p_c x entropy, (C,)). Where the model thinks a class is, and how unsure it is there."""
    flat = proba.reshape(proba.shape[0], -1).astype(np.float64)
    return flat.sum(1), flat @ pixel_entropy(proba).ravel().astype(np.float64)


def rarity_weights(class_pixels: np.ndarray) -> np.ndarray:
    """(C,) pixel counts -> (C,) weights 1 / sqrt(share): a class with 1% of the pixels weighs 10, with
    25% weighs 2. A class never seen gets the weight of one pixel in a thousand."""
    share = class_pixels / max(class_pixels.sum(), 1.0)
    return 1.0 / np.sqrt(np.maximum(share, 1e-3))


def balanced_order(profiles: dict[Path, tuple[np.ndarray, np.ndarray]], labelled_pixels: np.ndarray) -> list[Path]:
    """Images in the order to label them: unsure about rare classes first, and each pick counts as labelled.

    profiles: image -> `class_uncertainty` of its probabilities; labelled_pixels: (C,) class pixel counts
    of the masks there are. An image's score is its entropy per pixel, each pixel weighted by the
    rarity (`rarity_weights`) of the classes the model sees there. After each pick its expected class
    pixels join the counts, so a class stops pulling once enough of it is chosen: mean IoU weighs every
    class alike, and uncertainty alone keeps choosing the same hard, common scene."""
    counts = np.asarray(labelled_pixels, dtype=np.float64).copy()
    remaining = dict(sorted(profiles.items()))
    order = []
    while remaining:
        weights = rarity_weights(counts)
        best = max(remaining, key=lambda p: float(remaining[p][1] @ weights / remaining[p][0].sum()))
        order.append(best)
        counts += remaining.pop(best)[0]
    return order


def class_layout(proba: np.ndarray, grid: int = 4) -> np.ndarray:
    """(C, H, W) probabilities -> (C x grid x grid,) the mean probability of each class in each cell of a
    grid x grid split of the image: what the model sees where (road below, sky above, a bus on the
    left), a scene's fingerprint that frames of one shot share."""
    _, height, width = proba.shape

    def cells(size: int) -> list[slice]:  # grid spans, each at least one pixel (an image under grid pixels repeats)
        starts = [min(i * size // grid, size - 1) for i in range(grid)]
        return [slice(a, max(a + 1, (i + 1) * size // grid)) for i, a in enumerate(starts)]

    return np.array([[proba[:, r, c].mean((1, 2)) for c in cells(width)] for r in cells(height)],
                    dtype=np.float64).transpose(2, 0, 1).ravel()


def squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, D), (K, D) -> (N, K), without an (N, K, D) array: |x|^2 - 2 x.c + |c|^2, never below 0."""
    return np.maximum((points ** 2).sum(1)[:, None] - 2 * points @ centres.T + (centres ** 2).sum(1)[None], 0)


def kmeans(points: np.ndarray, k: int, seed: int = 0, rounds: int = 50) -> np.ndarray:
    """(N, D) points -> (N,) group of each point, 0..k-1: Lloyd's k-means from k-means++ starts.
    Every group keeps at least one point (k is capped at N)."""
    points = np.asarray(points, dtype=np.float64)
    k = min(k, len(points))
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(len(points))]]
    for _ in range(k - 1):  # k-means++: each next start far from those taken, by chance in proportion
        nearest = squared_distances(points, np.array(centres)).min(1)
        centres.append(points[rng.choice(len(points), p=nearest / nearest.sum())] if nearest.sum() > 0
                       else points[rng.integers(len(points))])
    centres = np.array(centres)
    groups = np.full(len(points), -1)
    for _ in range(rounds):
        new = squared_distances(points, centres).argmin(1)
        if (new == groups).all():
            break
        groups = new
        for g in range(k):
            members = points[groups == g]
            centres[g] = members.mean(0) if len(members) else points[rng.integers(len(points))]
    return groups


def diverse_order(entropy: dict[Path, float], layouts: dict[Path, np.ndarray], groups: int = 20,
                  seed: int = 0) -> list[Path]:
    """Images in the order to label them: one from every kind of scene before a second from any.

    The images fall into `groups` groups of look-alikes (k-means on `class_layout`). The first round
    takes each group's most uncertain image (highest mean entropy), groups with the most uncertain
    first; the next round each group's second, and so on. Uncertainty alone keeps picking one hard
    scene and its neighbouring video frames; random picks cover the scenes but waste labels on ones
    the model already knows. Set `groups` to the number of images labelled before the next retraining."""
    paths = sorted(entropy)
    if not paths:
        return []
    assignment = kmeans(np.stack([layouts[p] for p in paths]), groups, seed)
    members = [sorted((p for p, g in zip(paths, assignment) if g == group), key=lambda p: -entropy[p])
               for group in range(assignment.max() + 1)]
    return round_robin(sorted((m for m in members if m), key=lambda m: -entropy[m[0]]))


def round_robin(groups: list[list[Path]]) -> list[Path]:
    """The first of every group in turn, then the second of every group, and so on."""
    return [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]


def typicality(points: np.ndarray, neighbours: int = 20) -> np.ndarray:
    """(N, D) -> (N,) 1 / the mean distance to each point's `neighbours` nearest others: high in the
    dense middle of a group, low for an outlier (a blurred frame, an odd scene)."""
    if len(points) < 2:
        return np.ones(len(points))
    distances = np.sqrt(squared_distances(points, points))
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, :min(neighbours, len(points) - 1)]
    return 1.0 / (nearest.mean(1) + 1e-12)


def typical_order(layouts: dict[Path, np.ndarray], groups: int = 20, seed: int = 0,
                  labelled: Iterable[np.ndarray] = ()) -> list[Path]:
    """Images in the order to label them while labels are few: the most typical image of every kind of
    scene that no mask covers yet, then of the kinds that have one, then the second of each.

    Images and the already labelled ones (`labelled`: their `class_layout`s) fall into `groups` +
    (labelled count) groups of look-alikes (k-means on `class_layout`). Groups without a labelled
    image come first, the largest first; from each, the image at the dense centre of the group
    (`typicality` among its members) goes before its outliers. With few labels a model learns most
    from typical examples of what it has not seen, and most uncertain images are atypical (TypiClust:
    Hacohen, Dekel and Weinshall, "Active learning on a budget", ICML 2022). Set `groups` to the
    number of images labelled before the next retraining."""
    paths = sorted(layouts)
    if not paths:
        return []
    labelled = [np.asarray(v, dtype=np.float64) for v in labelled]
    points = np.stack([layouts[p] for p in paths] + labelled)
    assignment = kmeans(points, groups + len(labelled), seed)
    covered = set(assignment[len(paths):].tolist())
    members = []
    for group in sorted(set(assignment[:len(paths)].tolist())):
        inside = np.flatnonzero(assignment[:len(paths)] == group)
        density = typicality(points[inside])  # among its own group: the centre of this kind of scene
        by_density = inside[np.argsort(-density, kind="stable")]
        members.append((group in covered, -len(inside), [paths[i] for i in by_density]))
    return round_robin([images for *_, images in sorted(members, key=lambda m: m[:2])])
