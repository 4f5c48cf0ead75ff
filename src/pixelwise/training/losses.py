"""Per-pixel softmax cross-entropy and the class weights that make rare classes count."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

WEIGHTINGS = ("none", "median", "sqrt-median")
LOSSES = ("ce", "ohem")


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


class OhemCrossEntropy(nn.Module):
    """Online hard example mining (Shrivastava et al. 2016, as PSPNet/BiSeNet train segmentation): the mean
    cross-entropy of the pixels the model still gets wrong, those whose true class has probability below
    `threshold`, and never fewer than the `min_share` hardest of the labelled pixels. Easy road and sky
    pixels stop drowning the thin classes' gradient."""

    def __init__(self, weights: torch.Tensor | None, ignore_index: int, threshold: float = 0.7,
                 min_share: float = 1 / 16):
        super().__init__()
        self.register_buffer("weights", weights, persistent=False)
        self.ignore_index, self.min_share = ignore_index, min_share
        self.max_loss_easy = -float(np.log(threshold))  # a pixel whose loss is below this counts as learnt

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = nn.functional.cross_entropy(logits, labels, weight=self.weights, ignore_index=self.ignore_index,
                                             reduction="none").flatten()
        labelled = losses[labels.flatten() != self.ignore_index]
        if labelled.numel() == 0:
            return losses.sum() * 0.0  # keeps the graph: a crop of ignore alone teaches nothing
        hard = labelled[labelled > self.max_loss_easy]
        least = max(1, int(self.min_share * labelled.numel()))
        if hard.numel() < least:
            hard = labelled.topk(least).values
        return hard.mean()


def segmentation_loss(weights: torch.Tensor | None, ignore_index: int, loss: str = "ce") -> nn.Module:
    """(N, C, H, W) logits and (N, H, W) labels -> mean cross-entropy over non-ignored pixels (`ce`), or over
    the hard ones (`ohem`)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if loss == "ohem":
        return OhemCrossEntropy(weights, ignore_index)
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index)
