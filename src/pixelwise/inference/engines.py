"""Engines: what turns a batch of images into logits. Every engine has the same one method,

    engine.logits(images)   (N, 3, H, W) float in 0..1  ->  (N, C, H, W) float32 logits on the CPU,

at the input's size, with the checkpoint's inference scale applied inside. Predictor, tiling and the
folder pipeline work on that contract alone, so an exported model runs wherever eager PyTorch does.
"""
from __future__ import annotations

import torch

from pixelwise.runtime import inference_setup, predict_logits


class TorchEngine:
    """Eager PyTorch: the model on a device, bf16 autocast + channels_last where the hardware has native bf16."""
    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "auto", precision: str = "auto", scale: float = 1.0):
        self.model, self.device, self.dtype = inference_setup(model, device, precision)
        self.scale = scale

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.model, images, self.device, self.dtype, self.scale).cpu()
