"""The documentation site: `mkdocs build --strict` (a broken link, anchor or API reference is an error),
every page built, and a CLI reference that names every command of the real parser."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixelwise.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["index", "ground-truth", "training", "models", "deploy", "reliability", "benchmarks", "cli", "api"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life notice, printed on every build
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def command_paths(parser: argparse.ArgumentParser, path=()) -> list[tuple[str, ...]]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [path + (name,)] + command_paths(sub, path + (name,))
    return paths


def test_strict_build_writes_every_page(site):
    for name in PAGES:
        page = site / "index.html" if name == "index" else site / name / "index.html"
        assert page.is_file(), f"{name}.md was not built"
    api = (site / "api" / "index.html").read_text()
    assert 'id="pixelwise.api.train"' in api and 'id="pixelwise.inference.predict.Predictor"' in api


def test_cli_reference_lists_every_command_of_the_parser(site):
    page = (site / "cli" / "index.html").read_text()
    paths = command_paths(build_parser())
    assert ("data", "import") in paths  # nested commands are walked too
    for path in paths:
        assert f'id="{"-".join(path)}"' in page, f"pixelwise {' '.join(path)} has no section"
        assert f"usage: pixelwise {' '.join(path)} " in page, f"pixelwise {' '.join(path)} has no --help"
