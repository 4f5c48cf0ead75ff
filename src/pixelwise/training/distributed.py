"""Training on several processes with PyTorch's own machinery: torchrun starts the processes,
DistributedDataParallel keeps their weights equal, and collectives share the few decisions.

    torchrun --nproc_per_node=2 -m pixelwise train --data ... --out ...
    pixelwise train --nproc 2 --data ... --out ...          # the same, started for you on one machine

The backend is gloo on CPU and nccl on CUDA. Rank 0 alone runs the advisor, logs, plots and writes
checkpoints; it also decides when the time budget is spent and broadcasts each step's schedule
position, so every rank takes the same optimizer steps and none is left waiting. A single process
(no torchrun) runs the same code with `Dist()`, where every collective is a no-op.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from pixelwise.errors import PixelwiseError
from pixelwise.runtime import resolve_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up in the environment (if any). -> (Dist, this rank's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return Dist(), device
    ctx = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if not dist.is_initialized():
        # A generous timeout: rank 0 alone runs the advisor and writes checkpoints while the others wait.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    return ctx, device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, ctx: Dist):
    """Rank 0's `obj` on every rank (any picklable value)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_floats(values: list[float], ctx: Dist) -> list[float]:
    """Rank 0's numbers on every rank: one small collective, cheap enough to run every step."""
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def all_reduce_sum(tensor: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """Sum over ranks, in place (confusion matrices: metrics stay exact, not averages of averages)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: torch.nn.Module, ctx: Dist) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank, in place. DDP sends them before each training
    forward, but each rank's last forward then updates its own copy from its own batch: without this, the
    ranks would score their shares of val with statistics that differ from the ones rank 0 saves."""
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def any_rank(flag: bool, ctx: Dist) -> bool:
    """True on every rank if it is true on any (a NaN on one rank stops them all)."""
    if not ctx.enabled:
        return flag
    tensor = torch.tensor([int(flag)])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def wrap(model: torch.nn.Module, ctx: Dist, device: torch.device) -> torch.nn.Module:
    """The model every rank trains: DDP around it when there are several ranks, the model itself otherwise.
    Call again after changing which parameters train (progressive unfreezing): DDP registers the
    trainable parameters when it is built."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if not any(p.requires_grad for p in model.parameters()):
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    if sync_bn and device.type != "cuda":
        raise PixelwiseError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm has no CPU kernel "
                             "(on CPU each process keeps its own BatchNorm statistics)")


def launch(nproc: int, argv: list[str]) -> int:
    """`pixelwise train --nproc N ARGS` on one machine: torchrun with N processes running `pixelwise ARGS`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "pixelwise", *argv]
    return subprocess.call(command)
