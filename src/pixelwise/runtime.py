"""Where and how a model runs: device, precision, autocast, logits at an inference scale, and the model on
a device as an engine (`TorchEngine`).

Shared by training and inference, so a predictor needs nothing from the trainer.
"""
from __future__ import annotations

import contextlib
import os
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import PixelwiseError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PixelwiseError("--device cuda was asked for, but no CUDA GPU is visible; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise PixelwiseError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


# Overrides the CPU's detected native precisions: a comma-separated subset of bf16,fp16, or "none" (unset or
# empty: detect). Tests set it to run each side of every precision choice on any machine, child processes
# included; a user can set it where detection is wrong (a hypervisor that hides a CPU flag).
NATIVE_PRECISIONS_ENV = "PIXELWISE_NATIVE_PRECISIONS"


def native_cpu_precisions() -> frozenset[str]:
    """The reduced precisions this CPU computes natively, as a subset of {"bf16", "fp16"}."""
    forced = os.environ.get(NATIVE_PRECISIONS_ENV, "").strip()
    if forced:
        names = {n.strip() for n in forced.lower().split(",") if n.strip()} - {"none"}
        if not names <= {"bf16", "fp16"}:
            raise PixelwiseError(f"{NATIVE_PRECISIONS_ENV}={forced!r}: use a comma-separated subset of "
                                 "bf16,fp16, or none")
        return frozenset(names)
    found = set()
    for name, probe in (("bf16", "_is_mkldnn_bf16_supported"), ("fp16", "_is_mkldnn_fp16_supported")):
        try:
            if getattr(torch.ops.mkldnn, probe)():
                found.add(name)
        except (AttributeError, RuntimeError):
            pass
    return frozenset(found)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16/AMX). Without them bf16 autocast is emulated and slower than fp32."""
    return "bf16" in native_cpu_precisions()


def cpu_has_fp16() -> bool:
    """Native fp16 arithmetic (AVX512-FP16/AMX-FP16, e.g. Intel Sapphire Rapids on): fp16 autocast runs near bf16's speed."""
    return "fp16" in native_cpu_precisions()


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device, exact: bool = False) -> torch.dtype | None:
    """-> autocast dtype, or None for plain fp32.

    `auto` is bf16 where the hardware has it natively: the fastest, for training and `--profile fast`.
    With `exact` (`--profile accurate`), `auto` must keep the masks of fp32: bf16's 8-bit mantissa flips
    pixels near a class boundary, fp16's 11 bits far fewer (benchmarks/engines.py; figures in
    docs/deploy.md). So fp16 where it is native (every CUDA GPU; AVX512-FP16 CPUs, where it runs
    well ahead of fp32 at the accurate profile's scale), else fp32."""
    if precision not in PRECISIONS:
        raise PixelwiseError(f"unknown precision {precision!r}; choose " + ", ".join(PRECISIONS))
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    cuda = device.type == "cuda"
    if precision == "auto" and exact:
        return torch.float16 if (cuda or cpu_has_fp16()) else None
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if (precision == "bf16" or cpu_has_bf16()) else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def prepare_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> torch.nn.Module:
    model = model.to(device)
    # channels_last lets oneDNN pick its fast bf16 convolution kernels; it is what makes
    # autocast pay off on CPU.
    return model.to(memory_format=torch.channels_last) if dtype is not None else model


def _depthwise_forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return type(conv).forward(conv, x.float())
    return type(conv).forward(conv, x)


def depthwise_fp32_in_training(model: nn.Module) -> int:
    """Make the depthwise convolutions of `model` run in fp32 under CPU autocast while gradients are on.

    oneDNN's bf16 depthwise kernels, forward and backward, are several times slower than its fp32 ones
    (depthwise layers are memory-bound, and AMX speeds up only dense matmuls), while dense
    convolutions gain from bf16: a training step this way is faster than in bf16 throughout and than
    in fp32 throughout (benchmarks/precision.py; figures in docs/training.md). Inference keeps bf16:
    at batch 1 the casts cost more than the kernels save. The weights and state_dict are unchanged.
    -> how many convolutions."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels]
    for conv in convs:
        conv.forward = types.MethodType(_depthwise_forward, conv)
    return len(convs)


def inference_setup(model: torch.nn.Module, device: str = "auto", precision: str = "auto", exact: bool = False):
    """-> (model on the device in eval mode, device, autocast dtype or None), for evaluation and prediction.
    `exact`: see `resolve_precision`."""
    device_ = resolve_device(device)
    dtype = resolve_precision(precision, device_, exact)
    return prepare_model(model, device_, dtype).eval(), device_, dtype


def to_device(images: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if dtype is not None else images


@torch.no_grad()
def predict_logits(model, images: torch.Tensor, device, dtype, scale: float = 1.0, flip: bool = False) -> torch.Tensor:
    """(N, 3, H, W) in 0..1 -> (N, C, H, W) float logits. With `scale` != 1 the network sees the
    images resized by that factor (thin objects cover more pixels at stride 8) and its logits
    are resized back, so the output always matches the input. With `flip` the logits are the mean of
    the images' and their mirror images' (mirrored back): test-time augmentation, in one batch of 2N."""
    size, n = images.shape[-2:], images.shape[0]
    if scale != 1.0:
        images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False,
                               antialias=scale < 1)
    if flip:
        images = torch.cat([images, images.flip(-1)])
    with autocast(device, dtype):
        logits = model(to_device(images, device, dtype)).float()
    if dtype == torch.float16 and not torch.isfinite(logits).all():  # fp16 overflows past 65504: redo in fp32
        logits = model(to_device(images, device, None).float()).float()
    if flip:
        logits = (logits[:n] + logits[n:].flip(-1)) / 2
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


def physical_cores() -> int:
    """Cores this process may run on, counting hyperthread siblings once: a second thread on the
    same core only competes for the same vector units in convolution kernels."""
    try:
        cpus = os.sched_getaffinity(0)
        return len({Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
                    for c in cpus})
    except (AttributeError, OSError):  # not Linux: no topology files
        return os.cpu_count() or 1


class TorchEngine:
    """Eager PyTorch, the one model-on-a-device class of training and inference alike: the model on a device, in reduced precision + channels_last where the hardware has it
    natively (`exact`: precision that keeps fp32's masks, see `runtime.resolve_precision`).
    One stream: torch's intra-op threads are per process, so concurrent calls would only fight over them."""
    name = "torch"
    streams = 1
    on_cpu = True  # the engine contract: logits come back on the CPU

    def __init__(self, model: torch.nn.Module, device: str = "auto", precision: str = "auto", scale: float = 1.0,
                 meta: dict | None = None, exact: bool = True):
        self.model, self.device, self.dtype = inference_setup(model, device, precision, exact)
        self.scale = scale
        self.meta = meta
        self.flip = False  # flip test-time augmentation (see predict_logits)

    @classmethod
    def prepared(cls, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
                 scale: float = 1.0) -> "TorchEngine":
        """A model already on its device at its precision (training's, validated as it trains)."""
        engine = cls.__new__(cls)
        engine.model, engine.device, engine.dtype, engine.scale, engine.meta = model, device, dtype, scale, None
        engine.flip = False
        engine.on_cpu = False  # validation takes the argmax where the logits are: no copy of them to the host
        return engine

    @property
    def gpu(self) -> bool:
        """Whether the model runs on a GPU, where a batch of images is cheaper per image than one."""
        return self.device.type == "cuda"

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        logits = predict_logits(self.model, images, self.device, self.dtype, self.scale, self.flip)
        return logits.cpu() if self.on_cpu else logits
