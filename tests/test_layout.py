"""The project's promises about itself: layering, and docs that match the code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stream.settings import describe_variables

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("batcher"), ids=lambda p: p.name)
def test_batcher_never_imports_the_streaming_side(path: Path) -> None:
    forbidden = {"stream", "starlette", "sse_starlette", "aiorpcx", "uvicorn", "websockets"}
    bad = {m for m in imported_modules(path) if m.split(".")[0] in forbidden}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sources("stream"), ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_electrum_package_speaks_aiorpcx(path: Path) -> None:
    if "electrum" in path.parts:
        return
    assert not {m for m in imported_modules(path) if m.split(".")[0] == "aiorpcx"}


def test_readme_documents_every_variable_and_both_commands() -> None:
    readme = (REPO / "README.md").read_text()
    for name, _, _ in describe_variables():
        assert f"`{name}`" in readme, f"README does not document {name}"
    assert "scripts/test" in readme
    assert ".venv/bin/chainwire serve" in readme


def test_procfile_runs_the_server_on_port() -> None:
    assert (REPO / "Procfile").read_text().strip() == (
        "web: chainwire serve --host 0.0.0.0 --port $PORT"
    )
