"""Small rooms: no project file over 400 lines, no function over 60 (issue 27).

A file past 400 lines has usually grown a second job, and a function past 60 lines a
second step that wants a name; both are read more often than they are written. A
function's length is counted from its ``def`` to its last line, without its
docstring: the docstring says what the arguments and shapes mean, and the limit should
never argue for saying less there. Tests are outside the count (a table of cases reads
best in one place).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("scene_contract", "training", "model_export", "service", "bench")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def project_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def function_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the function's end, less its docstring."""
    assert function.end_lineno is not None
    lines = function.end_lineno - function.lineno + 1
    first = function.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        assert first.end_lineno is not None
        lines -= first.end_lineno - first.lineno + 1
    return lines


def long_files() -> dict[str, int]:
    found = {}
    for path in project_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_FILE_LINES:
            found[path.relative_to(REPO).as_posix()] = lines
    return found


def long_functions() -> dict[str, int]:
    """``path:qualified.name`` → lines, for every function over the limit."""
    found = {}
    for path in project_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, function in _functions(tree, ""):
            lines = function_lines(function)
            if lines > MAX_FUNCTION_LINES:
                found[f"{path.relative_to(REPO).as_posix()}:{name}"] = lines
    return found


def _functions(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")


def test_no_project_file_is_over_400_lines() -> None:
    found = long_files()
    assert not found, f"files over {MAX_FILE_LINES} lines (split them by job): {found}"


def test_no_function_is_over_60_lines() -> None:
    found = long_functions()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines, docstring aside: {found}"


def test_the_count_leaves_docstrings_out() -> None:
    """A documented 60-line function passes; one more line of code does not."""
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    docstring = '    """Why.\n\n    Args:\n        nothing.\n    """\n'
    tree = ast.parse(f"def f():\n{docstring}{body}\n")
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    assert function_lines(function) == 60
    longer = ast.parse(f"def f():\n{docstring}{body}\n    x = 0\n").body[0]
    assert isinstance(longer, ast.FunctionDef)
    assert function_lines(longer) == 61
