"""The electrum package's own layering: no import circles, and the subscription side never
reaches the pool (it sees a ``PoolHost``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "stream" / "electrum"


def internal_imports(path: Path) -> set[str]:
    """Sibling modules ``path`` imports (``from .x import`` / ``from stream.electrum.x``),
    TYPE_CHECKING blocks included: a circle hidden there is still a circle."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.module.startswith("stream.electrum."):
                found.add(node.module.split(".")[2])
    return found


def graph() -> dict[str, set[str]]:
    return {p.stem: internal_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_the_electrum_modules_import_each_other_without_circles() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import circle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in edges.get(module, set()):
            visit(imported, (*path, module))
        done.add(module)

    for module in edges:
        visit(module, ())


def test_only_the_package_entry_imports_the_pool() -> None:
    # The subscriptions, batches and selection get what they need passed in (PoolHost,
    # ServerSet), so nothing below the facade depends on it.
    importers = {module for module, imports in graph().items() if "pool" in imports}
    assert importers == set()
