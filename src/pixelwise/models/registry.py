"""The one registry: architecture name -> builder function."""
from __future__ import annotations

from typing import Callable

from torch import nn

from pixelwise.models.base import SegmentationModel
from pixelwise.models.encoders import ENCODERS, create_encoder
from pixelwise.models.fcn import FCNDecoder
from pixelwise.models.upsample import Upsample

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(MODELS)


def list_backbones() -> list[str]:
    return sorted(ENCODERS)


def create_model(name: str, *, backbone: str = "efficientnet_lite0", num_classes: int, upsample: str | None = None,
                 pretrained: bool = True, backbone_weights: str | None = None) -> nn.Module:
    """Build a registered architecture, e.g. `create_model("fcn8s", backbone="efficientnet_lite0", num_classes=11)`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    encoder = create_encoder(backbone, pretrained=pretrained, weights_path=backbone_weights)
    return MODELS[name](encoder, num_classes, upsample or "transposed")


def _fcn(encoder: nn.Module, num_classes: int, upsample: str, skip_strides: tuple[int, ...]) -> SegmentationModel:
    decoder = FCNDecoder(encoder.out_channels, encoder.strides, num_classes, skip_strides, upsample)
    return SegmentationModel(encoder, decoder, Upsample(num_classes, decoder.output_stride, upsample), num_classes)


@register_model
def fcn32s(encoder, num_classes, upsample):
    return _fcn(encoder, num_classes, upsample, skip_strides=())


@register_model
def fcn16s(encoder, num_classes, upsample):
    return _fcn(encoder, num_classes, upsample, skip_strides=(16,))


@register_model
def fcn8s(encoder, num_classes, upsample):
    return _fcn(encoder, num_classes, upsample, skip_strides=(16, 8))
