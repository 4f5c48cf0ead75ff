"""Training as plain functions: one epoch, one evaluation, and `fit`, which loops them.

Data flows: DatasetSpec -> datasets and joint transforms -> model -> loss -> optimizer step,
then per epoch: evaluate -> confusion matrix -> checkpoint -> curves.
"""
from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixelwise.config import TrainConfig
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import load_spec, split_pairs
from pixelwise.data.transforms import to_tensors, train_transform
from pixelwise.errors import PixelwiseError
from pixelwise.models.registry import create_model
from pixelwise.training import advisor, strategies
from pixelwise.training.checkpoint import load_checkpoint, save_checkpoint
from pixelwise.training.losses import class_weights, segmentation_loss
from pixelwise.training.metrics import ConfusionMatrix
from pixelwise.training.plots import plot_curves


# ---------------------------------------------------------------- device and precision

def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PixelwiseError("--device cuda was asked for, but no CUDA GPU is visible; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise PixelwiseError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16/AMX). Without them bf16 autocast is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """-> autocast dtype, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision not in ("auto", "bf16"):
        raise PixelwiseError(f"unknown precision {precision!r}; choose auto, bf16 or fp32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if (precision == "bf16" or cpu_has_bf16()) else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def prepare_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> torch.nn.Module:
    model = model.to(device)
    # channels_last lets oneDNN pick its fast bf16 convolution kernels; it is what makes
    # autocast pay off on CPU.
    return model.to(memory_format=torch.channels_last) if dtype is not None else model


def inference_setup(model: torch.nn.Module, device: str = "auto", precision: str = "auto"):
    """-> (model on the device in eval mode, device, autocast dtype or None), for evaluation and prediction."""
    device_ = resolve_device(device)
    dtype = resolve_precision(precision, device_)
    return prepare_model(model, device_, dtype).eval(), device_, dtype


def to_device(images: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if dtype is not None else images


# ---------------------------------------------------------------- data

def clamp_crop(crop_size, dataset: SegmentationDataset) -> tuple[int, int]:
    """Never crop larger than the smallest image: padding small images up wastes compute."""
    heights, widths = zip(*(dataset.load(i)[0].shape[:2] for i in range(len(dataset))))
    return min(crop_size[0], min(heights)), min(crop_size[1], min(widths))


def fits_in_memory(pairs, limit_bytes: float = 4e9) -> bool:
    """Estimate decoded size from the first image's header (RGB + uint8 mask = 4 bytes a pixel)."""
    try:
        with Image.open(pairs[0][0]) as first:
            w, h = first.size
    except OSError:
        return True  # unreadable: preload will name the file
    return w * h * 4 * len(pairs) < limit_bytes


# ---------------------------------------------------------------- schedule

def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then poly(0.9) decay to 0 at progress 1 (as in DeepLab)."""
    if progress < warmup:
        return (progress + 1e-3) / (warmup + 1e-3)
    return max(0.0, 1 - (progress - warmup) / (1 - warmup)) ** 0.9


# ---------------------------------------------------------------- one epoch, one evaluation

def train_one_epoch(model, loader, loss_fn, optimizer, device, dtype, progress_at: Callable[[int], float],
                    base_lrs: list[float], warmup: float, deadline: float | None = None, desc: str = "train") -> dict:
    """One pass over `loader`. `progress_at(step)` gives the schedule position in 0..1;
    training stops early once `deadline` (time.time()) passes."""
    model.train()
    total_loss, images, steps = 0.0, 0, 0
    start = time.time()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
    for step, (image, target) in enumerate(bar):
        factor = lr_factor(min(progress_at(step), 1.0), warmup)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        image, target = to_device(image, device, dtype), target.to(device, non_blocking=True)
        with autocast(device, dtype):
            logits = model(image)
        loss = loss_fn(logits.float(), target)
        if not torch.isfinite(loss):
            raise PixelwiseError(f"training diverged (loss {loss.item()}); lower --lr (now {base_lrs[0]:g})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * image.shape[0]
        images += image.shape[0]
        steps += 1
        rate = images / max(time.time() - start, 1e-9)
        bar.set_postfix(loss=f"{total_loss / images:.3f}", img_s=f"{rate:.1f}")
        if deadline is not None and time.time() > deadline:
            break
    bar.close()
    seconds = time.time() - start
    return {"loss": total_loss / max(images, 1), "images": images, "seconds": seconds,
            "images_per_s": images / max(seconds, 1e-9)}


@torch.no_grad()
def predict_logits(model, images: torch.Tensor, device, dtype, scale: float = 1.0) -> torch.Tensor:
    """(N, 3, H, W) in 0..1 -> (N, C, H, W) float logits. With `scale` != 1 the network sees the
    images resized by that factor (thin objects cover more pixels at stride 8) and its logits
    are resized back, so the output always matches the input."""
    size = images.shape[-2:]
    if scale != 1.0:
        images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False,
                               antialias=scale < 1)
    with autocast(device, dtype):
        logits = model(to_device(images, device, dtype)).float()
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def evaluate(model, dataset: SegmentationDataset, device, dtype, batch_size: int = 8, scale: float = 1.0,
             desc: str = "evaluate") -> ConfusionMatrix:
    """Confusion matrix over `dataset` at full resolution. Images of equal size are batched."""
    model.eval()
    matrix = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    batch_images, batch_masks = [], []

    def flush():
        logits = predict_logits(model, torch.stack(batch_images), device, dtype, scale)
        matrix.update(logits.argmax(1).cpu(), torch.stack(batch_masks))
        batch_images.clear()
        batch_masks.clear()

    for i in tqdm(range(len(dataset)), desc=desc, unit="img", leave=False, dynamic_ncols=True):
        image, mask = to_tensors(*dataset.load(i))
        if batch_images and (image.shape != batch_images[0].shape or len(batch_images) == batch_size):
            flush()
        batch_images.append(image)
        batch_masks.append(mask)
    if batch_images:
        flush()
    return matrix


# ---------------------------------------------------------------- the loop

def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    model = create_model(cfg.model, backbone=cfg.backbone, num_classes=num_classes, upsample=cfg.upsample,
                         pretrained=cfg.pretrained and cfg.strategy != "scratch",
                         backbone_weights=cfg.backbone_weights, freeze_upsample=cfg.freeze_upsample)
    if cfg.init_from:
        source = load_checkpoint(cfg.init_from)["model"]
        own = model.state_dict()
        usable = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(usable, strict=False)
    return model


def prepare_data(cfg: TrainConfig, device: torch.device, log: Callable[[str], None] = print):
    """Dataset folder -> (spec, train set with joint transforms, val set, train loader, weighted loss).
    Every image and mask is read and checked here, before any training."""
    spec = load_spec(cfg.data, cfg.format)
    train_pairs, val_pairs = split_pairs(spec, log)
    cache = fits_in_memory(train_pairs + val_pairs)
    if not cache:
        log("the dataset is too large to keep decoded in memory: images are decoded every epoch "
            "(consider --workers 2 or more)")
    train_set = SegmentationDataset(train_pairs, spec.num_classes, spec.ignore_index, cache=cache)
    val_set = SegmentationDataset(val_pairs, spec.num_classes, spec.ignore_index, cache=cache)
    train_set.preload("reading train")
    val_set.preload("reading val")
    crop = clamp_crop(cfg.crop_size, train_set)
    train_set.transform = train_transform(crop, cfg.scale_range, spec.ignore_index, cfg.jitter)
    weights = class_weights(train_set.class_pixel_counts(), cfg.class_weighting)
    log(f"augmentation: scale {cfg.scale_range[0]:g}-{cfg.scale_range[1]:g}, crop {crop[0]}x{crop[1]}, flips; "
        f"class weights ({cfg.class_weighting}): "
        + ("none" if weights is None else " ".join(f"{w:.2f}" for w in weights.tolist())))
    loss_fn = segmentation_loss(weights.to(device) if weights is not None else None, spec.ignore_index)

    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_set, batch_size=min(cfg.batch_size, len(train_set)), shuffle=True, drop_last=True,
                        num_workers=cfg.workers, generator=generator, persistent_workers=cfg.workers > 0)
    return spec, train_set, val_set, loader, loss_fn


def resolve_strategy(cfg: TrainConfig, out: Path, resume: bool, log: Callable[[str], None]) -> TrainConfig:
    """`auto` becomes the advisor's pick (written to out/advice.json); a resumed run keeps its own."""
    if cfg.strategy != "auto":
        return cfg
    if resume and (out / "last.pt").is_file():
        return replace(cfg, strategy=load_checkpoint(out / "last.pt")["config"]["strategy"])
    if not (cfg.pretrained or cfg.backbone_weights):
        log("strategy auto: no pretrained weights to transfer, so every layer trains from scratch")
        return replace(cfg, strategy="scratch")
    try:
        advice = advisor.advise(cfg.data, cfg.backbone, cfg.format, cfg.backbone_weights, log=log)
    except PixelwiseError as error:
        log(f"strategy auto: the advisor cannot measure this backbone ({error}); training everything (full)")
        return replace(cfg, strategy="full")
    advisor.write_advice(advice, out / "advice.json")
    log(f"strategy auto: {advice.summary()} ({out / 'advice.json'})")
    return replace(cfg, strategy=advice.strategy)


def fit(cfg: TrainConfig, resume: bool = False, model: torch.nn.Module | None = None,
        log: Callable[[str], None] = print, overwrite: bool = False) -> dict:
    """Train per `cfg`, writing last.pt, best.pt, history.json and curves.png to cfg.out.

    `model` overrides the registry (benchmarks train peers through the same loop).
    Returns a summary dict with the best validation mean IoU.
    """
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    if (out / "last.pt").is_file() and not (resume or overwrite):
        raise PixelwiseError(f"{out} already holds a training run (last.pt); continue it with --resume, "
                             "replace it with --overwrite, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        cfg = resolve_strategy(cfg, out, resume, log)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)

    spec, train_set, val_set, loader, loss_fn = prepare_data(cfg, device, log)
    if model is None:
        model = build_model(cfg, spec.num_classes)
        strategies.apply_strategy(model, cfg.strategy, cfg.trainable_stages)
        groups = strategies.parameter_groups(model, cfg.lr, cfg.strategy, cfg.lr_ratio)
    else:  # a model from outside the registry (a benchmark's peer) trains whole, at one rate
        groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    model = prepare_model(model, device, dtype)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    start_epoch, elapsed_before, best, history = 0, 0.0, -1.0, []
    if resume and (out / "last.pt").is_file():
        ckpt = load_checkpoint(out / "last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, elapsed_before = ckpt["epoch"], ckpt["elapsed_s"]
        best, history = ckpt["best_mean_iou"], ckpt["history"]
        log(f"resuming from {out / 'last.pt'} after epoch {start_epoch}")

    budget_s = cfg.time_budget * 60 if cfg.time_budget else None
    t0 = time.time() - elapsed_before
    log(f"training {cfg.model}/{cfg.backbone} on {len(train_set)} images ({spec.format}: {spec.root}), "
        f"validating on {len(val_set)}; batch {loader.batch_size}, "
        f"{'bf16 autocast' if dtype else 'fp32'} on {device}; "
        + (f"budget {cfg.time_budget:g} min" if budget_s else f"{cfg.epochs} epochs"))

    epoch_s = val_s = 0.0
    steps_per_epoch = len(loader)
    # A time budget replaces the epoch count: training runs until the budget is spent.
    total_epochs = 10**6 if budget_s else cfg.epochs
    def budget_spent() -> bool:  # too little left for a useful (partial) epoch and its validation
        return bool(budget_s) and budget_s - (time.time() - t0) < val_s + 0.25 * epoch_s

    for epoch in range(start_epoch, total_epochs):
        if budget_spent():
            log(f"time budget reached: stopping after epoch {epoch} ({(time.time() - t0) / 60:.1f} min)")
            break

        def progress_at(step: int, epoch=epoch) -> float:
            if budget_s:
                return (time.time() - t0) / budget_s
            return (epoch + step / steps_per_epoch) / cfg.epochs

        if cfg.strategy == "progressive":
            unfrozen = strategies.progressive_unfreeze(model, progress_at(0))
            log(f"progressive: {len(unfrozen)} of {len(model.encoder.stage_prefixes)} encoder stages training")
        deadline = t0 + budget_s - val_s if budget_s else None
        stats = train_one_epoch(model, loader, loss_fn, optimizer, device, dtype, progress_at, base_lrs,
                                cfg.warmup, deadline, desc=f"epoch {epoch + 1}" + ("" if budget_s else f"/{cfg.epochs}"))
        epoch_s = stats["seconds"]
        # validate every val_every epochs, always the first (to learn its cost) and the last
        last = epoch + 1 == total_epochs or budget_spent()
        if (epoch + 1 - start_epoch) % cfg.val_every and not last and val_s:
            log(f"epoch {epoch + 1:3d}  loss {stats['loss']:.4f}  {stats['images_per_s']:.1f} img/s  "
                f"{(time.time() - t0) / 60:.1f} min")
            continue
        v0 = time.time()
        scores = evaluate(model, val_set, device, dtype, cfg.batch_size, cfg.infer_scale).compute(spec.class_names)
        val_s = time.time() - v0

        history.append({"epoch": epoch + 1, "train_loss": stats["loss"], "val_mean_iou": scores["mean_iou"],
                        "val_pixel_accuracy": scores["pixel_accuracy"], "images_per_s": stats["images_per_s"],
                        "lr": optimizer.param_groups[0]["lr"], "elapsed_min": (time.time() - t0) / 60})
        improved = scores["mean_iou"] > best
        best = max(best, scores["mean_iou"])
        ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                "elapsed_s": time.time() - t0, "best_mean_iou": best, "history": history,
                "config": cfg.to_dict(), "class_names": list(spec.class_names), "ignore_index": spec.ignore_index,
                "palette": spec.palette.tolist()}
        save_checkpoint(out / "last.pt", **ckpt)
        if improved:
            save_checkpoint(out / "best.pt", **ckpt)
        plot_curves(history, out / "curves.png")
        (out / "history.json").write_text(json.dumps(history, indent=1))
        log(f"epoch {epoch + 1:3d}  loss {stats['loss']:.4f}  val mIoU {scores['mean_iou']:.4f}"
            f"{' *' if improved else '  '}  {stats['images_per_s']:.1f} img/s  "
            f"{(time.time() - t0) / 60:.1f} min")
    if not history:
        raise PixelwiseError(f"{out}: nothing trained (already at epoch {start_epoch} of {cfg.epochs}?)")
    return {"best_mean_iou": best, "epochs": history[-1]["epoch"], "minutes": (time.time() - t0) / 60,
            "out": str(out), "best_checkpoint": str(out / "best.pt")}
