"""Where and how a model runs: device, precision, autocast, and logits at an inference scale.

Shared by training and inference, so a predictor needs nothing from the trainer.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from pixelwise.errors import PixelwiseError


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
