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


# What a measured figure looks like in prose: a number with a unit of time, speed, memory or share, a
# ratio, a signed difference, or a score written as 0.xxx. Sizes (480x360), versions and options in
# `code` are not figures; neither is anything inside the markers, in code blocks or in link targets.
FIGURE = re.compile(r"(?<![\w.x×/-])[+−-]?\d[\d,]*(?:\.\d+)?\s?(?:ms|µs|s|min|minutes|seconds|hours|h|img/s|images/s|"
                    r"TFLOP/s|GB/s|GB|MB|GiB|MiB|KiB|%|×|x|points?|pt)(?![\w/])|(?<![\w.])0\.\d{2,4}(?![\d\w])|"
                    r"(?<![\w.])[+−]\d+(?:\.\d+)?(?![\d\w])")
NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|<!-- report: .*?<!-- /report -->|<!-- fig: .*?<!-- /fig -->|"
                       r"\]\([^)]*\)|<!--.*?-->", re.S)


def unmarked_figures(text: str) -> list[tuple[int, str]]:
    """(line, figure) for every measured-looking figure outside the report's markers."""
    found = []
    for start, chunk in _prose_parts(text):
        for match in FIGURE.finditer(chunk):
            found.append((text.count("\n", 0, start + match.start()) + 1, match.group().strip()))
    return found


def _prose_parts(text: str):
    """(offset, text) of the stretches between code, markers and link targets."""
    position = 0
    for match in NOT_PROSE.finditer(text):
        yield position, text[position:match.start()]
        position = match.end()
    yield position, text[position:]


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
    parser.add_argument("--scan", action="store_true",
                        help="list the figures typed by hand: measured-looking numbers outside the markers")
    parser.add_argument("documents", nargs="*", type=Path, help="only these documents (default: README.md, docs/*.md)")
    args = parser.parse_args()
    chosen = [path.resolve() for path in args.documents] or documents()
    if args.scan:
        total = 0
        for path in chosen:
            found = unmarked_figures(path.read_text())
            total += len(found)
            for line, figure in found:
                print(f"{path.relative_to(ROOT)}:{line}: {figure}")
        print(f"{total} figure(s) outside the markers")
        return 1 if total else 0
    stale = []
    for path in chosen:
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
