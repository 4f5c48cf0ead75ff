"""The Python API, mirroring the CLI: train, evaluate, load."""
from __future__ import annotations

import json
from pathlib import Path

from pixelwise.config import TrainConfig
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import load_spec
from pixelwise.errors import PixelwiseError
from pixelwise.evaluation import ConfusionMatrix, PerImageScores, check_same_classes, evaluate_engine
from pixelwise.inference.predict import Predictor, load
from pixelwise.inference.selection import create_engine
from pixelwise.training import engine
from pixelwise.training.plots import plot_confusion

__all__ = ["train", "evaluate", "load", "Predictor"]


def train(data: str | Path, out: str | Path = "runs/train", resume: bool | str = False, overwrite: bool = False,
          log=print, **options) -> dict:
    """Train with `pixelwise train`'s defaults, overridden by keyword (see `TrainConfig`).

    >>> summary = train("my_data", out="runs/first", time_budget=10)
    """
    cfg = TrainConfig(data=str(data), out=str(out), **options)
    return engine.fit(cfg, resume=resume, overwrite=overwrite, log=log)


def default_split(splits) -> str:
    for name in ("test", "val"):
        if name in splits:
            return name
    raise PixelwiseError("the dataset has neither a test nor a val split; name one with --split")


def evaluate(checkpoint: str | Path, data: str | Path, split: str | None = None, format: str = "auto",
             json_path: str | Path | None = None, plot_path: str | Path | None = None,
             device: str = "auto", precision: str = "auto", engine: str = "torch", profile: str = "accurate",
             per_image_csv: str | Path | None = None) -> dict:
    """Score a checkpoint (or an exported .onnx) on one split, on `engine` (auto | torch | onnxruntime |
    openvino) at a speed `profile` (accurate: the checkpoint's inference scale; fast: scale 1).
    -> the metrics dict (pixel_accuracy, mean_accuracy, mean_iou, fw_iou, per_class_iou), also written to
    `json_path`; the confusion matrix goes to `plot_path`; each image's scores, worst first, to `per_image_csv`."""
    runner = create_engine(engine, checkpoint, device=device, precision=precision, profile=profile)
    spec = load_spec(data, format)
    split = split or default_split(spec.splits)
    class_names = runner.meta["class_names"]
    check_same_classes(class_names, spec.class_names, checkpoint, data)
    dataset = SegmentationDataset(spec.split(split), spec.num_classes, spec.ignore_index)
    matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    per_image = PerImageScores(matrix, [image.stem for image, _ in dataset.pairs], class_names)
    evaluate_engine(runner, dataset, per_image if per_image_csv else matrix, desc=f"evaluate {split}")
    if per_image_csv:
        Path(per_image_csv).parent.mkdir(parents=True, exist_ok=True)
        per_image.write_csv(per_image_csv)
    metrics = {"split": split, "images": len(dataset), "engine": runner.name, "infer_scale": runner.scale,
               **matrix.compute(class_names),
               "confusion_matrix": matrix.matrix.tolist()}
    plot_path = Path(plot_path) if plot_path else Path(checkpoint).with_name(f"confusion_{split}.png")
    plot_confusion(matrix.matrix.numpy(), class_names, plot_path)
    metrics["confusion_plot"] = str(plot_path)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(metrics, indent=1))
    return metrics


def per_image_iou(checkpoint: str | Path, data: str | Path, split: str | None = None, format: str = "auto",
                  device: str = "auto", precision: str = "auto") -> dict[str, float]:
    """Mean IoU of each image of one split (default: test, else val) -> {image stem: mean IoU}.
    Low scores point at images whose labels or predictions most need a look."""
    runner = create_engine("torch", checkpoint, device=device, precision=precision)
    spec = load_spec(data, format)
    check_same_classes(runner.meta["class_names"], spec.class_names, checkpoint, data)
    dataset = SegmentationDataset(spec.split(split or default_split(spec.splits)), spec.num_classes,
                                  spec.ignore_index)
    # the very scores `evaluate --per-image` writes, so both rank the images alike
    per_image = PerImageScores(ConfusionMatrix(spec.num_classes, spec.ignore_index),
                               [image.stem for image, _ in dataset.pairs], spec.class_names)
    evaluate_engine(runner, dataset, per_image, desc="scoring")
    return {stem: scores["mean_iou"] for stem, scores in per_image.rows}


def format_metrics(metrics: dict) -> str:
    """A human-readable report: the summary scores, then IoU, Dice (F1), precision and recall per class."""
    run = f", {metrics['engine']} engine at inference scale {metrics['infer_scale']:g}" if "engine" in metrics else ""
    lines = [f"{metrics['split']} split, {metrics['images']} images{run}",
             f"  pixel accuracy   {metrics['pixel_accuracy']:.4f}",
             f"  mean accuracy    {metrics['mean_accuracy']:.4f}",
             f"  mean IoU         {metrics['mean_iou']:.4f}",
             f"  frequency-weighted IoU {metrics['fw_iou']:.4f}",
             f"  mean Dice (F1)   {metrics['mean_dice']:.4f}",
             "", f"  {'class':<20} {'IoU':>7} {'Dice/F1':>8} {'precision':>10} {'recall':>7}"]

    def cell(value, width):
        return f"{'—':>{width}}" if value is None else f"{value:{width}.4f}"

    for name, iou in metrics["per_class_iou"].items():
        if iou is None:
            lines.append(f"  {name:<20} {'—  (absent)':>7}")
            continue
        lines.append(f"  {name:<20} {cell(iou, 7)} {cell(metrics['per_class_dice'][name], 8)} "
                     f"{cell(metrics['per_class_precision'][name], 10)} {cell(metrics['per_class_recall'][name], 7)}")
    return "\n".join(lines)
