"""Segmentation metrics from one confusion matrix, with the FCN paper's definitions.

n[i, j] counts pixels of true class i predicted as j; t_i = sum_j n[i, j].
  pixel accuracy      sum_i n_ii / sum_i t_i
  mean accuracy       mean_i n_ii / t_i
  IoU_i               n_ii / (t_i + sum_j n_ji - n_ii)
  frequency-weighted  sum_i t_i IoU_i / sum_i t_i
A class with no pixels in truth or prediction has IoU null and is left out of the mean.
"""
from __future__ import annotations

import numpy as np
import torch


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """prediction, target: integer tensors of the same shape. Ignore pixels are dropped here, and only here."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        t, p = target[keep].long().cpu(), prediction[keep].long().cpu()
        if t.numel() and (t.min() < 0 or t.max() >= self.num_classes):
            raise ValueError(f"target label {int(t.max())} outside 0..{self.num_classes - 1}")
        n = self.num_classes
        self.matrix += torch.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def compute(self, class_names=None) -> dict:
        n = self.matrix.double().numpy()
        diag, truth, predicted = np.diag(n), n.sum(1), n.sum(0)
        total = n.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = diag / (truth + predicted - diag)
            class_acc = diag / truth
        present = truth > 0
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "pixel_accuracy": float(diag.sum() / total) if total else float("nan"),
            "mean_accuracy": float(np.nanmean(class_acc)) if present.any() else float("nan"),
            "mean_iou": float(np.nanmean(iou)) if (~np.isnan(iou)).any() else float("nan"),
            "fw_iou": float((truth[present] * iou[present]).sum() / total) if total else float("nan"),
            "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou)},
        }
