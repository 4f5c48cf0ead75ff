"""Renderers of the documents' measured figures, a module per docs page; `report.py` calls them by name.

Each reads its results through `results`, which insists that a file names where, when and from what
code it was measured, and ends its table with `source`, the line that says so."""
from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


class Unbacked(Exception):
    """A results file that cannot back a figure: missing, or silent on its machine, date or commit."""


def results(name: str) -> dict:
    """benchmarks/results/NAME.json, which must record its machine, date and commit."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise Unbacked(f"{path} does not exist: run its benchmark")
    data = json.loads(path.read_text())
    missing = [key for key in ("date", "commit") if not data.get(key)]
    cpu = (data.get("machine") or data.get("cpu") or "").split(",")[0].strip()
    if cpu in ("", "x86_64", "x86_64 CPU"):  # an architecture is not a machine: figures differ between CPUs
        missing.insert(0, "machine (a CPU model, not just x86_64)")
    if missing:
        raise Unbacked(f"{path.name} records no {', '.join(missing)}: rerun its benchmark")
    return data


def machine(data: dict) -> str:
    return data.get("machine") or data["cpu"]


def source(*names: str) -> str:
    """The line under a table: each results file, with its machine, date and commit."""
    parts = []
    for name in names:
        data = results(name)
        parts.append(f"`benchmarks/results/{name}.json` ({machine(data)}; {data['date']}; commit {data['commit']})")
    return "<sub>From " + "; ".join(parts) + ".</sub>"


def rounded(value, places: int) -> str:
    """`value` rounded half up to `places` decimals from its shortest decimal form, as a reader rounds the
    digits the file shows (0.6395 -> 0.640, where float formatting gives 0.639)."""
    return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def signed(value, places: int = 1) -> str:
    """+1.3 / −0.3 / +0.0 for prose: `value` rounded half up, with a typographic minus."""
    text = rounded(value, places)
    return text.replace("-", "−") if text.startswith("-") else "+" + text


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; numbers are formatted by the caller, so a cell shows exactly what it means."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
