"""Every measured figure of README.md and docs/, rendered from its results file in benchmarks/results/.

    python benchmarks/report.py            # rewrite the generated parts of README.md and docs/*.md
    python benchmarks/report.py --check    # exit 1, showing the difference, where a committed part is stale

A document marks what is generated; everything between the markers is the report's, never typed:

    <!-- report: deploy.serve_load -->          a table (or any block), with the line naming its source
    ...
    <!-- /report -->
    ... the server answered <!-- fig: deploy.serve_saturation -->1.25x<!-- /fig --> of predict's ...

NAME is `module.function` in benchmarks/reports/: the function takes no argument, reads its results
through `reports.results`, which refuses a file that does not name its machine, date and commit, and
returns the markdown. The suite runs --check (tests/test_report.py), so a figure cannot drift from its
file, and a figure outside the markers is caught by the same test's scan.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

BLOCK = re.compile(r"(?P<open><!-- report: (?P<name>[\w.]+) -->\n)(?P<body>.*?)(?P<close><!-- /report -->)", re.S)
INLINE = re.compile(r"(?P<open><!-- fig: (?P<name>[\w.]+) -->)(?P<body>.*?)(?P<close><!-- /fig -->)", re.S)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render(name: str) -> str:
    module, function = name.rsplit(".", 1)
    return getattr(importlib.import_module(f"reports.{module}"), function)()


def rendered(text: str, render=render) -> str:
    """`text` with every marked part replaced by what its renderer gives now."""
    text = BLOCK.sub(lambda m: m["open"] + render(m["name"]).rstrip("\n") + "\n" + m["close"], text)
    return INLINE.sub(lambda m: m["open"] + render(m["name"]).strip() + m["close"], text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 where a document is stale")
    args = parser.parse_args()
    stale = []
    for path in documents():
        text = path.read_text()
        new = rendered(text)
        if new == text:
            continue
        stale.append(path)
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                       str(path.relative_to(ROOT)), "rendered now"))
        else:
            path.write_text(new)
            print(f"rendered {path.relative_to(ROOT)}")
    if args.check and stale:
        print(f"\n{len(stale)} document(s) differ from their results files: run python benchmarks/report.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
