"""A light context decoder: global context on the deepest features, then a top-down path that fuses
the stride-16, stride-8 and stride-4 features.

FCN-8s adds class scores from strides 16 and 8 and stops at stride 8, so a pole two pixels wide
has to survive an 8x upsampling of scores. This decoder follows the real-time designs
(LR-ASPP in MobileNetV3, the SPPM and fusion modules of PP-LiteSeg, the top-down path of FPN):
- the stride-32 features meet their own global average (image-level context) and a dilated
  branch (a wider local view), gated by the global average as in LR-ASPP;
- each finer stride adds its features, projected to `width` channels by a 1x1 convolution, to the
  upsampled coarser map and refines the sum with a depthwise-separable 3x3 convolution;
- scores come out at stride 4, where thin objects still have pixels.
Every operation is a convolution, a global mean or a bilinear resize, so the graph exports to ONNX
for any input size. Auxiliary classifiers on the stride-16 and stride-8 maps give the loss a
deep-supervision signal in training mode; in eval mode, and so in every exported graph, they do not run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def separable(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: a 3x3 convolution's view at about a ninth of its cost."""
    return nn.Sequential(conv_bn_relu(in_channels, in_channels, 3, dilation, groups=in_channels),
                         conv_bn_relu(in_channels, out_channels))


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class GlobalContext(nn.Module):
    """Stride-32 features -> `width` channels that know the whole image.

    local (1x1) + wide (dilated separable 3x3), gated per channel by a sigmoid of the global
    average, plus the global average's own projection broadcast everywhere."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.local = conv_bn_relu(in_channels, width)
        self.wide = separable(in_channels, width, dilation=2)
        # No BatchNorm on the pooled 1x1 map: a batch of one image has one value per channel.
        self.gate = nn.Conv2d(in_channels, width, 1)
        self.image = nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.ReLU(inplace=True))
        self.fuse = conv_bn_relu(width, width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3), keepdim=True)
        return self.fuse((self.local(x) + self.wide(x)) * torch.sigmoid(self.gate(pooled)) + self.image(pooled))


class ContextDecoder(nn.Module):
    """features (ordered by stride) -> (N, num_classes, H/4, W/4) scores (H/s for the finest of `fuse_strides`).

    In training mode `aux_scores` holds, after each forward, the scores of the stride-16 and
    stride-8 maps for the loss to supervise; in eval mode it is empty."""

    def __init__(self, encoder_channels, encoder_strides, num_classes: int, width: int = 96,
                 fuse_strides=(16, 8, 4)):
        super().__init__()
        last_at = {s: i for i, s in enumerate(encoder_strides)}  # the deepest feature at each stride
        missing = [s for s in (*fuse_strides, 32) if s not in last_at]
        if missing:
            raise ValueError(f"the context decoder needs a stride-{missing[0]} feature; this encoder has strides "
                             f"{encoder_strides}")
        self.context = GlobalContext(encoder_channels[last_at[32]], width)
        self.skip_indices = [last_at[s] for s in fuse_strides]
        self.laterals = nn.ModuleList(conv_bn_relu(encoder_channels[i], width) for i in self.skip_indices)
        self.refine = nn.ModuleList(separable(width, width) for _ in fuse_strides)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.aux_classifiers = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for _ in fuse_strides[:-1])
        self.aux_scores: list[torch.Tensor] = []
        self.output_stride = fuse_strides[-1]
        self.uses_indices = False

    def forward(self, features: list[torch.Tensor], indices=None) -> torch.Tensor:
        x = self.context(features[-1])
        maps = []
        for index, lateral, refine in zip(self.skip_indices, self.laterals, self.refine):
            skip = lateral(features[index])
            x = refine(resize_to(x, skip) + skip)
            maps.append(x)
        if self.training or self.aux_scores:  # in eval mode, only to drop the last training step's scores
            self.aux_scores = [head(m) for head, m in zip(self.aux_classifiers, maps)] if self.training else []
        return self.classifier(x)
