"""The walls of the house, read from the source with `ast` (imports inside functions count too):
training/ and inference/ never import each other, nothing below the faces imports the package itself,
and no module imports itself round a circle. Also read from the source: no docstring, comment or string
quotes a measured figure (issue 23)."""
import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

import pixelwise

PACKAGE = Path(pixelwise.__file__).parent
FACES = {"pixelwise", "pixelwise.cli", "pixelwise.api", "pixelwise.demo", "pixelwise.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path) -> set[str]:
    """The pixelwise modules that `name` imports anywhere in its file. `from pkg import sub` names the
    submodule `sub`; `from pkg import thing` names `pkg` itself."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            submodules = {f"{base}.{a.name}" for a in node.names} & MODULES.keys()
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_the_scan_sees_imports_inside_functions():
    # checkpoint.py imports the model registry inside model_from_checkpoint, so the zoo loads only when needed
    assert "pixelwise.models.registry" in GRAPH["pixelwise.checkpoint"]
    assert len(MODULES) > 40


@pytest.mark.parametrize("a, b", [("training", "inference"), ("inference", "training")])
def test_training_and_inference_never_import_each_other(a, b):
    crossing = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if layer(m) == a and layer(t) == b)
    assert crossing == []


def test_nothing_below_the_faces_imports_the_package_itself():
    assert sorted(m for m, targets in GRAPH.items() if "pixelwise" in targets and m not in FACES) == []


def test_data_knows_no_network_and_models_no_trainer():
    for module, targets in GRAPH.items():
        if layer(module) == "data":
            assert not {layer(t) for t in targets} & {"models", "training", "inference", "web"}, module
        if layer(module) == "models":
            assert not {layer(t) for t in targets} & {"data", "training", "inference", "web"}, module


def test_the_package_has_no_import_cycle():
    """Tarjan's strongly connected components: any component of more than one module is a cycle."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []


# Docstrings say what and why and link to the docs page that holds the figure (issue 23): a timing, a
# speed-up, a share of pixels or a mean IoU measured on some machine goes stale in the source. The
# figures live in benchmarks/ (the scripts and results/) and docs/ (deploy.md, training.md, ...).
NUMBER = r"\d+(?:[.,]\d+)?"
MEASURED_FIGURE = re.compile("|".join([  # few alternatives, each a shared prefix: the scan stays fast
    # the machine a figure was taken on ("a 2-core Xeon")
    r"\b(?:Xeon|EPYC|Zen ?[2-6]|AMX (?:machine|box|VM)|on this machine|\d+-core)\b",
    # a number and a unit of time, rate, speed-up or quality
    rf"{NUMBER} ?(?:ms|µs|(?:img|images|frames|requests)/s|[TGM]FLOP/?s|[GMK]i?B/s|s of imports"
    r"|(?:[x×]|%) (?:faster|slower|quicker|cheaper|smaller|larger|the speed|the images/s|as fast)"
    r"|(?:val |test )?(?:mIoU|mean IoU)|points of (?:mean )?(?:IoU|mIoU)|(?:mIoU|IoU) points)\b",
    r"\b\d+\.\d+ ?s\b",  # "1.39 s"
    r"\b(?:mIoU|mean IoU) (?:of )?\d*\.\d",  # "val mIoU 0.88"
    rf"\b(?:faster|slower|grew|shrank|rose|fell)\b[^.]{{0,40}}\bby {NUMBER} ?%",
    rf"\b(?:flips?|agrees? on|changes?) (?:about )?{NUMBER} ?%",
    rf"\b(?:took|takes|take) (?:about |~)?{NUMBER} ?(?:s|seconds|min|minutes)\b",
]), re.IGNORECASE)
# (file, text of the line): what the pattern catches that nobody measured. Each entry must still match.
NOT_MEASURED = {
    # half the height and half the width is a quarter of the pixels: arithmetic, not a timing
    ("config.py", "~4x cheaper steps"),
    ("cli.py", "~4x cheaper steps"),
    # an error message about where weight files are, not the machine a figure was taken on
    ("models/weights.py", "are not on this machine"),
}


def prose(path: Path):
    """(line number, line) of every comment and string literal in a .py file (every line of a .js or .html
    file), or nothing when no line of the file could match MEASURED_FIGURE."""
    text = path.read_text(encoding="utf-8")
    if not MEASURED_FIGURE.search(text):  # most files: no need to tokenize (the slow part)
        return
    if path.suffix != ".py":
        yield from enumerate(text.splitlines(), 1)
        return
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            for i, line in enumerate(token.string.splitlines()):
                yield token.start[0] + i, line


def measured_figures() -> list[tuple[str, int, str]]:
    """(file under the package, line number, line) for each line that quotes a measured figure."""
    static = [p for p in (PACKAGE / "web" / "static").glob("*") if p.suffix in (".js", ".html")]
    return [(path.relative_to(PACKAGE).as_posix(), number, line.strip())
            for path in sorted(MODULES.values()) + sorted(static)
            for number, line in prose(path) if MEASURED_FIGURE.search(line)]


def test_no_measured_figure_in_the_source():
    found = measured_figures()
    allowed = {(f, n, line) for f, n, line in found if any(f == a and text in line for a, text in NOT_MEASURED)}
    assert sorted(set(found) - allowed) == []
    stale = {(a, text) for a, text in NOT_MEASURED if not any(f == a and text in line for f, _, line in allowed)}
    assert stale == set(), "allowlist entries that no longer match anything: remove them"


@pytest.mark.parametrize("sentence", [
    "measured on a 2-core Xeon with 2 streams, the whole loop runs at 83-86% of one call",
    "bf16 flips 0.4% of the pixels", "16% faster than the dynamic graph at 630x840",
    "9.3 against 1.7 ms", "a training step takes 1.39 s", "about 3.7x slower than its fp32 ones",
    "scored 61.4 val mean IoU", "trailed by 4.5 mIoU points", "cost 5 points of mean IoU",
    "82.4 images/s", "2.1 TFLOP/s and 26.7 GB/s", "on an AMD EPYC (Zen 4)", "val mIoU 0.8817",
    "grew training's memory by 7% over 20 epochs", "the zoo's 2 s of imports", "took 7 minutes",
])
def test_the_measured_figure_pattern_catches_the_old_sentences(sentence):
    assert MEASURED_FIGURE.search(sentence)


@pytest.mark.parametrize("sentence", [
    "ignore index 255", "a 0.5 blend", "at most a tenth of the time", "1024/1.75 = 585 pixels",
    "polygons need at least 3 points", "an 8000x6000 one is 144 MB", "upsample 2x", "5x5 Gaussian blur",
    "a class with 1% of the pixels weighs 10", "keep validation to ~10% of the time", "FCN-8s",
])
def test_the_measured_figure_pattern_leaves_design_constants_alone(sentence):
    assert not MEASURED_FIGURE.search(sentence)
