"""Backbones behind one contract.

An encoder maps a (N, 3, H, W) image in 0..1 to a list of feature maps ordered by
stride, and exposes `out_channels` and `strides` so heads never hard-code a width.
Input normalisation lives here because it belongs to the pretrained weights.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

from pixelwise.errors import PixelwiseError
from pixelwise.models import weights

# pixelwise name -> timm name. The tf_ variants match the TensorFlow-trained Lite weights:
# TF "same" padding and BatchNorm epsilon 1e-3.
TIMM_BACKBONES = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}


class TimmEncoder(nn.Module):
    """A timm classifier as a feature pyramid (`forward_intermediates`).

    With `with_head=True` the classifier's own pre-pooling 1x1 conv (1280 channels for the
    EfficientNets) is kept as the last stride-32 feature: it is the pretrained analogue of
    FCN's convolutionalised fc7, while only the 1000-way classifier is discarded.
    """

    def __init__(self, backbone: str, pretrained: bool = True, weights_path: str | None = None,
                 with_head: bool = True):
        super().__init__()
        if backbone not in TIMM_BACKBONES:
            raise PixelwiseError(f"unknown backbone {backbone!r}; choose one of {', '.join(TIMM_BACKBONES)}")
        self.backbone = backbone
        self.model = timm.create_model(TIMM_BACKBONES[backbone], pretrained=False)
        if weights_path or pretrained:
            path = weights_path or weights.offline_weight_file(backbone)
            weights.load_by_order(self.model, weights.read_state_dict(path), str(path))
        self.model.reset_classifier(0)
        info = self.model.feature_info
        self.stage_indices = list(range(1, len(info)))  # drop the stride-2 stem: too costly to use
        self.out_channels = [info[i]["num_chs"] for i in self.stage_indices]
        self.strides = [info[i]["reduction"] for i in self.stage_indices]
        self.with_head = with_head and self.model.num_features != self.out_channels[-1]
        if self.with_head:
            self.out_channels.append(self.model.num_features)
            self.strides.append(self.strides[-1])
        cfg = self.model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        head, features = self.model.forward_intermediates(x, indices=self.stage_indices)
        return features + [head] if self.with_head else features


ENCODERS = {name: TimmEncoder for name in TIMM_BACKBONES}


def create_encoder(backbone: str, pretrained: bool = True, weights_path: str | None = None) -> nn.Module:
    if backbone not in ENCODERS:
        raise PixelwiseError(f"unknown backbone {backbone!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[backbone](backbone, pretrained=pretrained, weights_path=weights_path)
