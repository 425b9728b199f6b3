"""Every public module-level class in the package says what it is, in a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "registry_local"


def _undocumented(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")
        and ast.get_docstring(node) is None
    ]


def test_the_package_is_there() -> None:
    assert any(PACKAGE.rglob("*.py"))


def test_every_public_class_has_a_docstring() -> None:
    missing = [entry for path in sorted(PACKAGE.rglob("*.py")) for entry in _undocumented(path)]
    assert missing == [], "public classes without a docstring:\n" + "\n".join(missing)
