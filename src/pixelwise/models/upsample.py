"""Upsampling operators as swappable modules.

Every operator takes a score map and the exact output size wanted, so callers never
need crop offsets: the size comes from the tensor it must match.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("nearest", "bilinear", "transposed", "unpool")


def transposed_output_size(size: int, stride: int, padding: int, kernel: int, output_padding: int = 0) -> int:
    """Output length of a transposed convolution: (I - 1)·S - 2P + K + output_padding."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def bilinear_kernel(size: int) -> torch.Tensor:
    """(size, size) kernel that makes a stride-`factor` transposed conv do bilinear interpolation,
    with factor = (size + 1) // 2, as in the FCN reference code."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return (ramp[:, None] * ramp[None, :]).float()


def fit_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop (or, never needed in practice, zero-pad) the bottom/right so x has spatial `size`."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    x = x[..., : size[0], : size[1]]
    return F.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))


class Upsample(nn.Module):
    """Upsample a (N, C, h, w) map by `factor` to an exact (H, W).

    - `nearest`, `bilinear`: fixed interpolation.
    - `transposed`: a learnable transposed convolution initialised to bilinear interpolation
      (Long et al. 2015, sec. 3.3); `freeze=True` keeps it fixed. Score maps mix classes
      (C x C kernel); wide feature maps use `depthwise=True`, one kernel a channel.
    - `unpool`: max-unpooling (Badrinarayanan et al. 2017): each value returns to the position
      its encoder max-pool took it from, zeros elsewhere. Needs those `indices`.
    """

    def __init__(self, channels: int, factor: int, mode: str = "transposed", freeze: bool = False,
                 depthwise: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown upsampling mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode, self.factor = mode, factor
        if mode == "transposed" and factor > 1:
            kernel = 2 * factor - factor % 2
            # padding (K - S) / 2 makes the output exactly I·S long
            groups = channels if depthwise else 1
            self.conv = nn.ConvTranspose2d(channels, channels, kernel, stride=factor,
                                           padding=(kernel - factor) // 2, groups=groups, bias=False)
            with torch.no_grad():
                self.conv.weight.zero_()
                # Each channel upsamples only itself at the start; learning may mix them later.
                for c in range(channels):
                    self.conv.weight[c, 0 if depthwise else c] = bilinear_kernel(kernel)
            self.conv.weight.requires_grad_(not freeze)

    def forward(self, x: torch.Tensor, size: tuple[int, int], indices: torch.Tensor | None = None) -> torch.Tensor:
        size = tuple(size)  # no int(): symbolic sizes must stay symbolic for a dynamic-shape ONNX export
        if self.mode == "unpool":
            if indices is None:
                raise ValueError("unpool upsampling needs the indices of the matching encoder max-pool")
            # The scatter F.max_unpool2d performs, written out because ONNX export lacks max_unpool2d:
            # pooling indices are flat positions within each (H, W) plane.
            n, c = x.shape[:2]
            flat = x.new_zeros(n, c, size[0] * size[1]).scatter(2, indices.flatten(2), x.flatten(2))
            return flat.view(n, c, *size)
        if self.mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        if self.mode == "bilinear" or self.factor == 1:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if x.device.type == "cpu" and self.conv.groups == 1 and torch.is_autocast_enabled("cpu"):
            # oneDNN's bf16 transposed convolution over a few score channels is several times slower than
            # its fp32 one (benchmarks/precision.py; figures in docs/deploy.md), and fp32 is exact.
            with torch.autocast("cpu", enabled=False):
                return fit_to(self.conv(x.float()), size)
        return fit_to(self.conv(x), size)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, factor={self.factor}"


def freeze_transposed(model: nn.Module) -> int:
    """Keep every transposed-convolution kernel in `model` at its bilinear initialisation
    (learned upsampling becomes fixed bilinear, as in the SegNet paper's variant). -> kernels frozen."""
    kernels = [m.conv.weight for m in model.modules() if isinstance(m, Upsample) and hasattr(m, "conv")]
    for weight in kernels:
        weight.requires_grad_(False)
    return len(kernels)
