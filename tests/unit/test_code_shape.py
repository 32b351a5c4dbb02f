"""The package stays readable in pieces: no module over 500 lines, no function over 60 lines
unless the line above it says why (`# long-function: <reason>`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "fhir_adapter"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
REASON = re.compile(r"^\s*#\s*long-function:\s*\S")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _excused(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """The line directly above the `def` (or above its first decorator) gives a reason."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return first >= 2 and bool(REASON.match(lines[first - 2]))


def long_functions(path: Path) -> list[str]:
    """`path:line name (N lines)` for each function or method over the limit without a reason."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_FUNCTION_LINES and not _excused(lines, node):
            where = path.relative_to(PACKAGE.parent)
            found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_module_is_over_500_lines() -> None:
    too_long = [
        f"{path.relative_to(PACKAGE.parent)} ({count} lines)"
        for path in _modules()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not too_long, "split these modules into cohesive parts:\n" + "\n".join(too_long)


def test_no_function_is_over_60_lines_without_a_reason() -> None:
    too_long = [found for path in _modules() for found in long_functions(path)]
    assert not too_long, (
        "extract helpers, or write `# long-function: <reason>` on the line above the def:\n"
        + "\n".join(too_long)
    )


def test_the_reason_comment_is_what_excuses_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = tmp_path / "probe.py"
    for header, flagged in (
        ("def f():", True),
        ("# long-function: a table reads best whole\ndef f():", False),
        ("# long-function:\ndef f():", True),  # a reason must be given
        ("# long-function: a route\n@decorator\ndef f():", False),
        ("@decorator\n# long-function: misplaced\ndef f():", True),
    ):
        source.write_text(f"{header}\n{body}\n")
        text = source.read_text()
        node = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef))
        assert _excused(text.splitlines(), node) is not flagged, header
