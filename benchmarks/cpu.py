"""The CPU a figure was measured on: it changes between machines, so every benchmark names it.
A module of its own, importing nothing heavy, so that memory benchmarks can use it too."""
from __future__ import annotations

import platform
import subprocess


def cpu_model() -> str:
    """lscpu's model name: the CPU changes between machines, so every figure names it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                platform.machine())
