"""The project's promises about itself: layering, sizes, and docs that match the code."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from stream.settings import describe_variables

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("stream", "batcher")

# The folders are the data flow: Electrum -> producers -> batcher -> fan-out -> transports.
# Each of our folders may import only the folders listed here (and itself). The root
# modules of `stream/` (app, cli, serving, services, settings, metrics) do the wiring and
# are free, except that nothing below them may import the wiring back, but the edges
# that are handed the wired `Services` (transports, web).
ALLOWED: dict[str, set[str]] = {
    "batcher": {"batcher"},
    "batcher.store": {"batcher.events"},
    "stream.electrum": set(),
    "stream.producers": {"stream.electrum", "stream.settings", "batcher"},
    "stream.fanout": {"batcher"},
    "stream.transports": {
        "stream.fanout", "stream.web", "stream.services", "stream.electrum", "batcher",
    },
    "stream.web": {"stream.fanout", "stream.services", "stream.electrum", "batcher"},
}
# The package root itself (``from stream import __version__``) is open to every folder: an
# exact match, never a prefix, or every ``stream.*`` module would pass.
ROOT_PACKAGES = {"stream", "batcher"}
# Storage engines see only the interface, the shared base and the row codecs.
ENGINE_IMPORTS = {"batcher.store.interface", "batcher.store.base", "batcher.store.rows"}

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


@cache
def our_modules() -> frozenset[str]:
    return frozenset(module_name(p) for p in sources(*PACKAGES))


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(path: Path, tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(path, node)
            yield base
            # `from package import module` imports the module too.
            yield from (f"{base}.{alias.name}" for alias in node.names)


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Every module of ours (or outside package) that ``path`` imports, at any depth of
    the file (function-level imports count: they are still a dependency)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for target in _targets(path, tree):
        top = target.split(".")[0]
        if top not in PACKAGES:
            found.add(top)
        elif target in our_modules():
            found.add(target)
    return frozenset(found)


def folder_of(module: str) -> str:
    """The `ALLOWED` entry that governs ``module`` (its longest matching prefix)."""
    matches = [f for f in ALLOWED if module == f or module.startswith(f + ".")]
    return max(matches, key=len) if matches else module


def within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("path", sources("batcher"), ids=lambda p: str(p.relative_to(REPO)))
def test_batcher_never_imports_the_streaming_side(path: Path) -> None:
    forbidden = {"stream", "starlette", "sse_starlette", "aiorpcx", "uvicorn", "websockets"}
    bad = {m for m in imports_of(path) if m.split(".")[0] in forbidden}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sources("stream"), ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_electrum_package_speaks_aiorpcx(path: Path) -> None:
    if "electrum" in path.parts:
        return
    assert "aiorpcx" not in imports_of(path)


@pytest.mark.parametrize("path", sources(*PACKAGES), ids=lambda p: str(p.relative_to(REPO)))
def test_each_folder_imports_only_what_comes_before_it_in_the_flow(path: Path) -> None:
    module = module_name(path)
    folder = folder_of(module)
    if folder not in ALLOWED:
        return  # a wiring module at stream/'s root
    allowed = ALLOWED[folder] | {folder}
    ours = {m for m in imports_of(path) if m.split(".")[0] in PACKAGES} - ROOT_PACKAGES
    bad = sorted(m for m in ours if not within(m, allowed))
    assert not bad, f"{module} ({folder}/) imports {bad}"


@pytest.mark.parametrize(
    "path", sources("batcher/store"), ids=lambda p: str(p.relative_to(REPO))
)
def test_storage_engines_import_only_the_interface_base_and_rows(path: Path) -> None:
    if path.name == "__init__.py":
        return  # the factory: it picks an engine
    # An engine's own parts (``postgres_schema`` for ``postgres``) are its business.
    own = f"batcher.store.{path.stem.split('_')[0]}_"
    ours = {m for m in imports_of(path) if m.startswith("batcher.store")}
    bad = {m for m in ours - ENGINE_IMPORTS if not m.startswith(own)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_no_import_cycles() -> None:
    graph = {
        module_name(p): {m for m in imports_of(p) if m in our_modules()}
        for p in sources(*PACKAGES)
    }
    # A package's __init__ importing its own modules is how packages re-export: a cycle
    # counts only if it runs through at least one module that is not an ancestor package.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):
                continue  # a module importing its own package's __init__ re-exports
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _too_big(path: Path) -> Iterator[str]:
    source = path.read_text()
    where = path.relative_to(REPO)
    if (lines := source.count("\n")) > MAX_MODULE_LINES:
        yield f"{where}: {lines} lines (max {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            limit = MAX_CLASS_LINES
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_FUNCTION_LINES
        else:
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > limit:
            yield f"{where}:{node.lineno} {node.name}: {length} lines (max {limit})"


def test_modules_classes_and_functions_stay_small() -> None:
    found = [problem for path in sources(*PACKAGES) for problem in _too_big(path)]
    assert not found, "\n".join(found)


def test_readme_documents_every_variable_and_both_commands() -> None:
    readme = (REPO / "README.md").read_text()
    for name, _, _ in describe_variables():
        assert f"`{name}`" in readme, f"README does not document {name}"
    assert "scripts/test" in readme
    assert ".venv/bin/chainwire serve" in readme


def test_architecture_names_every_folder() -> None:
    architecture = (REPO / "ARCHITECTURE.md").read_text()
    folders = {p.parent.relative_to(REPO) for p in sources(*PACKAGES)}
    missing = sorted(str(f) for f in folders if f"`{f}/`" not in architecture)
    assert not missing, f"ARCHITECTURE.md does not name {missing}"


def test_procfile_runs_the_server_on_port() -> None:
    assert (REPO / "Procfile").read_text().strip() == (
        "web: chainwire serve --host 0.0.0.0 --port $PORT"
    )
