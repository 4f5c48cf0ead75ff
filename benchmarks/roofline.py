"""This machine's ceilings, and where a model sits under them (the roofline model: Williams, Waterman
and Patterson, "Roofline: an insightful visual performance model", CACM 2009).

A forward pass doing F FLOPs while moving B bytes between memory and the cores cannot run faster than
min(peak FLOP/s, F/B x memory bandwidth). Models whose intensity F/B is low, such as the depthwise
convolutions of MobileNet and EfficientNet, meet the bandwidth slope before the compute peak: they
are memory-bound, and their share of the compute peak says little about how well they run.

- `measure_peaks`: a large matmul and a large 3x3 convolution, fp32 and bf16 (and an int8 matmul),
  timed here, in GFLOP/s: what this CPU really does, not what its datasheet promises.
- `bandwidth_gbs`: a copy of a tensor far larger than the caches.
- `forward_traffic`: the bytes one forward pass moves, estimated from its leaf modules.
- `place`: achieved GFLOP/s against both ceilings.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

# Element sizes of what a setting computes in. int8 graphs keep some tensors in float (the
# quantise/dequantise edges), so a quarter of the fp32 traffic is a rough estimate.
BYTES_PER_ELEMENT = {"fp32": 4, "bf16": 2, "int8": 1}


def best_seconds(fn, repeats: int) -> float:
    """Fastest of `repeats` calls after one untimed call (which picks kernels and touches memory)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def matmul_gflops(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    return 2 * n**3 / best_seconds(lambda: torch.matmul(a, b), repeats) / 1e9


@torch.inference_mode()
def int8_matmul_gops(n: int, repeats: int) -> float | None:
    """int8 x int8 -> int32, what quantised convolutions reduce to. None where torch has no CPU kernel."""
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    try:
        return 2 * n**3 / best_seconds(lambda: torch._int_mm(a, b), repeats) / 1e9
    except (RuntimeError, AttributeError):
        return None


@torch.inference_mode()
def conv_gflops(precision: str, side: int, repeats: int) -> float:
    """A 256 -> 256 channel 3x3 convolution, the densest layer a segmentation network has. bf16 runs
    the way the benchmark runs bf16 models: channels_last under autocast."""
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).eval()
    x = torch.rand(1, 256, side, side)
    if precision == "fp32":
        fn = lambda: conv(x)  # noqa: E731
    else:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

        def fn():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return conv(x)
    return 2 * 256 * 256 * 9 * side * side / best_seconds(fn, repeats) / 1e9


def measure_peaks(quick: bool = False) -> dict:
    """GFLOP/s of a 4096^2 matmul and a 1x256x112x112 convolution (smaller with `quick`), fp32 and bf16,
    best of a few; int8 matmul in GOP/s. `peak_*`: the larger of matmul and conv, the machine's peak."""
    n, side, repeats = (2048, 56, 2) if quick else (4096, 112, 3)
    peak = {"matmul_fp32_gflops": matmul_gflops(torch.float32, n, repeats),
            "matmul_bf16_gflops": matmul_gflops(torch.bfloat16, n, repeats),
            "conv_fp32_gflops": conv_gflops("fp32", side, repeats),
            "conv_bf16_gflops": conv_gflops("bf16", side, repeats),
            "matmul_int8_gops": int8_matmul_gops(n, repeats)}
    peak = {key: None if value is None else round(value, 1) for key, value in peak.items()}
    peak["shapes"] = f"matmul {n}x{n}x{n}; conv 1x256x{side}x{side} -> 256 channels, 3x3"
    return peak


def compute_ceilings(peak: dict, precision: str) -> tuple[float, float]:
    """-> (machine peak: the larger of matmul and conv, roofline ceiling: the conv peak) in GFLOP/s.
    int8 has no conv figure: its matmul stands for both."""
    if precision == "int8" and peak.get("matmul_int8_gops"):
        return peak["matmul_int8_gops"], peak["matmul_int8_gops"]
    precision = "bf16" if precision == "bf16" else "fp32"
    conv = peak[f"conv_{precision}_gflops"]
    return max(conv, peak[f"matmul_{precision}_gflops"]), conv


