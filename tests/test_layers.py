"""The package's layers, read from the source with `ast`: no module imports one of a higher
layer, no two modules import each other (directly or round a loop), no module is over
`MAX_LINES` lines, and the face names pairs and faithfulness as stages.

Layers, lowest first: base (`schema`, `errors`, `progress`, `_version`) < `io` < `synth` <
`method` < `jobs` < `reporting` < `pipeline` < the command line and the package face. Imports
anywhere in a module count (inside functions too); imports under `if TYPE_CHECKING:` do not.
`from slamgeo import schema` imports the module `slamgeo.schema`, not the face.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE = ROOT / "slamgeo"
LAYERS = ("base", "io", "synth", "method", "jobs", "reporting", "pipeline", "top")
BASE = ("schema", "errors", "progress", "_version")
TOP = ("cli", "__main__")
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def _sources() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of a `slamgeo` module: 'top' for the face and the command line."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in TOP:
        return "top"
    if parts[1] in BASE:
        return "base"
    return parts[1]


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes under `if TYPE_CHECKING:` (the `else` branch runs and counts)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports(module: str) -> set[str]:
    """The `slamgeo` modules `module` imports, anywhere in it but under `TYPE_CHECKING`.

    `from a.b import c` imports `a.b.c` when that is a module of the package, else `a.b`."""
    path, known = _sources()[module], _sources()
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in known else source)
    return {m for m in found if m == "slamgeo" or m.startswith("slamgeo.")} - {module}


def _graph() -> dict[str, set[str]]:
    return {m: imports(m) for m in _sources()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    assert {m: layer(m) for m in _sources() if layer(m) not in LAYERS} == {}


def test_no_module_imports_from_a_higher_layer():
    up = sorted(
        f"{m} ({layer(m)}) imports {d} ({layer(d)})"
        for m, deps in _graph().items()
        for d in deps
        if layer(d) in LAYERS and LAYERS.index(layer(d)) > LAYERS.index(layer(m))
    )
    assert up == []


def test_below_the_face_the_version_comes_from_its_own_module():
    """Nothing below the top layer imports the face (`from slamgeo import __version__`)."""
    assert sorted(m for m, deps in _graph().items() if "slamgeo" in deps and layer(m) != "top") == []


def test_no_import_cycles_between_modules():
    assert _cycles(_graph()) == []


def test_a_module_imported_from_the_package_is_that_module_not_the_face():
    """`from slamgeo import schema` (slamgeo/cli/cluster.py) is the base layer's module; the
    face's stages are imported under `TYPE_CHECKING` only, so the face imports no stage."""
    assert "slamgeo.schema" in imports("slamgeo.cli.cluster")
    assert "slamgeo" not in imports("slamgeo.cli.cluster")
    assert imports("slamgeo") == {"slamgeo._version"}


def test_the_cycle_finder_finds_a_loop_of_three():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(_sources()))
def test_no_module_is_over_the_line_limit(module):
    n = len(_sources()[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{_sources()[module].relative_to(ROOT)}: {n} lines (at most {MAX_LINES})"


def _stages() -> dict[str, str]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["_STAGES"]:
            return ast.literal_eval(node.value)
    raise AssertionError("slamgeo/__init__.py defines no _STAGES")


@pytest.mark.parametrize("stage", ["pairs", "faithfulness"])
def test_pairs_and_faithfulness_are_stages_on_the_face(stage):
    module = _stages()[stage]
    tree = ast.parse(_sources()[module].read_text())
    assert stage in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, module
    assert layer(module) not in ("top", "base"), module
