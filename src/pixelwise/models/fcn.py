"""Fully convolutional networks: FCN-32s, FCN-16s and FCN-8s.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015.
"""
from __future__ import annotations

import torch
from torch import nn

from pixelwise.models.upsample import Upsample


def score_layer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """1x1 conv to class scores. Zero-initialised as in the paper: a new skip adds nothing at
    first, so a net initialised from a coarser stage predicts exactly what that stage did."""
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FCNDecoder(nn.Module):
    """Scores the stride-32 features, then upsamples 2x and adds the score of each finer skip.

    features (ordered by stride) -> (N, C, H/s, W/s) scores at the finest skip stride s.
    """

    def __init__(self, encoder_channels, encoder_strides, num_classes: int, skip_strides=(16, 8),
                 upsample: str = "transposed"):
        super().__init__()
        # For each stride use the deepest feature at that stride: it has seen the most context.
        last_at = {s: i for i, s in enumerate(encoder_strides)}
        if skip_strides and encoder_strides[-1] <= max(skip_strides):
            raise ValueError(f"an FCN with skips from strides {skip_strides} needs a deeper encoder; this one stops "
                             f"at stride {encoder_strides[-1]}")
        missing = [s for s in skip_strides if s not in last_at]
        if missing:
            raise ValueError(f"encoder has no stride-{missing[0]} feature for an FCN skip (strides: {encoder_strides})")
        self.skip_indices = [last_at[s] for s in skip_strides]
        self.score_deep = score_layer(encoder_channels[-1], num_classes)
        self.score_skips = nn.ModuleList(score_layer(encoder_channels[i], num_classes) for i in self.skip_indices)
        coarse = [encoder_strides[-1], *skip_strides]
        self.upsample_skips = nn.ModuleList(
            Upsample(num_classes, coarse[k] // coarse[k + 1], upsample) for k in range(len(skip_strides)))
        self.output_stride = coarse[-1]
        self.uses_indices = False

    def forward(self, features: list[torch.Tensor], indices=None) -> torch.Tensor:
        scores = self.score_deep(features[-1])
        for index, score_skip, upsample in zip(self.skip_indices, self.score_skips, self.upsample_skips):
            skip = score_skip(features[index])
            scores = upsample(scores, skip.shape[-2:]) + skip
        return scores
