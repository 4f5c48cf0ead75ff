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

MEASURES = ("entropy", "margin", "balanced")


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
                        measure: str = "entropy", labelled_pixels: np.ndarray | None = None
                        ) -> list[tuple[Path, dict[str, float]]]:
    """Most uncertain first: highest mean entropy, lowest mean margin, or `balanced` (see `balanced_order`;
    needs `labelled_pixels`, the (C,) class pixel counts of the masks there are). Ties keep name order.
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
