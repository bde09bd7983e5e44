"""The import rules of ARCHITECTURE.md, checked on the source: no cycles, no forbidden imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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


def _runtime_imports(path: Path) -> list[tuple[str, bool]]:
    """``(absolute module name, at module level?)`` of every import that can run in ``path``: at module level,
    or inside a function or class (a lazy import runs too); imports under ``if TYPE_CHECKING:`` never run."""
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
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            full = [f"{node.module}.{a.name}" for a in node.names]
            out += [(f if f in MODULES else node.module, id(node) in top_level) for f in full]
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported project module, at module level?)`` for every import in ``path``.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``.
    """
    return [(name, top) for name, top in _runtime_imports(path) if name.split(".")[0] in PACKAGES]


GRAPH = {mod: _imports(path) for mod, path in MODULES.items()}

#: Import circles that are known and owned elsewhere (none: tabular/large/ dissolved stream <-> tuning).
KNOWN_CYCLES: set[frozenset[str]] = set()


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in sorted(edges):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycles() -> None:
    """No circle among the imports that run, at module level or inside functions (lazy imports count)."""
    edges = {m: sorted({t for t, _top in deps if t in MODULES and t != m}) for m, deps in GRAPH.items()}
    cycles = [c for c in _cycles(edges) if frozenset(c) not in KNOWN_CYCLES]
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_sees_lazy_imports() -> None:
    assert _cycles({"a": ["b"], "b": ["a"], "c": ["a"]}) == [["a", "b"]]
    assert _cycles({"a": ["b"], "b": ["c"]}) == []
    lazy = [t for mod, deps in GRAPH.items() if mod.startswith("service.") for t, top in deps if not top]
    assert lazy, "imports inside functions are edges of the graph"


def test_service_does_geometry_through_common_geo() -> None:
    """``service`` imports no rasterio, pyproj, pyogrio or GDAL, not even inside a function."""
    forbidden = ("rasterio", "pyproj", "pyogrio", "osgeo", "fiona")
    bad = [
        f"{mod} imports {name}"
        for mod, path in MODULES.items()
        if mod == "service" or mod.startswith("service.")
        for name, _top in _runtime_imports(path)
        if name.split(".")[0] in forbidden
    ]
    assert bad == []


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


def test_demo_material_is_imported_by_no_library() -> None:
    # fusion.demo holds the synthetic generators of the quick start, tests and benchmarks: only pipelines use it
    bad = [
        f"{mod} imports {target}"
        for mod, deps in GRAPH.items()
        if not mod.startswith(("pipelines", "fusion.demo"))
        for target, _ in deps
        if target == "fusion.demo" or target.startswith("fusion.demo.")
    ]
    assert bad == []


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


def test_architecture_md_names_every_package_module() -> None:
    """ARCHITECTURE.md's file list matches the tree: every library module (``.py`` except ``__init__``) of
    common, tabular, imagery, fusion and service is mentioned by its file name."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = sorted(
        str(path.relative_to(ROOT))
        for pkg in ("common", "tabular", "imagery", "fusion", "service")
        for path in (ROOT / pkg).rglob("*.py")
        if path.name != "__init__.py" and path.name not in text
    )
    assert not missing, f"ARCHITECTURE.md does not mention: {missing}"


def test_architecture_md_names_no_missing_file() -> None:
    """Every ``name.py`` ARCHITECTURE.md mentions exists in a project package (no stale entries)."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    have = {path.name for pkg in (*PACKAGES, "tests") for path in (ROOT / pkg).rglob("*.py")}
    stale = sorted(set(re.findall(r"\b(\w+\.py)\b", text)) - have)
    assert not stale, f"ARCHITECTURE.md mentions files that are not in the tree: {stale}"
