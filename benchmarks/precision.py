"""Which precision each part of the default model should run at on this CPU, measured.

    python benchmarks/precision.py [--checkpoint runs/camvid/best.pt]

1. Kernels: a depthwise 5x5 convolution (EfficientNet-Lite0's stride-2 block at a CamVid crop, batch 8)
   forward and backward, and FCN's 8x transposed convolution over 11 score channels, forward, each in
   fp32 and bf16, channels_last.
2. A training step of FCN-8s/EfficientNet-Lite0 (batch 8, 352x480): bf16 autocast throughout, pixelwise's
   policy (depthwise convolutions fp32: `runtime.depthwise_fp32_in_training`) and fp32 throughout,
   alternated over rounds so the VM's drift hits each alike; medians.
3. With --checkpoint, on CamVid val at scale 1: the share of pixels whose class equals eager fp32's,
   and the latency, for bf16 and fp16 autocast; then bf16 with one part at a time kept in fp32 (the
   stem, each encoder block, the head, the decoder), to see whether a single layer causes the flips;
   and OpenVINO (where installed) at fp32, bf16 and fp16 on the same images, against its own fp32.

The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
import types
from pathlib import Path

import torch
from torch import nn

from common import CAMVID, machine, run_record

from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint
from pixelwise.data.io import read_image
from pixelwise.models.registry import create_model
from pixelwise.runtime import cpu_has_fp16, depthwise_fp32_in_training
from pixelwise.training.losses import segmentation_loss

CL = torch.channels_last


def median_ms(fn, runs: int = 7) -> float:
    fn()  # picks the kernels
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def autocast(dtype: torch.dtype | None):
    return torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def kernels() -> dict:
    torch.manual_seed(0)
    depthwise = nn.Conv2d(144, 144, 5, 2, 2, groups=144, bias=False).to(memory_format=CL)
    x = torch.randn(8, 144, 88, 120).contiguous(memory_format=CL)
    transposed = nn.ConvTranspose2d(11, 11, 16, 8, 4, bias=False).to(memory_format=CL)
    scores = torch.randn(1, 11, 46, 60).contiguous(memory_format=CL)
    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def train_step():
            inputs = x.detach().requires_grad_()
            with autocast(dtype):
                y = depthwise(inputs)
            y.float().sum().backward()

        def upsample():
            with torch.no_grad(), autocast(dtype):
                transposed(scores)

        out[f"depthwise_5x5_fwd_bwd_ms_{name}"] = median_ms(train_step)
        out[f"score_upsample_8x_fwd_ms_{name}"] = median_ms(upsample)
    return out


def training_steps(rounds: int) -> dict:
    torch.manual_seed(0)
    model = create_model("fcn8s", backbone="efficientnet_lite0", num_classes=11, pretrained=False)
    model = model.to(memory_format=CL).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = segmentation_loss(None, 11)
    x = torch.rand(8, 3, 352, 480).contiguous(memory_format=CL)
    y = torch.randint(0, 11, (8, 352, 480))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels]

    def step(dtype):
        with autocast(dtype):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    arms = {"bf16": torch.bfloat16, "bf16_depthwise_fp32": torch.bfloat16, "fp32": None}
    seconds = {arm: [] for arm in arms}
    for _ in range(rounds):
        for arm, dtype in arms.items():
            for conv in convs:
                conv.__dict__.pop("forward", None)
            if arm == "bf16_depthwise_fp32":
                depthwise_fp32_in_training(model)
            step(dtype)
            start = time.perf_counter()
            step(dtype)
            seconds[arm].append(time.perf_counter() - start)
    return {f"train_step_s_{arm}": round(statistics.median(v), 3) for arm, v in seconds.items()}


def in_fp32(module: nn.Module) -> None:
    def forward(self, *args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            args = [a.float() if torch.is_tensor(a) else [t.float() for t in a] if isinstance(a, list) else a
                    for a in args]
            return type(self).forward(self, *args, **kwargs)
    module.forward = types.MethodType(forward, module)


@torch.no_grad()
def agreement(checkpoint: Path, every: int) -> dict:
    model = model_from_checkpoint(load_checkpoint(checkpoint)).eval().to(memory_format=CL)
    files = sorted((CAMVID / "val").glob("*.png"))[::every]
    images = [(torch.from_numpy(read_image(f)).permute(2, 0, 1)[None].float() / 255).contiguous(memory_format=CL)
              for f in files]

    def run(x, dtype):
        with autocast(dtype):
            return model(x).float()

    reference = [run(x, None).argmax(1) for x in images]

    def measure(dtype) -> tuple[float, float]:
        run(images[0], dtype)
        equal, times = 0, []
        for x, ref in zip(images, reference):
            start = time.perf_counter()
            logits = run(x, dtype)  # the network alone is timed, not the argmax
            times.append(time.perf_counter() - start)
            equal += int((logits.argmax(1) == ref).sum())
        return round(equal / sum(r.numel() for r in reference), 5), round(1000 * statistics.median(times), 1)

    out = {"images": len(images)}
    dtypes = {"bf16": torch.bfloat16, "fp32": None, **({"fp16": torch.float16} if cpu_has_fp16() else {})}
    for name, dtype in dtypes.items():
        out[f"equal_pixels_{name}"], out[f"latency_ms_{name}"] = measure(dtype)
    encoder = model.encoder.model
    parts = {"stem": [encoder.conv_stem, encoder.bn1], **{f"block{i}": [b] for i, b in enumerate(encoder.blocks)},
             "head": [encoder.conv_head, encoder.bn2], "decoder": [model.decoder]}
    blame = {}
    for part, modules in parts.items():
        for module in modules:
            in_fp32(module)
        blame[part] = measure(torch.bfloat16)[0]
        for module in modules:
            module.__dict__.pop("forward", None)
    out["equal_pixels_bf16_with_one_part_fp32"] = blame
    return out


@torch.no_grad()
def openvino_precisions(checkpoint: Path, every: int) -> dict:
    """OpenVINO at each precision hint, scale 1: equal pixels against its own fp32, and latency."""
    from pixelwise.inference.selection import create_engine

    files = sorted((CAMVID / "val").glob("*.png"))[::every]
    images = [torch.from_numpy(read_image(f)).permute(2, 0, 1)[None].float() / 255 for f in files]
    out, reference = {}, None
    for name in ("fp32", "bf16", "fp16"):
        engine = create_engine("openvino", checkpoint, precision=name, profile="fast", log=lambda message: None)
        engine.logits(images[0])
        labels, times = [], []
        for x in images:
            start = time.perf_counter()
            logits = engine.logits(x)  # the network alone is timed, not the argmax
            times.append(time.perf_counter() - start)
            labels.append(logits.argmax(1))
        reference = reference or labels
        equal = sum(int((a == b).sum()) for a, b in zip(labels, reference))
        out[f"openvino_equal_pixels_{name}"] = round(equal / sum(r.numel() for r in reference), 5)
        out[f"openvino_latency_ms_{name}"] = round(1000 * statistics.median(times), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a CamVid checkpoint of the default model")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--every", type=int, default=3, help="use every n-th val image (default: 3)")
    parser.add_argument("--json", default="benchmarks/results/precision.json")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    result = {"benchmark": "precision", **run_record(), "native_fp16": cpu_has_fp16(), **kernels()}
    print(json.dumps(result), flush=True)
    result.update(training_steps(args.rounds))
    print(json.dumps(result), flush=True)
    if args.checkpoint:
        result.update(agreement(args.checkpoint, args.every))
        if importlib.util.find_spec("openvino"):
            result.update(openvino_precisions(args.checkpoint, args.every))
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
