"""The house's shape rules that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "operator" / "inferfleet"
MAX_FUNCTION_LINES = 60


def long_functions() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                name = (str(path.relative_to(PACKAGE)), node.name)
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{name[0]}:{node.lineno} {node.name} has {lines} lines")
    return found


def test_no_function_in_the_operator_is_longer_than_60_lines() -> None:
    assert long_functions() == []
