"""Where a dataset sits in the transfer-learning table, measured, and the strategy that follows.

                      similar to ImageNet          different from ImageNet
    small data        last-k (textbook: head)      full, with augmentation
    rich data         last-k                       full

Size is the number of training images, with labelled pixels per class and class imbalance as
evidence. Similarity is measured with the pretrained backbone itself: every BatchNorm layer keeps
the running mean and variance of its input over ImageNet. Feeding the user's images through the
frozen encoder and comparing the per-channel moments of those same inputs with ImageNet's says,
layer by layer, how far the data sits from what the weights were trained on. Per channel the
distance is the 2-Wasserstein distance between the two Gaussians, in units of the ImageNet
standard deviation: sqrt((mu - mu_in)^2 + (sigma - sigma_in)^2) / sigma_in. A layer's shift is the
median over its channels; the dataset's shift is the mean over layers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pixelwise.data.checks import check_before_use
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import DatasetSpec, split_pairs
from pixelwise.data.transforms import to_tensors
from pixelwise.errors import PixelwiseError
from pixelwise.models.encoders import create_encoder

# Set between what efficientnet_lite0 (lite2 and mobilenet_v2 alike) measures on ImageNet-like photos
# (CamVid street scenes, the photos in tests/data), which stay below it, and on data unlike ImageNet
# (CamVid in greyscale just above; synthetic textures, fluorescence nuclei, uniform noise well above).
# benchmarks/transfer.py measures each setting's value.
SHIFT_THRESHOLD = 0.35
RICH_IMAGES = 100  # training images from which a dataset counts as rich
MEASURE_SHORT_SIDE = 256  # images are measured at ImageNet's evaluation scale (resize 256, crop 224)

# The textbook's answer for each quadrant, and pixelwise's, which benchmarks/transfer.py measured
# (FCN-8s/EfficientNet-Lite0, equal time budgets, two seeds; docs/training.md). They differ in one
# place: with few ImageNet-like images the textbook trains the head alone, but an FCN's head is its
# 1x1 score layers, and on a small CamVid subset that clearly trailed last-k.
TEXTBOOK = {"small-similar": "head", "small-different": "full", "rich-similar": "last-k", "rich-different": "full"}
RECOMMENDATION = {
    "small-similar": ("last-k", "few images of ImageNet-like content: the generic early stages stay frozen and "
                                "the last stages adapt (the textbook's head-only training trailed it on a small "
                                "CamVid subset; see docs/training.md)"),
    "small-different": ("full", "few images unlike ImageNet: the features must adapt, so every layer trains, "
                                "with the default augmentation against overfitting"),
    "rich-similar": ("last-k", "many images of ImageNet-like content: the early, generic layers are kept "
                               "and the last stages adapt"),
    "rich-different": ("full", "many images unlike ImageNet: there is enough data to retrain every layer"),
}


@dataclass
class Advice:
    quadrant: str
    strategy: str
    reasons: list[str]
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        e = self.evidence
        return (f"{self.quadrant} (images {e['images']}, domain shift {e['domain_shift']:.2f} vs threshold "
                f"{e['shift_threshold']:g}) -> --strategy {self.strategy}")


# ---------------------------------------------------------------- the size axis

def size_evidence(dataset: SegmentationDataset, class_names: list[str]) -> dict:
    counts = dataset.class_pixel_counts()
    present = counts[counts > 0]
    return {"images": len(dataset),
            "labelled_pixels": int(counts.sum()),
            "pixels_per_class": {name: int(c) for name, c in zip(class_names, counts)},
            "absent_classes": [name for name, c in zip(class_names, counts) if c == 0],
            # most / least frequent labelled class: what class weighting has to make up for
            "imbalance": float(present.max() / present.min()) if present.size else None}


# ---------------------------------------------------------------- the similarity axis

class MomentRecorder:
    """Per-channel sums of every BatchNorm layer's input, in float64."""

    def __init__(self, encoder: nn.Module):
        self.layers = [(name, m) for name, m in encoder.named_modules() if isinstance(m, nn.BatchNorm2d)
                       and m.running_mean is not None]
        if not self.layers:
            raise PixelwiseError("the advisor measures domain shift with BatchNorm statistics, and this backbone "
                                 "has none; pick a backbone such as efficientnet_lite0, mobilenet_v2 or resnet18")
        self.sums = {name: 0.0 for name, _ in self.layers}
        self.squares = {name: 0.0 for name, _ in self.layers}
        self.count = {name: 0 for name, _ in self.layers}
        self.handles = [m.register_forward_pre_hook(self.hook(name)) for name, m in self.layers]

    def hook(self, name: str):
        def record(module, inputs):
            x = inputs[0].detach().double()
            self.sums[name] = self.sums[name] + x.sum(dim=(0, 2, 3))
            self.squares[name] = self.squares[name] + (x * x).sum(dim=(0, 2, 3))
            self.count[name] += x.shape[0] * x.shape[2] * x.shape[3]
        return record

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()

    def layer_shifts(self) -> dict[str, float]:
        shifts = {}
        for name, module in self.layers:
            n = self.count[name]
            mean = self.sums[name] / n
            std = (self.squares[name] / n - mean ** 2).clamp_min(0).sqrt()
            ref_mean = module.running_mean.double()
            ref_std = (module.running_var.double() + module.eps).sqrt()
            distance = ((mean - ref_mean) ** 2 + (std - ref_std) ** 2).sqrt() / ref_std
            shifts[name] = float(distance.median())
        return shifts


