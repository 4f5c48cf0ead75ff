"""Size and cost of a model at an input size: parameters, GFLOPs and training activation memory."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def measure(model: nn.Module, size: tuple[int, int]) -> dict:
    """One forward pass on a (1, 3, H, W) input. GFLOPs count a multiply-add as 2 FLOPs.
    Activation memory sums every leaf module's fp32 output: roughly what training keeps for backward."""
    model.eval()
    activations = 0

    def hook(_module, _inputs, output):
        nonlocal activations
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                activations += t.numel() * 4

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(torch.zeros(1, 3, *size))
    finally:
        for h in handles:
            h.remove()
    return {"params": count_parameters(model), "gflops": counter.get_total_flops() / 1e9,
            "activation_mb": activations / 2**20}
