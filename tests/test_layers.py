"""The layering of DESIGN.md ("Layers, packages and what each owns"), checked on every import.

Every ``import`` in ``datafuel/`` counts, including those inside functions (a lazy
import is still an edge). A module belongs to a component (its first name under
``datafuel``: ``loaders``, ``vision``, ``errors``...); an edge from one component to
another must be one the table allows, and no chain of imports may lead back to where
it started, between components or between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import datafuel

ROOT = Path(datafuel.__file__).parent

BASE = {"errors", "_fs", "_version", "_checks", "_hash", "_lazy", "_lock", "_transformer"}
STAGES = {"split", "clean", "scale", "recipe", "ingest", "vision", "text", "synthetic", "dedup"}
LAYER = {
    **dict.fromkeys(BASE, 0),
    "loaders": 1,
    **dict.fromkeys(STAGES, 1),
    "engine": 2,
    "build": 3,
    "cli": 4,
    "demo": 4,
    "__init__": 4,  # the top-level package: the public surface
    "__main__": 4,
}
#: what each component may import besides itself (DESIGN.md's table)
ALLOWED: dict[str, set[str]] = {
    **{c: set(BASE) for c in BASE},
    "loaders": BASE,
    "split": BASE,
    **{c: BASE | {"split", "loaders"} for c in STAGES - {"split", "synthetic", "recipe"}},
    "synthetic": BASE | {"split", "loaders", "text"},  # a prior may encode text
    "recipe": BASE | {"split", "loaders", "clean", "scale"},  # the recipe composes their steps
    "engine": BASE | {"loaders"},
    "build": BASE | {"loaders", "engine"} | STAGES,
    "demo": BASE | {"loaders", "engine", "build", "__init__"} | STAGES,
    "cli": BASE | {"loaders", "engine", "build", "demo", "__init__"} | STAGES,
    "__init__": BASE | STAGES | {"loaders", "engine", "build"},
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (ROOT.parent / name.replace(".", "/") / "__init__.py").exists()


def exists(name: str) -> bool:
    """A module of that name: Python source, a package, or a C extension (its ``.pyi``)."""
    p = ROOT.parent / name.replace(".", "/")
    return any(p.with_suffix(s).exists() for s in (".py", ".pyi")) or (p / "__init__.py").exists()


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """``(absolute module, line)`` of every datafuel import in ``path``, at any depth."""
    here = module_name(path)
    package = here if is_package(here) else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "datafuel":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "datafuel":
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                yield (sub if exists(sub) else target), node.lineno


def component(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {module_name(p): sorted(set(imports(p))) for p in sorted(ROOT.rglob("*.py"))}


def test_every_component_has_a_layer() -> None:
    assert {component(m) for m in GRAPH} <= set(LAYER), "a new package needs a row in LAYER"


@pytest.mark.parametrize("source", sorted(GRAPH))
def test_imports_follow_the_layers(source: str) -> None:
    here = component(source)
    bad = [
        f"{source}:{line} imports {target} ({component(target)})"
        for target, line in GRAPH[source]
        if component(target) != here and component(target) not in ALLOWED[here]
    ]
    assert bad == []


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` (as a path), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_cycle_between_components() -> None:
    edges: dict[str, set[str]] = {}
    for source, targets in GRAPH.items():
        for target, _ in targets:
            if component(target) != component(source):
                edges.setdefault(component(source), set()).add(component(target))
    assert _cycle(edges) is None


def test_no_cycle_between_modules() -> None:
    """A package's ``__init__`` re-exports its modules; a module importing it back is a cycle."""
    edges = {s: {t for t, _ in ts if t != s} for s, ts in GRAPH.items()}
    assert _cycle(edges) is None


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    found = dict(GRAPH["datafuel.build._table"])
    assert "datafuel.engine" in found and "datafuel.build._common" in found
    assert "datafuel.recipe" in found  # imported inside a function
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
