"""Constructors only assign: a task, a file or a connection starts in an
explicit `start()`, a factory or an async context manager, never in
`__init__` (a half-built object must not own running work)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "registry_local"

# Calls that start work or open something.
_STARTING = {"create_task", "ensure_future", "open", "FileIO", "mkdir", "connect", "to_thread"}


def _called(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name):
            return node.func.id
        if isinstance(node.func, ast.Attribute):
            return node.func.attr
    return None


def _starting_constructors(source: str, filename: str) -> list[str]:
    found = []
    for cls in ast.walk(ast.parse(source, filename)):
        if not isinstance(cls, ast.ClassDef):
            continue
        for method in cls.body:
            if isinstance(method, ast.FunctionDef) and method.name == "__init__":
                calls = {c for n in ast.walk(method) if (c := _called(n)) in _STARTING}
                found += [f"{filename}: {cls.name}.__init__ calls {c}" for c in sorted(calls)]
    return found


def test_a_constructor_that_starts_work_is_found() -> None:
    source = "class A:\n    def __init__(self):\n        self.t = asyncio.create_task(f())\n"
    assert _starting_constructors(source, "a.py") == ["a.py: A.__init__ calls create_task"]


def test_no_constructor_in_the_package_starts_work() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += _starting_constructors(path.read_text(), str(path.relative_to(PACKAGE)))
    assert found == []
