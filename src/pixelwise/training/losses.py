"""Per-pixel softmax cross-entropy, its hard-pixel and IoU-aimed variants, and the class weights that make
rare classes count."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

WEIGHTINGS = ("none", "median", "sqrt-median")
LOSSES = ("ce", "ohem", "ce+lovasz")
LOVASZ_STRIDE = 2  # Lovász sorts every pixel once per class: on a CPU, a pixel grid of every other row and column


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


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The Lovász-softmax loss (Berman et al. 2018): a convex surrogate of 1 - IoU, averaged over the classes
    present in `labels`. Each class's pixel errors |1[label = c] - p_c|, sorted in decreasing order, are
    weighted by the Jaccard loss's gain as each pixel joins the prediction, so for a one-hot prediction the
    loss is exactly the mean of 1 - IoU over those classes: it optimises the metric, thin classes included."""
    probs = logits.float().softmax(1).movedim(1, -1).reshape(-1, logits.shape[1])
    labels = labels.flatten()
    keep = labels != ignore_index
    probs, labels = probs[keep], labels[keep]
    losses = []
    for c in labels.unique().tolist():
        truth = (labels == c).float()
        errors, order = (truth - probs[:, c]).abs().sort(descending=True)
        truth = truth[order]
        positives = truth.sum()
        jaccard = 1 - (positives - truth.cumsum(0)) / (positives + (1 - truth).cumsum(0))
        gains = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(errors @ gains)
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


class CrossEntropyLovasz(nn.Module):
    """Cross-entropy (with the class weights) plus Lovász-softmax, as the Lovász paper trains: cross-entropy
    gives every pixel a gradient from the start, Lovász aims it at each class's IoU."""

    def __init__(self, weights: torch.Tensor | None, ignore_index: int):
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # sorting a quarter of the pixels: the IoU over a regular grid estimates the crop's
        grid = (..., slice(None, None, LOVASZ_STRIDE), slice(None, None, LOVASZ_STRIDE))
        return self.cross_entropy(logits, labels) + lovasz_softmax(logits[grid], labels[grid], self.ignore_index)


def segmentation_loss(weights: torch.Tensor | None, ignore_index: int, loss: str = "ce") -> nn.Module:
    """(N, C, H, W) logits and (N, H, W) labels -> mean cross-entropy over non-ignored pixels (`ce`), over
    the hard ones (`ohem`), or cross-entropy plus Lovász-softmax (`ce+lovasz`)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if loss == "ohem":
        return OhemCrossEntropy(weights, ignore_index)
    if loss == "ce+lovasz":
        return CrossEntropyLovasz(weights, ignore_index)
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index)
