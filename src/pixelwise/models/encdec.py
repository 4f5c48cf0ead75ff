"""Encoder-decoder ("hourglass") networks: SegNet-style and U-Net-style decoders.

SegNet: Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017. U-Net: Ronneberger, Fischer & Brox,
"U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.
"""
from __future__ import annotations

import torch
from torch import nn

from pixelwise.models.upsample import Upsample


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


def decoder_path(encoder_strides) -> list[tuple[int, int]]:
    """The (feature index, stride) stages a decoder climbs back through, deepest first.
    Of several maps at one stride (a classifier head at stride 32) only the deepest is used."""
    last_at = {s: i for i, s in enumerate(encoder_strides)}
    return [(last_at[s], s) for s in sorted(last_at, reverse=True)]


class SegNetDecoder(nn.Module):
    """Mirror of the encoder without skip features: at each stage, upsample 2x, then two 3x3
    conv-BN-ReLU. Behind a max-pooling encoder (`pooled=True`) the decoder climbs all the way
    back to stride 1, using the sizes the pools recorded, and in `unpool` mode it upsamples by
    max-unpooling with the pools' own indices; the other modes get the very same stages, so
    the upsampling operator is the only difference between them.

    features -> (N, num_classes, H/s, W/s) scores, s = `output_stride`."""

    def __init__(self, encoder_channels, encoder_strides, num_classes: int, upsample: str = "unpool",
                 pooled: bool = False):
        super().__init__()
        self.uses_indices = pooled
        self.unpool = upsample == "unpool"
        self.path = decoder_path(encoder_strides)
        stages = [(encoder_channels[i], encoder_channels[j], s // s_next)
                  for (i, s), (j, s_next) in zip(self.path, self.path[1:])]
        if pooled:  # the features are post-pool: one more stage undoes the first pool
            last, stride = self.path[-1]
            stages.append((encoder_channels[last], encoder_channels[last], stride))
        self.upsamples = nn.ModuleList(Upsample(c_in, f, upsample, depthwise=True) for c_in, _, f in stages)
        self.blocks = nn.ModuleList(conv_block(c_in, c_out) for c_in, c_out, _ in stages)
        self.score = nn.Conv2d(stages[-1][1], num_classes, 1)
        self.output_stride = 1 if pooled else self.path[-1][1]

    def forward(self, features: list[torch.Tensor], indices=None) -> torch.Tensor:
        x = features[self.path[0][0]]
        if indices is not None:  # deepest pool first: (indices, size before pooling)
            targets = [(size, idx if self.unpool else None) for idx, size in reversed(indices)]
        else:
            targets = [(features[j].shape[-2:], None) for j, _ in self.path[1:]]
        for (size, idx), upsample, block in zip(targets, self.upsamples, self.blocks):
            x = block(upsample(x, size, idx))
        return self.score(x)


class UNetDecoder(nn.Module):
    """At each stage: upsample the deeper map to the skip's size, concatenate the encoder's
    skip feature, then two 3x3 conv-BN-ReLU. Widths mirror the encoder's, read from it.

    features -> (N, num_classes, H/s, W/s) scores at the shallowest feature's stride s."""

    def __init__(self, encoder_channels, encoder_strides, num_classes: int, upsample: str = "bilinear",
                 pooled: bool = False):
        super().__init__()
        self.uses_indices = upsample == "unpool"
        self.path = decoder_path(encoder_strides)
        self.upsamples, self.blocks = nn.ModuleList(), nn.ModuleList()
        channels = encoder_channels[self.path[0][0]]
        for (i, s), (j, s_next) in zip(self.path, self.path[1:]):
            self.upsamples.append(Upsample(channels, s // s_next, upsample, depthwise=True))
            self.blocks.append(conv_block(channels + encoder_channels[j], encoder_channels[j]))
            channels = encoder_channels[j]
        self.score = nn.Conv2d(channels, num_classes, 1)
        self.output_stride = self.path[-1][1]

    def forward(self, features: list[torch.Tensor], indices=None) -> torch.Tensor:
        x = features[self.path[0][0]]
        # pooling indices, deepest first; pool k's indices take stride 2^k back to 2^(k-1)
        pooled = [idx for idx, _ in reversed(indices)] if self.uses_indices else [None] * len(self.blocks)
        for (j, _), upsample, block, idx in zip(self.path[1:], self.upsamples, self.blocks, pooled):
            skip = features[j]
            x = block(torch.cat([upsample(x, skip.shape[-2:], idx), skip], dim=1))
        return self.score(x)
