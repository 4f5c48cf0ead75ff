"""Per-pixel softmax cross-entropy and the class weights that make rare classes count."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

WEIGHTINGS = ("none", "median", "sqrt-median")


def class_weights(pixel_counts: np.ndarray, scheme: str) -> torch.Tensor | None:
    """Median-frequency balancing (Eigen & Fergus 2015, used by SegNet): w_c = median(f) / f_c.
    `sqrt-median` takes its square root, which lifts rare classes without wrecking frequent ones."""
    if scheme not in WEIGHTINGS:
        raise ValueError(f"unknown class weighting {scheme!r}; choose one of {', '.join(WEIGHTINGS)}")
    if scheme == "none":
        return None
    counts = np.asarray(pixel_counts, dtype=np.float64)
    seen = counts > 0
    freq = counts / counts.sum()
    weights = np.ones_like(freq)
    weights[seen] = np.median(freq[seen]) / freq[seen]
    if scheme == "sqrt-median":
        weights = np.sqrt(weights)
    return torch.tensor(weights, dtype=torch.float32)


def segmentation_loss(weights: torch.Tensor | None, ignore_index: int) -> nn.Module:
    """(N, C, H, W) logits and (N, H, W) labels -> mean cross-entropy over non-ignored pixels."""
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index)
