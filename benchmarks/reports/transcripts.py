"""What pixelwise prints, as the README and the docs show it: cut from benchmarks/transcripts.py's run."""
from __future__ import annotations

import re

from reports import results, source

NAME = "transcripts"
INSTALLED = re.compile(r"/\S*/(pixelwise/data/sample)")  # where the run's package lay: any clone's differs


def _lines(command: str) -> list[str]:
    run = results(NAME)["transcripts"][command]
    if run["exit_code"]:
        raise ValueError(f"{NAME}.json: `{run['command']}` exited {run['exit_code']}; rerun the benchmark")
    return INSTALLED.sub(r".../\1", run["stdout"].rstrip("\n")).splitlines()


def _block(lines: list[str]) -> str:
    return "```\n" + "\n".join(lines) + "\n```\n\n" + source(NAME)


def _first_and_last_epochs(lines: list[str]) -> list[str]:
    """Everything up to the first epoch's line, `...`, the last epoch's line."""
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    return lines[:epochs[0] + 1] + ["..."] + [lines[epochs[-1]]]


def _from(lines: list[str], start: str) -> list[str]:
    return lines[next(i for i, line in enumerate(lines) if line.startswith(start)):]


def demo() -> str:
    """`make demo` from its first line to its last, the epochs between the first and last left out."""
    lines = _lines("demo")
    return _block(_first_and_last_epochs(lines) + [""] + _from(lines, "test split"))


def demo_training() -> str:
    return _block(_first_and_last_epochs(_lines("demo")))


def demo_ending() -> str:
    return _block(_from(_lines("demo"), "test split"))


def advise_nuclei() -> str:
    return _block([f"$ {results(NAME)['transcripts']['advise_nuclei']['command']}"] + _lines("advise_nuclei"))


def advise_camvid() -> str:
    """The decision and its evidence, up to the domain shift (the per-class counts of 11 classes left out)."""
    lines = _lines("advise_camvid")
    end = next(i for i, line in enumerate(lines) if line.startswith("domain shift"))
    return _block(lines[:end + 1] + ["..."])


def evaluate() -> str:
    return _block(_lines("evaluate"))


def semi() -> str:
    """The semi-supervised run's plan and its last epoch."""
    lines = _lines("semi")
    plan = next(line for line in lines if line.startswith("semi-supervised"))
    return _block([plan, "...", [line for line in lines if line.startswith("epoch ")][-1]])
