"""The house rules on size, checked rather than promised: no file over 450 lines, no function over 50.

Every Python file of the project counts (package, tests, properties, benchmarks, examples); a
function's length runs from its `def` line to its last line, decorators excluded.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ("esper", "tests", "properties", "benchmarks", "examples")
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 50


def python_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for tree in TREES for p in (root / tree).rglob("*.py"))


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, length) of every function or method in `source` longer than `limit` lines."""
    nodes = ast.walk(ast.parse(source))
    functions = (n for n in nodes if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    lengths = ((f.name, f.end_lineno - f.lineno + 1) for f in functions)
    return [(name, length) for name, length in lengths if length > limit]


def test_the_checks_see_the_project() -> None:
    files = python_files()
    assert len(files) > 100
    assert ROOT / "esper" / "core" / "lifecycle.py" in files


def test_long_functions_finds_a_long_function() -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(50))
    source = f"def short():\n    return 1\n\nclass A:\n    def long(self):\n{body}\n"
    assert long_functions(source) == [("long", 51)]


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_file_and_function_sizes(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    lines = source.count("\n") + (not source.endswith("\n") and bool(source))
    assert lines <= MAX_FILE_LINES, f"{lines} lines (limit {MAX_FILE_LINES})"
    assert long_functions(source) == [], f"functions over {MAX_FUNCTION_LINES} lines"
