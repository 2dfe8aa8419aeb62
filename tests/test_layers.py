"""The packages are floors: each may import the ones below it, never one above.

``sipworker`` (SIP worker processes) is the lowest and stands alone; ``mock_api`` (the fake
OpenAI server and its SIP ingress) builds on it; ``harness`` (callers, runner, load, reports)
builds on both.  ``audio_fixtures`` is data with a little code, used by all of them.  An import
reaching up ties a lower floor to everything above it (a SIP-only install would need the mock, a
fixture read would load the harness), so every import in every module is read with ``ast``:
inside functions and ``TYPE_CHECKING`` blocks too, since those still tie the code together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (lower floor, a package above it that it must not import)
FORBIDDEN = [
    ("sipworker", "mock_api"),
    ("sipworker", "harness"),
    ("mock_api", "harness"),
    ("audio_fixtures", "harness"),
]


def module_name(path: Path) -> str:
    """``harness/report/html.py`` -> ``harness.report.html``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """Each module the module ``name`` (in ``path``) imports, absolute (relative imports resolved), with its line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base


def upward_imports(lower: str, upper: str) -> list[str]:
    """Where a module of package ``lower`` imports package ``upper`` (``file:line: module``)."""
    found = []
    for path in sorted((ROOT / lower).rglob("*.py")):
        for line, target in imported(path, module_name(path)):
            if target == upper or target.startswith(upper + "."):
                found.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    return found


def test_the_walk_resolves_relative_imports_and_finds_nested_ones(tmp_path: Path) -> None:
    """``from .x import y`` and ``from .. import z`` name the modules they mean, and an import inside a
    function counts as much as one at the top."""
    source = tmp_path / "m.py"
    source.write_text("import x.y\nfrom . import a\nfrom ..b import c\n\n\ndef f():\n    from .d import e\n")
    assert sorted(t for _, t in imported(source, "p.q.m")) == ["p.b", "p.q", "p.q.d", "x.y"]
    package = tmp_path / "__init__.py"
    package.write_text("from .b import c\n")
    assert [t for _, t in imported(package, "p.q")] == ["p.q.b"]
    assert module_name(ROOT / "harness" / "report" / "html.py") == "harness.report.html"
    assert module_name(ROOT / "sipworker" / "__init__.py") == "sipworker"


@pytest.mark.parametrize(("lower", "upper"), FORBIDDEN, ids=[f"{lo}-imports-{up}" for lo, up in FORBIDDEN])
def test_no_floor_imports_one_above_it(lower: str, upper: str) -> None:
    assert (ROOT / lower).is_dir()
    assert upward_imports(lower, upper) == []


def module_graph() -> dict[str, set[str]]:
    """Every module of the four packages and the modules of theirs it imports (``from . import x`` counts
    as importing ``x`` when ``x`` is a module)."""
    paths = {module_name(p): p for pkg in ("mock_api", "harness", "sipworker", "audio_fixtures")
             for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {f"{t}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 for a in node.names for t in [_base(node, name, path)]}
        targets = {t for _, t in imported(path, name)} | names
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def _base(node: ast.ImportFrom, name: str, path: Path) -> str:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return base


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or around a loop (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                found.append(sorted([*group, v]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_loop_and_nothing_else() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    """Not even for type checking: a cycle means neither module can be read, tested or moved alone (the
    app module and the route modules that needed its body reader were one such knot)."""
    assert cycles(module_graph()) == []
