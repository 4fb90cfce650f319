"""The import graph of src/rnnkit, drawn from the code itself: every import runs downward.

    cli -> workflows -> export/convert -> runs -> models -> core -> data and the shared base

A module may import its own layer or any layer below, never one above, and not even inside
a function (the graph is read from every `import` statement in the source, wherever it
stands). No two modules import each other, directly or round a longer circle. The
experimental corner sits beside the product: it may use the core, and nothing in the
product imports it. The core does no I/O and knows no training: it imports none of the
libraries that belong to the layers above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rnnkit"

# Highest first; a module's layer is the first whose prefix matches its dotted name.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("rnnkit.cli",)),
    ("workflows", ("rnnkit.workflows",)),
    ("export/convert", ("rnnkit.export", "rnnkit.convert")),
    ("runs", ("rnnkit.runs",)),
    ("models", ("rnnkit.models",)),
    ("experimental", ("rnnkit.experimental",)),
    ("data", ("rnnkit.data",)),
    ("base", ("rnnkit.errors", "rnnkit._atomic", "rnnkit._version")),
    ("core", ("rnnkit",)),  # the package itself and its private core modules
)
# Which layers each layer may import (its own included). `core` is below models but above
# data and the base; `experimental` may use the core and nothing above it.
ORDER = ("base", "data", "core", "experimental", "models", "runs", "export/convert", "workflows", "cli")
MAY_IMPORT = {name: set(ORDER[: ORDER.index(name) + 1]) for name in ORDER}
MAY_IMPORT["models"].discard("experimental")  # the product never reaches into the experimental corner
for _upper in ("runs", "export/convert", "workflows", "cli"):
    MAY_IMPORT[_upper].discard("experimental")
MAY_IMPORT["data"].discard("core")  # data reads files into NumPy: no JAX, no cells

# Third-party libraries a layer must not import: the core does no I/O and no training, data has no JAX.
FORBIDDEN_LIBRARIES = {
    "core": {"optax", "safetensors", "rich", "matplotlib", "PIL", "argparse"},
    "data": {"jax", "jaxlib", "equinox", "optax"},
    "models": {"optax", "safetensors", "rich", "matplotlib", "PIL", "argparse"},
    "base": {"jax", "equinox", "optax"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    raise AssertionError(f"{module} is in no layer")


def _resolve(module: str, importer: str, level: int, is_package: bool) -> str:
    if level == 0:
        return module
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported rnnkit module, line) for every import statement in `module`, at any depth:
    `from rnnkit.x import y` counts as importing rnnkit.x.y where that is a module, else rnnkit.x."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node.module or "", module, node.level, path.name == "__init__.py")
            for alias in node.names:
                child = f"{source}.{alias.name}"
                found.append((child if child in MODULES else source, node.lineno))
    return found


def rnnkit_edges() -> dict[str, set[str]]:
    return {
        m: {target for target, _ in imports_of(m) if target in MODULES and target != m and target != "rnnkit"}
        for m in MODULES
    }


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) > 40  # the walk found the package
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downward(module: str) -> None:
    here = layer_of(module)
    upward = [
        f"line {line}: {target} ({layer_of(target)})"
        for target, line in imports_of(module)
        if target.startswith("rnnkit") and target in MODULES and layer_of(target) not in MAY_IMPORT[here]
    ]
    assert not upward, f"{module} ({here}) imports a layer it may not:\n" + "\n".join(upward)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_lower_layers_import_no_higher_library(module: str) -> None:
    forbidden = FORBIDDEN_LIBRARIES.get(layer_of(module), set())
    hits = [f"line {line}: {target}" for target, line in imports_of(module) if target.split(".")[0] in forbidden]
    assert not hits, f"{module} ({layer_of(module)}) imports libraries of a higher layer:\n" + "\n".join(hits)


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the modules round it, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_circular_imports() -> None:
    circle = _cycle(rnnkit_edges())
    assert circle is None, "modules import each other round a circle: " + " -> ".join(circle or [])


def test_the_checks_can_fail() -> None:
    """The walk sees imports inside functions and relative ones, and the circle finder finds circles."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("rnnkit.workflows.train") == "workflows"
    assert "workflows" not in MAY_IMPORT["export/convert"]
    assert layer_of("rnnkit._rnn") == "core"
    assert "models" not in MAY_IMPORT["core"]
    assert _resolve("x", "rnnkit.convert._tf1", 1, is_package=False) == "rnnkit.convert.x"
    assert _resolve("", "rnnkit.convert", 1, is_package=True) == "rnnkit.convert"


def test_the_layer_table_sees_the_moved_modules() -> None:
    """The import test is only as good as its map: the run layer and the run-directory
    conversions sit where DESIGN.md puts them, and the walk sees what a module imports."""
    assert layer_of("rnnkit.runs._open") == "runs"
    assert layer_of("rnnkit.convert._run_dir") == "export/convert"
    assert layer_of("rnnkit.workflows.train_step") == "workflows"
    assert layer_of("rnnkit.cli.train") == "cli"
    targets = {target for target, _ in imports_of("rnnkit.runs._open")}
    assert {"rnnkit.models.classifier", "rnnkit.runs._config"} <= targets
