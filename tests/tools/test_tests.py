"""The test suite's own rules: every `pytest.raises` names the message it expects."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def raises_without_match(source: str) -> list[int]:
    """Lines of `pytest.raises(...)` (or a bare imported `raises(...)`) calls given no `match=`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        is_raises = (isinstance(f, ast.Attribute) and f.attr == "raises" and ast.unparse(f.value) == "pytest") or (
            isinstance(f, ast.Name) and f.id == "raises"
        )
        if is_raises and not any(k.arg == "match" for k in node.keywords):
            lines.append(node.lineno)
    return lines


def test_the_scanner_finds_a_raises_without_match_and_accepts_one_with_it():
    source = (
        "import pytest\n"
        "from pytest import raises\n"
        "with pytest.raises(ValueError):\n    pass\n"
        "with pytest.raises(ValueError, match='bad'):\n    pass\n"
        "with raises(KeyError):\n    pass\n"
    )
    assert raises_without_match(source) == [3, 7]


def test_every_pytest_raises_in_the_suite_names_its_message():
    # An exception of the right type but the wrong message (another check failing first) would pass unnoticed.
    missing = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in raises_without_match(path.read_text(encoding="utf-8"))
    ]
    assert not missing, "pytest.raises without match=: " + ", ".join(missing)
