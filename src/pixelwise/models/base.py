"""The segmentation model: encoder, then decoder, then upsampling to the input size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationModel(nn.Module):
    """(N, 3, H, W) image in 0..1 -> (N, num_classes, H, W) logits, for any H and W."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, upsample: nn.Module, num_classes: int):
        super().__init__()
        self.encoder, self.decoder, self.upsample = encoder, decoder, upsample
        self.num_classes = num_classes
        self.size_multiple = max(encoder.strides)
        self.aux_logits: list[torch.Tensor] = []

    def train(self, mode: bool = True) -> "SegmentationModel":
        """Like nn.Module.train, but BatchNorm layers of frozen encoder stages stay in eval mode:
        their ImageNet statistics must not drift towards a small dataset's batches."""
        super().train(mode)
        for module in self.modules():
            if getattr(module, "frozen_statistics", False):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Pad to a multiple of the deepest stride. Otherwise odd sizes at some depth shift where
        # "same"-padded strided convs centre their outputs, and the skips no longer line up
        # the way they did on the (multiple-of-32) training crops: on CamVid's 360x480 this
        # alone cost a clear share of mean IoU (docs/models.md).
        pad_h, pad_w = -h % self.size_multiple, -w % self.size_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if self.decoder.uses_indices:  # SegNet-style unpooling needs the encoder's max-pool positions
            features, indices = self.encoder.forward_with_indices(x)
        else:
            features, indices = self.encoder(x), None
        scores = self.decoder(features, indices)
        # Deep supervision: a decoder's auxiliary scores (training mode only), at the output's size, for the loss.
        # Nothing is assigned in eval mode unless stale: an exported graph must not mutate the module.
        if self.training or self.aux_logits:
            self.aux_logits = [F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]
                               for a in getattr(self.decoder, "aux_scores", [])]
        return self.upsample(scores, x.shape[-2:])[..., :h, :w]
