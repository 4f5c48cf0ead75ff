"""The segmentation model: encoder, then decoder, then upsampling to the input size."""
from __future__ import annotations

import torch
from torch import nn


class SegmentationModel(nn.Module):
    """(N, 3, H, W) image in 0..1 -> (N, num_classes, H, W) logits, for any H and W."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, upsample: nn.Module, num_classes: int):
        super().__init__()
        self.encoder, self.decoder, self.upsample = encoder, decoder, upsample
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        scores = self.decoder(features)
        return self.upsample(scores, x.shape[-2:])
