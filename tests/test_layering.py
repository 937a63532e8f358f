"""The import-layering contract (docs/architecture.md): lower layers never import higher ones,
no two packages import each other (function-level imports count), and the store and ingest
layers load no torch, monai or matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "screening"

#: Bottom to top. A unit (a top-level module or subpackage of ``screening``) may import units
#: of its own layer or below. Within a layer, the unit graph must be acyclic.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {
            "screening",
            "_version",
            "reasons",
            "errors",
            "constants",
            "config",
            "fsutil",
            "geometry",
            "schemas",
            "tables",
            "masks",
            "scan_circle",
            "location",
        }
    ),
    frozenset({"store"}),
    frozenset({"runtime"}),
    frozenset({"ingest", "preprocess", "model", "measure", "stats", "synthetic", "query"}),
    frozenset({"pipeline"}),
    frozenset({"cli"}),
)

HEAVY = ("torch", "monai", "matplotlib")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path) -> Iterator[tuple[str, int]]:
    """Every module this file imports from its own package, anywhere in the file."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # A name imported from a package may be its submodule (``from . import scan``).
            targets = [target, *(f"{target}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t == root.name or t.startswith(root.name + "."):
                yield t, node.lineno


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def unit_edges(root: Path) -> dict[tuple[str, str], list[str]]:
    """``(from unit, to unit) -> ["file:line", ...]`` between different units."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        here = _unit(_module_name(path, root))
        for target, line in _imports(path, root):
            there = _unit(target)
            if there != here:
                where = f"{path.relative_to(root.parent)}:{line}"
                edges.setdefault((here, there), []).append(where)
    return edges


def module_edges(root: Path) -> dict[tuple[str, str], list[str]]:
    """``(module, module) -> ["file:line", ...]``; an imported name resolves to its module."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        here = _module_name(path, root)
        for target, line in _imports(path, root):
            module = target
            while module and not _is_module(root, module):
                module = module.rpartition(".")[0]
            if module != target and module == target.rpartition(".")[0]:
                continue  # ``pkg.name`` where name is not a module: ``pkg`` is yielded too
            if module and module != here:
                where = f"{path.relative_to(root.parent)}:{line}"
                edges.setdefault((here, module), []).append(where)
    return edges


def _is_module(root: Path, name: str) -> bool:
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_violations(
    edges: dict[tuple[str, str], list[str]], layers: tuple[frozenset[str], ...]
) -> list[str]:
    level = {u: i for i, layer in enumerate(layers) for u in layer}
    out = []
    for (a, b), where in sorted(edges.items()):
        if a not in level or b not in level:
            out.append(f"{a} -> {b}: unit not assigned to a layer ({where[0]})")
        elif level[b] > level[a]:
            out.append(f"{a} (layer {level[a]}) imports {b} (layer {level[b]}) at {where}")
    return out


def cycles(edges: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_unit_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    missing = (modules | packages) - set().union(*LAYERS)
    assert not missing, f"give every unit of screening/ a layer in LAYERS: {sorted(missing)}"


def test_lower_layers_never_import_higher_ones() -> None:
    assert layer_violations(unit_edges(PACKAGE), LAYERS) == []


def test_no_import_cycle_between_packages() -> None:
    assert cycles(unit_edges(PACKAGE)) == []


def test_no_import_cycle_between_modules() -> None:
    """Finer than packages: e.g. the local cluster and the deployment files, or the model
    backends and the store wrapper, must not import each other either."""
    assert cycles(module_edges(PACKAGE)) == []


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    pkg = tmp_path / "screening"
    (pkg / "store").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "store" / "__init__.py").write_text("")
    (pkg / "store" / "scan.py").write_text(
        "def f():\n    from screening.pipeline.run import g\n    return g\n"
    )
    (pkg / "pipeline.py").write_text("from .store import scan\n")
    edges = unit_edges(pkg)
    assert set(edges) == {("store", "pipeline"), ("pipeline", "store")}
    assert cycles(edges) == [["pipeline", "store"]]
    assert cycles(module_edges(pkg)) == [["screening.pipeline", "screening.store.scan"]]
    violations = layer_violations(edges, LAYERS)
    assert len(violations) == 1 and "store (layer 1) imports pipeline (layer 4)" in violations[0]


@pytest.mark.parametrize(
    "modules",
    [
        "screening.store, screening.runtime, screening.ingest",
        "screening.cli",
    ],
)
def test_light_layers_load_no_heavy_library(modules: str) -> None:
    code = (
        f"import sys\nimport {modules}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing {modules} loaded {out}"
