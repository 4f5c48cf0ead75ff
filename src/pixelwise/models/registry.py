"""The one registry: architecture name -> builder function.

A builder takes (backbone, num_classes, upsample, pretrained, backbone_weights) and returns a
`SegmentationModel` assembled from an encoder, a decoder and a final upsampler.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from pixelwise.models.base import SegmentationModel
from pixelwise.models.context import ContextDecoder
from pixelwise.models.encdec import SegNetDecoder, UNetDecoder
from pixelwise.models.encoders import ENCODERS, PlainEncoder, create_encoder
from pixelwise.models.fcn import FCNDecoder
from pixelwise.models.upsample import MODES, Upsample, freeze_transposed

MODELS: dict[str, Callable[..., nn.Module]] = {}
DEFAULT_UPSAMPLE: dict[str, str] = {}


def register_model(default_upsample: str):
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        MODELS[fn.__name__] = fn
        DEFAULT_UPSAMPLE[fn.__name__] = default_upsample
        return fn
    return register


def list_models() -> list[str]:
    return sorted(MODELS)


def list_backbones() -> list[str]:
    return sorted(ENCODERS)


def create_model(name: str, *, backbone: str = "efficientnet_lite0", num_classes: int, upsample: str | None = None,
                 pretrained: bool = True, backbone_weights: str | None = None,
                 freeze_upsample: bool = False) -> SegmentationModel:
    """Build a registered architecture, e.g. `create_model("fcn8s", backbone="efficientnet_lite0", num_classes=11)`.
    `upsample=None` takes the architecture's own default (transposed for FCNs, unpool for SegNet...);
    `freeze_upsample=True` keeps transposed-convolution kernels at their bilinear initialisation."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    upsample = upsample or DEFAULT_UPSAMPLE[name]
    if upsample not in MODES:
        raise ValueError(f"unknown upsampling mode {upsample!r}; choose one of {', '.join(MODES)}")
    if freeze_upsample and upsample != "transposed":
        raise ValueError(f"freeze_upsample applies to transposed upsampling only; {upsample} has no kernel to freeze")
    model = MODELS[name](backbone, num_classes, upsample, pretrained, backbone_weights)
    if freeze_upsample:
        freeze_transposed(model)
    return model


def final_upsample(num_classes: int, stride: int, upsample: str) -> Upsample:
    # Score maps have no pooling indices of their own: after an unpooling decoder the last
    # step (if any is left) is bilinear.
    return Upsample(num_classes, stride, "bilinear" if upsample == "unpool" else upsample)


def _fcn(backbone, num_classes, upsample, pretrained, weights_path, skip_strides):
    if upsample == "unpool":
        raise ValueError("FCNs upsample class-score maps, which no max-pool produced, so they have no pooling "
                         "indices to unpool with; use nearest, bilinear or transposed (or the segnet/unet models)")
    encoder = create_encoder(backbone, pretrained, weights_path, with_head=True)
    decoder = FCNDecoder(encoder.out_channels, encoder.strides, num_classes, skip_strides, upsample)
    return SegmentationModel(encoder, decoder, final_upsample(num_classes, decoder.output_stride, upsample), num_classes)


@register_model("transposed")
def fcn32s(backbone, num_classes, upsample, pretrained, weights_path):
    """FCN-32s: score the stride-32 features and upsample 32x in one step."""
    return _fcn(backbone, num_classes, upsample, pretrained, weights_path, skip_strides=())


@register_model("transposed")
def fcn16s(backbone, num_classes, upsample, pretrained, weights_path):
    """FCN-16s: adds the stride-16 score before the final 16x upsampling."""
    return _fcn(backbone, num_classes, upsample, pretrained, weights_path, skip_strides=(16,))


@register_model("transposed")
def fcn8s(backbone, num_classes, upsample, pretrained, weights_path):
    """FCN-8s: adds the stride-16 and stride-8 scores before the final 8x upsampling."""
    return _fcn(backbone, num_classes, upsample, pretrained, weights_path, skip_strides=(16, 8))


def _hourglass(decoder_cls, backbone, num_classes, upsample, pretrained, weights_path):
    encoder = create_encoder(backbone, pretrained, weights_path, with_head=False)
    if upsample == "unpool" and not encoder.has_pool_indices:
        pooling = ", ".join(sorted(n for n, cls in ENCODERS.items() if cls.has_pool_indices))
        raise ValueError(f"unpool needs an encoder that downsamples by max-pooling and records the indices "
                         f"({pooling}); {backbone} downsamples with strided convolutions. Use nearest, bilinear "
                         "or transposed with this backbone")
    decoder = decoder_cls(encoder.out_channels, encoder.strides, num_classes, upsample,
                          pooled=encoder.has_pool_indices)
    return SegmentationModel(encoder, decoder, final_upsample(num_classes, decoder.output_stride, upsample), num_classes)


@register_model("unpool")
def segnet(backbone, num_classes, upsample, pretrained, weights_path):
    """SegNet-style hourglass: a mirrored decoder, no skip features; unpooling with vgg16."""
    return _hourglass(SegNetDecoder, backbone, num_classes, upsample, pretrained, weights_path)


@register_model("bilinear")
def unet(backbone, num_classes, upsample, pretrained, weights_path):
    """U-Net-style hourglass: each decoder stage concatenates the encoder feature of its stride."""
    return _hourglass(UNetDecoder, backbone, num_classes, upsample, pretrained, weights_path)


@register_model("bilinear")
def context_fpn(backbone, num_classes, upsample, pretrained, weights_path):
    """Global context on the stride-32 features, then a light top-down path fusing strides 16, 8 and 4;
    auxiliary heads on strides 16 and 8 while training."""
    if upsample == "unpool":
        raise ValueError("context_fpn upsamples feature maps that no max-pool produced; use nearest, bilinear or "
                         "transposed")
    encoder = create_encoder(backbone, pretrained, weights_path, with_head=True)
    decoder = ContextDecoder(encoder.out_channels, encoder.strides, num_classes)
    return SegmentationModel(encoder, decoder, final_upsample(num_classes, decoder.output_stride, upsample), num_classes)


@register_model("bilinear")
def fcn_vanilla(backbone, num_classes, upsample, pretrained, weights_path):
    """No downsampling at all (the backbone is not used): the baseline that shows why others downsample."""
    if upsample == "unpool":
        raise ValueError("fcn_vanilla never pools, so there is nothing to unpool")
    encoder = PlainEncoder()
    decoder = FCNDecoder(encoder.out_channels, encoder.strides, num_classes, skip_strides=(), upsample=upsample)
    return SegmentationModel(encoder, decoder, Upsample(num_classes, 1, "bilinear"), num_classes)
