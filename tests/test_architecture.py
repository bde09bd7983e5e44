"""The import rules of ARCHITECTURE.md, checked on the source: no cycles, no forbidden imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "tabular", "imagery", "fusion", "service", "pipelines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported project module, at module level?)`` for every import in ``path``.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under `if TYPE_CHECKING:` never run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top_level -= {id(n) for n in ast.walk(node)}
            for n in ast.walk(node):
                n._type_checking = True  # type: ignore[attr-defined]
    out: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if getattr(node, "_type_checking", False):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            full = [f"{node.module}.{a.name}" for a in node.names]
            names = [f if f in MODULES else node.module for f in full]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                out.append((name, id(node) in top_level))
    return out


GRAPH = {mod: _imports(path) for mod, path in MODULES.items()}


def test_no_import_cycles() -> None:
    edges = {m: sorted({t for t, top in deps if top and t in MODULES and t != m}) for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def _violations(source_prefix: str, forbidden: tuple[str, ...], *, top_level_only: bool = False) -> list[str]:
    bad = []
    for mod, deps in GRAPH.items():
        if mod != source_prefix and not mod.startswith(source_prefix + "."):
            continue
        for target, top in deps:
            if top_level_only and not top:
                continue
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                bad.append(f"{mod} imports {target}")
    return bad


def test_inference_never_imports_training() -> None:
    assert _violations("imagery.inference", ("imagery.training",)) == []


def test_layer_rules() -> None:
    assert _violations("common", ("tabular", "imagery", "fusion", "pipelines")) == []
    assert _violations("tabular", ("imagery", "fusion", "pipelines")) == []
    assert _violations("imagery", ("tabular", "fusion", "pipelines")) == []
    assert _violations("fusion", ("pipelines", "service")) == []
    assert _violations("service", ("pipelines",)) == []
    for lib in ("common", "tabular", "imagery"):
        assert _violations(lib, ("service",)) == []
    # fusion reads patches through imagery.data at import time; anything else of imagery only lazily
    forbidden = ("imagery.transforms", "imagery.models", "imagery.training", "imagery.inference", "imagery.device")
    assert _violations("fusion", forbidden, top_level_only=True) == []


def test_change_package_is_torch_free() -> None:
    # imagery.change (map_event's change evidence) needs no trained model: no network code, no torch
    forbidden = ("imagery.transforms", "imagery.models", "imagery.training", "imagery.inference", "imagery.device")
    assert _violations("imagery.change", forbidden) == []


def test_data_package_imports_no_torch() -> None:
    for mod, path in MODULES.items():
        if mod.startswith(("imagery.data", "imagery.change", "fusion.change_fusion")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
            names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
            assert not any(n == "torch" or n.startswith("torch.") for n in names), mod
