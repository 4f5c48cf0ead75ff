"""Backbones behind one contract.

An encoder maps a (N, 3, H, W) image in 0..1 to a list of feature maps ordered by stride,
and exposes `out_channels` and `strides` so heads never hard-code a width. Encoders whose
downsampling is max-pooling can also hand over the pooling indices, explicitly, through
`forward_with_indices` (for SegNet-style unpooling). Input normalisation lives here because
it belongs to the pretrained weights.
"""
from __future__ import annotations

import torch
from torch import nn

from pixelwise.errors import PixelwiseError
from pixelwise.models import weights

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """Shared plumbing: normalisation buffers and the stride/channel bookkeeping."""

    out_channels: list[int]
    strides: list[int]
    has_pool_indices = False

    def set_normalisation(self, mean, std) -> None:
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    # Parameter-name prefixes of each stage, shallow to deep: what freezing strategies unfreeze.
    stage_prefixes: list[tuple[str, ...]]

    def stage_of(self, parameter_name: str) -> int:
        """Index of the stage a parameter (named relative to the encoder) belongs to."""
        for index, prefixes in enumerate(self.stage_prefixes):
            if any(parameter_name == p or parameter_name.startswith(p + ".") for p in prefixes):
                return index
        raise ValueError(f"encoder parameter {parameter_name!r} belongs to no known stage of "
                         f"{type(self).__name__}; its stage table needs updating")

    def probe_channels(self) -> None:
        """Read channel counts and strides from one dry run, so no width is written by hand."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            feats = self(torch.zeros(1, 3, 64, 64))
        self.train(was_training)
        self.out_channels = [f.shape[1] for f in feats]
        self.strides = [64 // f.shape[-1] for f in feats]


# ---------------------------------------------------------------- timm (EfficientNet-Lite)

# pixelwise name -> timm name. The tf_ variants match the TensorFlow-trained Lite weights:
# TF "same" padding and BatchNorm epsilon 1e-3.
TIMM_BACKBONES = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}


class TimmEncoder(Encoder):
    """A timm classifier as a feature pyramid (`forward_intermediates`).

    With `with_head=True` the classifier's own pre-pooling 1x1 conv (1280 channels for the
    EfficientNets) is kept as the last stride-32 feature: it is the pretrained analogue of
    FCN's convolutionalised fc7, while only the 1000-way classifier is discarded.
    """

    def __init__(self, backbone: str, pretrained: bool = True, weights_path: str | None = None,
                 with_head: bool = True):
        super().__init__()
        import timm  # slow to import (it pulls in torchvision): paid when an encoder is built, not on import

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
        self.set_normalisation(cfg["mean"], cfg["std"])
        # a stage runs up to the block that ends a stride; the stem joins the first, the head the last
        ends = [int(info[i]["module"].split(".")[1]) for i in range(len(info))]
        blocks = [tuple(f"model.blocks.{b}" for b in range(start, end + 1))
                  for start, end in zip([0] + [e + 1 for e in ends[:-1]], ends)]
        blocks[0] = ("model.conv_stem", "model.bn1", *blocks[0])
        blocks[-1] = (*blocks[-1], "model.conv_head", "model.bn2")
        self.stage_prefixes = blocks

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        head, features = self.model.forward_intermediates(self.normalise(x), indices=self.stage_indices)
        return features + [head] if self.with_head else features


# ---------------------------------------------------------------- torchvision (ResNet, MobileNetV2)

# backbone -> the graph nodes whose outputs are the pyramid (strides 4, 8, 16, 32).
TORCHVISION_NODES = {
    "resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "resnet34": ["layer1", "layer2", "layer3", "layer4"],
    "resnet50": ["layer1", "layer2", "layer3", "layer4"],
    # features.18 is MobileNetV2's 1280-channel 1x1 conv before pooling: kept, like fc7 in FCN.
    "mobilenet_v2": ["features.3", "features.6", "features.13", "features.17", "features.18"],
}


_RESNET_STAGES = [("body.conv1", "body.bn1", "body.layer1"), ("body.layer2",), ("body.layer3",), ("body.layer4",)]
TORCHVISION_STAGES = {
    "resnet": _RESNET_STAGES,
    "mobilenet_v2": [tuple(f"body.features.{i}" for i in r) for r in (range(0, 4), range(4, 7), range(7, 14),
                                                                      range(14, 19))],
}


class TorchvisionEncoder(Encoder):
    """A torchvision classifier cut into a pyramid with `create_feature_extractor`."""

    def __init__(self, backbone: str, pretrained: bool = True, weights_path: str | None = None,
                 with_head: bool = True):
        super().__init__()
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor

        model = getattr(torchvision.models, backbone)(weights=None)
        if weights_path or pretrained:
            weights.load_by_name(model, *weights.torchvision_state_dict(backbone, weights_path))
        nodes = TORCHVISION_NODES[backbone][: None if with_head else 4]
        self.body = create_feature_extractor(model, return_nodes={n: str(i) for i, n in enumerate(nodes)})
        self.set_normalisation(IMAGENET_MEAN, IMAGENET_STD)
        self.probe_channels()
        self.stage_prefixes = TORCHVISION_STAGES[backbone.rstrip("0123456789") if backbone.startswith("resnet")
                                                 else backbone]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(self.normalise(x)).values())


# ---------------------------------------------------------------- max-pooling encoders (unpool indices)

class PoolingEncoder(Encoder):
    """Encoders whose `stages` each end in a 2x2 max-pool that records where its maxima were."""

    has_pool_indices = True
    stages: nn.ModuleList
    pool: nn.MaxPool2d

    def pooled_stages(self, x: torch.Tensor):
        """-> (post-pool features ordered by stride, [(indices, size before pooling) per pool])."""
        features, indices = [], []
        for stage in self.stages:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = self.pool(x)
            features.append(x)
            indices.append((idx, size))
        return features, indices

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_with_indices(x)[0]



class VGGEncoder(PoolingEncoder):
    """torchvision's VGG16 run stage by stage, so each max-pool can also return its indices.

    Features: pool1..pool5 (strides 2..32), then fc7 at stride 32. fc6/fc7 are the classifier's
    dense layers turned into convolutions ("convolutionalisation", Long et al. 2015, sec. 3.1):
    fc6's 25088x4096 matrix is a 7x7 conv over pool5's 512 channels, fc7 a 1x1 conv.
    """

    def __init__(self, backbone: str = "vgg16", pretrained: bool = True, weights_path: str | None = None,
                 with_head: bool = True):
        super().__init__()
        import torchvision

        model = torchvision.models.vgg16(weights=None)
        if weights_path or pretrained:
            weights.load_by_name(model, *weights.torchvision_state_dict(backbone, weights_path))
        self.stages = nn.ModuleList()
        stage = []
        for layer in model.features:
            if isinstance(layer, nn.MaxPool2d):
                self.stages.append(nn.Sequential(*stage))
                stage = []
            else:
                stage.append(layer)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.with_fc = with_head
        channels = [stage[-2].out_channels for stage in self.stages]
        if self.with_fc:
            fc6, fc7 = model.classifier[0], model.classifier[3]
            self.fc6 = nn.Conv2d(512, 4096, 7, padding=3)
            self.fc7 = nn.Conv2d(4096, 4096, 1)
            with torch.no_grad():
                self.fc6.weight.copy_(fc6.weight.view(4096, 512, 7, 7))
                self.fc6.bias.copy_(fc6.bias)
                self.fc7.weight.copy_(fc7.weight.view(4096, 4096, 1, 1))
                self.fc7.bias.copy_(fc7.bias)
            self.fc_act = nn.Sequential(nn.ReLU(inplace=True), nn.Dropout2d(0.5))
        self.out_channels = channels + ([4096] if self.with_fc else [])
        self.strides = [2, 4, 8, 16, 32] + ([32] if self.with_fc else [])
        self.set_normalisation(IMAGENET_MEAN, IMAGENET_STD)
        self.stage_prefixes = [(f"stages.{i}",) for i in range(5)]
        if self.with_fc:
            self.stage_prefixes[-1] += ("fc6", "fc7")

    def forward_with_indices(self, x: torch.Tensor):
        features, indices = self.pooled_stages(self.normalise(x))
        if self.with_fc:
            features.append(self.fc_act(self.fc7(self.fc_act(self.fc6(features[-1])))))
        return features, indices


# ---------------------------------------------------------------- no downsampling at all

class PlainEncoder(Encoder):
    """The "vanilla" fully convolutional net: 3x3 conv-BN-ReLU layers at full resolution, stride 1.
    Its receptive field grows by only 2 pixels a layer, and every layer's activations are full
    size: this is the baseline that shows why segmentation networks downsample."""

    def __init__(self, depth: int = 8, width: int = 64):
        super().__init__()
        layers, channels = [], 3
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.out_channels, self.strides = [width], [1]
        self.depth, self.width = depth, width
        self.set_normalisation(IMAGENET_MEAN, IMAGENET_STD)
        self.stage_prefixes = [("body",)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.body(self.normalise(x))]


class SegNetBasicEncoder(PoolingEncoder):
    """SegNet-Basic's encoder (Badrinarayanan et al. 2017, sec. 4): four stages of 7x7 conv (64
    channels)-BN-ReLU then a 2x2 max-pool that records its indices. Small enough to train from
    scratch on a CPU, which is how the paper compared its decoder variants."""

    def __init__(self, backbone: str = "segnet_basic", pretrained: bool = False, weights_path: str | None = None,
                 with_head: bool = False, width: int = 64, depth: int = 4):
        super().__init__()
        if pretrained and not weights_path:
            raise PixelwiseError("segnet_basic has no ImageNet weights: it is trained from scratch; "
                                 "pass --no-pretrained (or pretrained=False)")
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3 if i == 0 else width, width, 7, padding=3, bias=False), nn.BatchNorm2d(width),
                          nn.ReLU(inplace=True)) for i in range(depth))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.out_channels, self.strides = [width] * depth, [2 ** (i + 1) for i in range(depth)]
        self.set_normalisation(IMAGENET_MEAN, IMAGENET_STD)
        self.stage_prefixes = [(f"stages.{i}",) for i in range(depth)]
        if weights_path:
            self.load_state_dict(weights.read_state_dict(weights_path))

    def forward_with_indices(self, x: torch.Tensor):
        return self.pooled_stages(self.normalise(x))


ENCODERS = {**{n: TimmEncoder for n in TIMM_BACKBONES}, **{n: TorchvisionEncoder for n in TORCHVISION_NODES},
            "vgg16": VGGEncoder, "segnet_basic": SegNetBasicEncoder}


def create_encoder(backbone: str, pretrained: bool = True, weights_path: str | None = None,
                   with_head: bool = True) -> Encoder:
    """`with_head` keeps the classifier's convolutionalised head (fc6/fc7, or the 1280-channel
    1x1 conv) as the last stride-32 feature: FCNs score it, hourglass decoders skip it."""
    if backbone not in ENCODERS:
        raise PixelwiseError(f"unknown backbone {backbone!r}; choose one of {', '.join(sorted(ENCODERS))}")
    return ENCODERS[backbone](backbone, pretrained=pretrained, weights_path=weights_path, with_head=with_head)