def resize_short_side(image: torch.Tensor, short: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    scale = short / min(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[0]


@torch.no_grad()
def domain_shift(dataset: SegmentationDataset, backbone: str = "efficientnet_lite0", max_images: int = 48,
                 backbone_weights: str | None = None) -> dict:
    """Mean and per-stage BatchNorm-moment shift of `dataset` (up to `max_images`, evenly spread)
    against the ImageNet statistics held by `backbone`'s pretrained weights."""
    encoder = create_encoder(backbone, pretrained=True, weights_path=backbone_weights).eval()
    recorder = MomentRecorder(encoder)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(max_images, len(dataset))).round().astype(int))
    try:
        for i in tqdm(picks, desc="measuring domain shift", unit="img", leave=False, disable=len(picks) < 20):
            image = to_tensors(*dataset.load(int(i)))[0]
            encoder(resize_short_side(image, MEASURE_SHORT_SIDE)[None])
    finally:
        recorder.close()
    shifts = recorder.layer_shifts()
    per_stage: dict[int, list[float]] = {}
    for name, value in shifts.items():
        per_stage.setdefault(encoder.stage_of(name), []).append(value)
    return {"domain_shift": float(np.mean(list(shifts.values()))),
            "domain_shift_per_stage": [round(float(np.mean(per_stage[s])), 3) for s in sorted(per_stage)],
            "measured_images": len(picks), "batchnorm_layers": len(shifts)}


# ---------------------------------------------------------------- the decision

def decide(images: int, shift: float) -> tuple[str, str, str]:
    """-> (quadrant, strategy, reason) from the two measured axes."""
    quadrant = f"{'rich' if images >= RICH_IMAGES else 'small'}-{'different' if shift > SHIFT_THRESHOLD else 'similar'}"
    strategy, reason = RECOMMENDATION[quadrant]
    return quadrant, strategy, reason


def advise(data: str | Path | DatasetSpec, backbone: str = "efficientnet_lite0", format: str = "auto",
           backbone_weights: str | None = None, log: Callable[[str], None] = print) -> Advice:
    """Measure the training split of `data` on both axes. -> Advice (quadrant, strategy, evidence).
    `data`: a dataset folder, which the data checker reads first, or a spec already checked (`train`'s)."""
    spec = data if isinstance(data, DatasetSpec) else check_before_use(data, format, log, keep_decoded=True)[0]
    train_pairs, _ = split_pairs(spec, log=lambda message: None)
    dataset = SegmentationDataset(train_pairs, spec.num_classes, spec.ignore_index, decoded=spec.decoded)
    dataset.preload("reading train")
    evidence = {**size_evidence(dataset, spec.class_names),
                **domain_shift(dataset, backbone, backbone_weights=backbone_weights),
                "backbone": backbone, "rich_from_images": RICH_IMAGES, "shift_threshold": SHIFT_THRESHOLD}
    quadrant, strategy, reason = decide(evidence["images"], evidence["domain_shift"])
    evidence["textbook_strategy"] = TEXTBOOK[quadrant]
    size_word = "at least" if evidence["images"] >= RICH_IMAGES else "fewer than"
    side = "above" if evidence["domain_shift"] > SHIFT_THRESHOLD else "within"
    reasons = [f"{evidence['images']} training images: {size_word} {RICH_IMAGES}",
               f"BatchNorm-moment shift from ImageNet {evidence['domain_shift']:.2f}: {side} the {SHIFT_THRESHOLD:g} "
               "that separates photos from microscopy and textures",
               reason]
    if evidence["absent_classes"]:
        reasons.append("no labelled pixels for " + ", ".join(evidence["absent_classes"]))
    return Advice(quadrant, strategy, reasons, evidence)


def format_advice(advice: Advice) -> str:
    e = advice.evidence
    counts = e["pixels_per_class"]
    width = max(len(n) for n in counts)
    textbook = e.get("textbook_strategy", advice.strategy)
    lines = [f"quadrant   {advice.quadrant}",
             f"strategy   {advice.strategy}" + ("" if textbook == advice.strategy else f"   (textbook: {textbook})"),
             "", "why:"]
    lines += [f"  - {r}" for r in advice.reasons]
    lines += ["", f"images {e['images']}, labelled pixels {e['labelled_pixels']:,}, imbalance "
              + ("-" if e["imbalance"] is None else f"{e['imbalance']:.0f}x"),
              f"domain shift {e['domain_shift']:.3f} (per stage, shallow to deep: "
              + " ".join(f"{v:.2f}" for v in e["domain_shift_per_stage"]) + f"; {e['backbone']}, "
              f"{e['measured_images']} images)", "", "labelled pixels per class:"]
    total = max(e["labelled_pixels"], 1)
    lines += [f"  {name:<{width}} {c:>12,} {100 * c / total:6.2f}%" for name, c in counts.items()]
    return "\n".join(lines)


def write_advice(advice: Advice, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(advice.to_dict(), indent=1))