@torch.inference_mode()
def bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """Main-memory bandwidth: bytes read plus bytes written by a copy of `megabytes`, far beyond the caches."""
    source = torch.rand(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    seconds = best_seconds(lambda: target.copy_(source), repeats)
    return round(2 * source.numel() * 4 / seconds / 1e9, 1)


@dataclass
class Traffic:
    """Bytes one forward pass on one image moves: feature maps (scale with the batch) and parameters (do not)."""
    activation_bytes: int
    parameter_bytes: int
    largest_tensor_bytes: int  # the biggest single feature map: compared with cache sizes to explain knees

    def total(self, batch: int) -> int:
        return batch * self.activation_bytes + self.parameter_bytes


def tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


# At inference these return their input or a view of it: no bytes move.
NO_WORK = (nn.Identity, nn.Dropout, nn.Flatten)


def does_work(module: nn.Module) -> bool:
    """Leaves, and modules that compute with parameters of their own besides their children (timm's
    BatchNormAct2d runs its BatchNorm itself and its activation as a child)."""
    if isinstance(module, NO_WORK):
        return False
    return not any(True for _ in module.children()) or any(True for _ in module.parameters(recurse=False))


def is_elementwise(module: nn.Module, inputs, output) -> bool:
    """BatchNorm, activations, dropout: no weight matrix, output shaped as the input. Graph runtimes
    fold these into the convolution before them, so their tensors never travel on their own."""
    if any(p.dim() >= 2 for p in module.parameters(recurse=False)):
        return False
    first_in, first_out = next(tensors_in(inputs), None), next(tensors_in(output), None)
    return first_in is not None and first_out is not None and first_in.shape == first_out.shape


@torch.inference_mode()
def forward_traffic(network: nn.Module, size: tuple[int, int], precision: str, fused: bool = False) -> Traffic:
    """Estimate by running one (1, 3, H, W) image: every module that does work (see `does_work`) reads
    its inputs and writes its outputs, and every parameter is read once. Under bf16 autocast the hooks see bf16 tensors, so their
    real sizes count. `fused`: as a graph runtime runs it (ONNX Runtime, OpenVINO), elementwise layers
    folded into the convolutions (see `is_elementwise`). Still rough: functional ops (interpolate,
    residual adds) are missed and feature maps that stay in cache are counted as if they went to
    DRAM; good for telling memory-bound models from compute-bound ones."""
    measured = "fp32" if precision == "int8" else precision
    moved = largest = 0

    def hook(module, inputs, output):
        nonlocal moved, largest
        if fused and is_elementwise(module, inputs, output):
            return
        for tensor in (*tensors_in(inputs), *tensors_in(output)):
            nbytes = tensor.numel() * tensor.element_size()
            moved += nbytes
            largest = max(largest, nbytes)

    handles = [m.register_forward_hook(hook) for m in network.modules() if does_work(m)]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=measured == "bf16"):
            network.eval()(torch.zeros(1, 3, *size))
    finally:
        for handle in handles:
            handle.remove()
    shrink = BYTES_PER_ELEMENT[measured] // BYTES_PER_ELEMENT[precision]  # int8: a quarter of fp32
    parameters = sum(p.numel() for p in network.parameters()) * BYTES_PER_ELEMENT[precision]
    return Traffic(moved // shrink, parameters, largest // shrink)


def place(flops: float, traffic_bytes: float, seconds: float, machine_peak: float, conv_peak: float,
          bandwidth: float) -> dict:
    """Achieved GFLOP/s of one call against the machine's peak and against the roofline at this intensity."""
    achieved = flops / seconds / 1e9
    intensity = flops / traffic_bytes
    memory_ceiling = intensity * bandwidth
    ceiling = min(conv_peak, memory_ceiling)
    return {"achieved_gflops": round(achieved, 1), "peak_share": round(achieved / machine_peak, 3),
            "intensity_flop_per_byte": round(intensity, 2), "roofline_gflops": round(ceiling, 1),
            "roofline_share": round(achieved / ceiling, 3),
            "bound_by": "memory" if memory_ceiling < conv_peak else "compute"}
