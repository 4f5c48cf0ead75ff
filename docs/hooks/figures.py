"""MkDocs hook: figures that live outside docs/, added to the site at build time rather than copied in.

- `explain/*.png`: `pixelwise explain upsampling` and `pixelwise explain decoders`, drawn from the code now.
- `benchmarks/results/*.png` named below: the plots the benchmarks write, at the path the README uses."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK_FIGURES = ["benchmarks/results/speed_quality.png"]


def explain_figures() -> dict[str, bytes]:
    """{site path: PNG bytes} of every `pixelwise explain` figure."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from pixelwise.explain import explain_decoders, explain_upsampling  # torch and matplotlib (Agg)

    with tempfile.TemporaryDirectory() as tmp:
        paths = explain_upsampling(tmp) + explain_decoders(tmp)
        return {f"explain/{path.name}": path.read_bytes() for path in paths}


def on_files(files, config):
    for src_uri, content in explain_figures().items():
        files.append(File.generated(config, src_uri, content=content))
    for name in BENCHMARK_FIGURES:
        files.append(File.generated(config, name, abs_src_path=str(ROOT / name)))
    return files
