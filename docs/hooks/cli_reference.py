"""MkDocs hook: the CLI reference (docs/cli.md) generated from `pixelwise.cli.build_parser()` at build time,
so it cannot drift from the command line. Every command and nested command (`data import`) gets a heading,
its description and its `--help` text; the page's `<!-- cli-reference -->` marker is replaced by them."""
from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"
WIDTH = 100  # --help wraps at the terminal's width: fixed, so the page is the same on every machine
SRC = Path(__file__).resolve().parents[2] / "src"


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand of `parser`, in declaration order."""
    found = []
    for action in parser._actions:  # argparse has no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return found


def command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple]:
    """Depth first: (path, one-line help, parser) for every command under `parser`, e.g. ("data", "import")."""
    tree = []
    for name, summary, sub in subcommands(parser):
        tree.append((path + (name,), summary, sub))
        tree += command_tree(sub, path + (name,))
    return tree


def anchor(path: tuple[str, ...]) -> str:
    return "-".join(path)


def prose(text: str) -> str:
    """Help text as Markdown: `<stem>` outside code spans would be taken for an HTML tag."""
    parts = text.split("`")
    parts[::2] = [html.escape(part, quote=False) for part in parts[::2]]
    return "`".join(parts)


def help_text(parser: argparse.ArgumentParser) -> str:
    if hasattr(parser, "color"):  # Python 3.14 colours help on a terminal
        parser.color = False
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def reference_markdown() -> str:
    if str(SRC) not in sys.path:  # the working tree's pixelwise, installed or not
        sys.path.insert(0, str(SRC))
    from pixelwise.cli import build_parser  # declaring train's options imports the model zoo (torch)

    parser = build_parser()
    tree = command_tree(parser)
    lines = ["| command | what it does |", "|---|---|"]
    lines += [f"| [`pixelwise {' '.join(path)}`](#{anchor(path)}) | {prose(summary)} |" for path, summary, _ in tree]
    lines += ["", "## pixelwise", "", "```text", help_text(parser), "```", ""]
    for path, summary, sub in tree:
        level = "#" * (len(path) + 1)
        lines += [f"{level} pixelwise {' '.join(path)} {{#{anchor(path)}}}", ""]
        lines += [f"*{prose(summary)}.*", ""] if summary else []
        lines += [prose(sub.description), ""] if sub.description else []
        lines += ["```text", help_text(sub), "```", ""]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference_markdown())
