"""Evaluation, one home for training's validation, `pixelwise evaluate`, the API, the app and the benchmarks:
one confusion matrix per dataset yields every metric, and one loop fills it from any engine.

Metrics, with the FCN paper's definitions: n[i, j] counts pixels of true class i predicted as j;
t_i = sum_j n[i, j].
  pixel accuracy      sum_i n_ii / sum_i t_i
  mean accuracy       mean_i n_ii / t_i
  IoU_i               n_ii / (t_i + sum_j n_ji - n_ii)
  frequency-weighted  sum_i t_i IoU_i / sum_i t_i
and those medicine and biology report, with p_i = sum_j n_ji the pixels predicted as i:
  Dice_i (= F1_i)     2 n_ii / (t_i + p_i)
  precision_i         n_ii / p_i
  recall_i            n_ii / t_i
A class with no pixels in truth or prediction has IoU and Dice null and is left out of their means.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from pixelwise.checkpoint import class_differences
from pixelwise.data.transforms import to_tensors
from pixelwise.errors import PixelwiseError


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
            precision = diag / predicted
            dice = 2 * diag / (truth + predicted)
        present = truth > 0
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "pixel_accuracy": float(diag.sum() / total) if total else float("nan"),
            "mean_accuracy": float(np.nanmean(class_acc)) if present.any() else float("nan"),
            "mean_iou": float(np.nanmean(iou)) if (~np.isnan(iou)).any() else float("nan"),
            "fw_iou": float((truth[present] * iou[present]).sum() / total) if total else float("nan"),
            "mean_dice": float(np.nanmean(dice)) if (~np.isnan(dice)).any() else float("nan"),
            "per_class_dice": _by_name(names, dice),  # = F1: the harmonic mean of precision and recall
            "per_class_iou": _by_name(names, iou),
            "per_class_precision": _by_name(names, precision),  # of the pixels predicted as the class, how many are
            "per_class_recall": _by_name(names, class_acc),  # of the class's pixels, how many were found
        }


class PerImageScores:
    """A confusion matrix for each image beside the dataset's own: give `evaluate_engine` this instead of a
    ConfusionMatrix. Batches arrive in dataset order, so the n-th image scored is `stems[n]`."""

    def __init__(self, total: ConfusionMatrix, stems: list[str], class_names):
        self.total, self.stems, self.class_names = total, stems, class_names
        self.rows: list[tuple[str, dict]] = []

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.total.update(prediction, target)
        for one_prediction, one_target in zip(prediction, target):
            matrix = ConfusionMatrix(self.total.num_classes, self.total.ignore_index)
            matrix.update(one_prediction, one_target)
            self.rows.append((self.stems[len(self.rows)], matrix.compute(self.class_names)))

    def worst_first(self) -> list[tuple[str, dict]]:
        """By mean IoU, lowest first (as `data browse --worst` shows them); images with nothing labelled last."""
        return sorted(self.rows, key=lambda row: (np.isnan(row[1]["mean_iou"]), row[1]["mean_iou"]))

    def write_csv(self, path) -> None:
        """One row per image, worst first: mean IoU, pixel accuracy, then each class's IoU (empty where the
        class is in neither the truth nor the prediction of that image)."""
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "mean_iou", "pixel_accuracy", *(f"iou_{name}" for name in self.class_names)])
            for stem, scores in self.worst_first():
                ious = [scores["per_class_iou"][name] for name in self.class_names]
                writer.writerow([stem, _cell(scores["mean_iou"]), _cell(scores["pixel_accuracy"]),
                                 *(_cell(v) for v in ious)])


def _cell(value) -> str:
    return "" if value is None or np.isnan(value) else f"{value:.6f}"


def _by_name(names, values: np.ndarray) -> dict:
    return {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, values)}


def check_same_classes(model_classes, data_classes, model_file, data) -> None:
    """A model scores only data labelled with its own classes: name every difference."""
    diffs = class_differences(list(model_classes), list(data_classes))
    if diffs:
        raise PixelwiseError(f"checkpoint {model_file} was trained on other classes than {data} holds:\n  - "
                             + "\n  - ".join(diffs))


def evaluate_engine(engine, dataset, matrix, batch_size: int = 8, desc: str = "evaluate", indices=None,
                    progress: bool = True):
    """Fill `matrix` (anything with `update(prediction, target)`, e.g. a ConfusionMatrix) with the
    engine's predictions over `dataset` (a SegmentationDataset; `indices`: a part of it) at full
    resolution. Images of equal size are batched. -> matrix"""
    batch_images, batch_masks = [], []

    def flush():
        matrix.update(engine.logits(torch.stack(batch_images)).argmax(1), torch.stack(batch_masks))
        batch_images.clear()
        batch_masks.clear()

    indices = range(len(dataset)) if indices is None else indices
    for i in tqdm(indices, desc=desc, unit="img", leave=False, dynamic_ncols=True, disable=not progress):
        image, mask = to_tensors(*dataset.load(i))
        if batch_images and (image.shape != batch_images[0].shape or len(batch_images) == batch_size):
            flush()
        batch_images.append(image)
        batch_masks.append(mask)
    if batch_images:
        flush()
    return matrix
