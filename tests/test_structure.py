"""The walls of the house, read from the source with `ast` (imports inside functions count too):
training/ and inference/ never import each other, nothing below the faces imports the package itself,
and no module imports itself round a circle."""
import ast
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
