"""The shape of the code, checked: the module map in docs/architecture.md stays true.

No import cycle in ``src/`` (counting imports made only for type checking), no module over
500 lines or class over 350, the request path never imports the middleware back, and only
``cache.py`` and ``_redis/`` hold a Redis client (elsewhere ``redis`` is imported for its
exceptions only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "redis_cache_middleware"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 350
#: What the Redis side may use besides itself: types, codecs, keys and plumbing.
INFRASTRUCTURE = {"_types", "_timeouts", "background", "entry", "exceptions", "keys", "stats"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name under it (``cache``, ``_redis.store``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "__init__"] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that ``name`` imports, in any branch (TYPE_CHECKING too)."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[: len(package) - (node.level - 1)]
        stem = [*base, *(node.module.split(".") if node.module else [])]
        for alias in node.names:
            for candidate in (".".join([*stem, alias.name]), ".".join(stem)):
                if candidate in known:
                    targets.add(candidate)
                    break
    return targets - {name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found) - {"__init__"}
    return {name: imports_of(name, path, known) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    seen: dict[str, int] = {}
    out: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                out.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in seen:
                visit(nxt, stack)
        stack.pop()
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [])
    return out


def test_the_import_graph_is_read_whole() -> None:
    # The checks below are only as good as the graph: it must see the edges we know of.
    graph = import_graph()
    assert "cache" in graph["middleware"] and "_redis.lookup" in graph["cache"]
    assert "policy" in graph["lookups"] and "cache" in graph["guard"]  # a TYPE_CHECKING import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_nothing_imports_the_middleware_but_the_package() -> None:
    importers = {name for name, deps in import_graph().items() if "middleware" in deps}
    assert importers == {"__init__"}


def test_the_redis_side_never_imports_the_facade_or_the_request_path() -> None:
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("_redis."):
            outside = {d for d in deps if not d.startswith("_redis")}
            assert outside <= INFRASTRUCTURE, f"{name} imports {outside - INFRASTRUCTURE}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_and_classes_stay_small(name: str) -> None:
    path = modules()[name]
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{name}: {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"{name}.{node.name}: {size} lines"


def test_only_the_cache_holds_a_redis_client() -> None:
    allowed = {"cache"}
    for name, path in modules().items():
        if name in allowed or name.startswith("_redis"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top = node.module.split(".")[0]
                if top == "redis":
                    assert node.module == "redis.exceptions", f"{name} imports {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "redis", f"{name} imports {alias.name}"
