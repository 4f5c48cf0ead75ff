"""The machine a figure was measured on, and the record that traces a results file to it.

Figures change between CPUs (AMX or AVX-512 BF16 can make bf16 several times faster), so every benchmark
names the CPU, its relevant flags, the date, the commit, torch's version and the command. A module of its
own that does not import torch, so that memory benchmarks and the lighter scripts can use it too."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

# The instruction-set flags that decide which precisions run natively, as /proc/cpuinfo spells them.
RELEVANT_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512f", "avx2")


def _lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def cpu_model() -> str:
    """lscpu's model name: the CPU changes between machines, so every figure names it."""
    return next((line.split(":", 1)[1].strip() for line in _lscpu().splitlines() if line.startswith("Model name")),
                platform.processor() or platform.machine())


def cpu_flags() -> list[str]:
    """Those of RELEVANT_FLAGS the CPU has, from /proc/cpuinfo's flags (lscpu's where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = _lscpu()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Flags"))), "")
    present = set(line.split(":", 1)[-1].split())
    return [flag for flag in RELEVANT_FLAGS if flag in present]


def _gpu_name() -> str | None:
    """The GPU's name: from torch if the benchmark already imported it, else from nvidia-smi if installed."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout.strip() else None


def machine() -> str:
    """'<CPU model>, N threads, no GPU', or the GPU's name first where there is one."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else len(os.sched_getaffinity(0))
    gpu = _gpu_name()
    return f"{gpu}, {cpu_model()}, {threads} threads" if gpu else f"{cpu_model()}, {threads} threads, no GPU"


def _torch_version() -> str | None:
    """torch.__version__ where torch is loaded (it keeps the build tag, +cu130), else the installed package's."""
    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def run_record() -> dict:
    """What a results file needs to be traced: the machine (CPU model), the CPU's flags, date, commit, torch, command."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"machine": machine(), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d"), "commit": commit,
            "torch": _torch_version(), "command": " ".join(["python", *sys.argv])}
