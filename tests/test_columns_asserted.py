"""Every column of every table kept in the published warehouse is asserted by at least one test.

A column of table T counts as asserted when one of these holds (the test files are read with `ast`, never
imported):

1. golden: a `test_*` function calls `assert_matches_golden(con, "<case>", "T", ...)` with literal names
   (tests/journeys/golden_compare.py: every column of the header, every row) and
   tests/golden/<case>/expected_T.csv has the column in its header;
2. registered: tests/asserted_columns.toml `[asserted.T]` names `"tests/<file>.py::<test>"` for the column, and
   that test function exists, asserts (an `assert` or a call to an `assert_*` helper), and mentions both T and
   the column as a word of a string or as an identifier, in its own body, in a function of the same module
   that it calls (followed transitively) or in an upper-case module constant those use; comments and
   docstrings do not count;
3. enumerated: `[enumerated]` maps a column-name suffix to a test that itself lists the catalog's columns
   ending in it (it mentions the catalog, `columns` and the suffix as a string) and checks each.

`[pending]` lists columns no test asserts yet; it may only shrink: a pending column that becomes asserted fails
the guard until it is taken off the list.
"""

from __future__ import annotations

import ast
import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from journeys.models import load_catalog

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
REGISTRY = TESTS / "asserted_columns.toml"
GOLDEN_HELPER = "assert_matches_golden"
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ReadTest:
    """What the guard knows of one test: the words it mentions and whether it asserts."""

    words: frozenset[str]
    strings: frozenset[str]
    asserts: bool


@functools.lru_cache(maxsize=256)
def _parse(source: str) -> ast.Module:
    # each registry entry reads its test module again: parse every module once
    return ast.parse(source)


@functools.lru_cache(maxsize=4096)
def _read_cached(source: str, name: str) -> ReadTest | None:
    return _read_test(source, name)


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _nodes(function: ast.FunctionDef) -> Iterable[ast.AST]:
    for statement in function.body:
        if not _is_docstring(statement):
            yield from ast.walk(statement)


def _called_names(function: ast.FunctionDef) -> set[str]:
    return {n.func.id for n in _nodes(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _constants(tree: ast.Module) -> dict[str, ast.AST]:
    return {
        t.id: n.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and t.id.isupper()
    }


def read_test(source: str, name: str) -> ReadTest | None:
    """The test `name` of a module's source with the same-module functions it calls and module constants it uses.

    None when it is absent.
    """
    return _read_cached(source, name)


def _read_test(source: str, name: str) -> ReadTest | None:
    tree = _parse(source)
    functions, constants = _functions(tree), _constants(tree)
    if not name.startswith("test_") or name not in functions:
        return None
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(n for n in _called_names(functions[current]) if n in functions)
    body = [n for f in sorted(seen) for n in _nodes(functions[f])]
    used = sorted({n.id for n in body if isinstance(n, ast.Name) and n.id in constants})
    words: set[str] = set()
    strings: set[str] = set()
    asserts = False
    for node in body + [n for c in used for n in ast.walk(constants[c])]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
            words.update(WORD.findall(node.value))
        elif isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            words.add(node.arg)
        if isinstance(node, ast.Assert) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr).startswith("assert_")
        ):
            asserts = True
    return ReadTest(frozenset(words), frozenset(strings), asserts)


def registration_error(source: str, name: str, table: str, column: str) -> str | None:
    """Why test `name` does not count as asserting `table.column`; None when it does."""
    test = read_test(source, name)
    if test is None:
        return "no such test function"
    if not test.asserts:
        return "it asserts nothing"
    missing = [w for w in (table, column) if w not in test.words]
    return f"it does not mention {' or '.join(missing)}" if missing else None


def enumeration_error(source: str, name: str, suffix: str) -> str | None:
    """Why test `name` does not count as checking every catalog column ending in `suffix`; None when it does."""
    test = read_test(source, name)
    if test is None:
        return "no such test function"
    if not test.asserts:
        return "it asserts nothing"
    if not ({"load_catalog", "catalog"} & test.words and "columns" in test.words and suffix in test.strings):
        return f"it does not list the catalog's columns ending in {suffix!r}"
    return None


def golden_comparisons(source: str) -> list[tuple[str, str, int]]:
    """(case, table, line) of every `assert_matches_golden` call with literal names inside a `test_*` function."""
    found = []
    for name, function in _functions(_parse(source)).items():
        if not name.startswith("test_"):
            continue
        for node in _nodes(function):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "") != GOLDEN_HELPER:
                continue
            args = {
                **dict(zip(["con", "case", "table"], node.args, strict=False)),
                **{k.arg: k.value for k in node.keywords},
            }
            case, table = args.get("case"), args.get("table")
            if all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in (case, table)):
                found.append((case.value, table.value, node.lineno))  # type: ignore[union-attr]
    return found


def _read_header(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[0].split(",")


def _test_sources() -> dict[str, str]:
    return {
        str(p.relative_to(REPO)): p.read_text(encoding="utf-8")
        for p in sorted(TESTS.rglob("*.py"))
        if p.name.startswith("test_")
    }


def _split_ref(ref: str) -> tuple[str, str]:
    path, _, name = ref.partition("::")
    return path, name


@pytest.fixture(scope="module")
def kept() -> dict[str, list[str]]:
    return {m.name: list(m.columns) for m in load_catalog().kept()}


@pytest.fixture(scope="module")
def registry() -> Mapping[str, Mapping]:
    return tomllib.loads(REGISTRY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def coverage(kept, registry) -> dict[tuple[str, str], list[str]]:
    """Every (table, column) with an assertion that holds, and where; problems with the registry fail here."""
    sources = _test_sources()
    found: dict[tuple[str, str], list[str]] = {}
    problems = []
    for path, source in sources.items():
        for case, table, line in golden_comparisons(source):
            expected = TESTS / "golden" / case / f"expected_{table}.csv"
            if table not in kept or not expected.is_file():
                problems.append(f"{path}:{line}: {expected.relative_to(REPO)} of a kept table is not there")
                continue
            for column in _read_header(expected):
                if column not in kept[table]:
                    problems.append(f"{expected.relative_to(REPO)}: {column} is not a column of {table}")
                found.setdefault((table, column), []).append(f"{path}:{line} (golden {case})")
    for table, columns in registry.get("asserted", {}).items():
        for column, refs in columns.items():
            if column not in kept.get(table, []):
                problems.append(f"[asserted.{table}] {column}: not a column of a kept table")
                continue
            for ref in refs:
                path, name = _split_ref(ref)
                error = registration_error(sources.get(path, ""), name, table, column)
                if error:
                    problems.append(f"[asserted.{table}] {column} = {ref}: {error}")
                else:
                    found.setdefault((table, column), []).append(ref)
    for suffix, refs in registry.get("enumerated", {}).items():
        for ref in refs:
            path, name = _split_ref(ref)
            error = enumeration_error(sources.get(path, ""), name, suffix)
            if error:
                problems.append(f"[enumerated] {suffix} = {ref}: {error}")
                continue
            for table, columns in kept.items():
                for column in columns:
                    if column.endswith(suffix):
                        found.setdefault((table, column), []).append(ref)
    assert not problems, "asserted_columns.toml or a golden comparison is wrong:\n" + "\n".join(problems)
    return found


def test_every_kept_column_has_an_assertion(kept, registry, coverage):
    pending = {(t, c) for t, columns in registry.get("pending", {}).items() for c in columns}
    missing = [f"{t}.{c}" for t, columns in kept.items() for c in columns if (t, c) not in coverage.keys() | pending]
    assert not missing, (
        f"{len(missing)} kept columns have no assertion (register one in tests/asserted_columns.toml, "
        "see README 'Development'): " + ", ".join(missing)
    )


def test_pending_lists_only_columns_still_unasserted(kept, registry, coverage):
    pending = [(t, c) for t, columns in registry.get("pending", {}).items() for c in columns]
    unknown = [f"{t}.{c}" for t, c in pending if c not in kept.get(t, [])]
    done = [f"{t}.{c} ({', '.join(coverage[(t, c)])})" for t, c in pending if (t, c) in coverage]
    assert not unknown, "pending columns that are not kept columns: " + ", ".join(unknown)
    assert not done, "asserted now, take them off [pending]: " + ", ".join(done)


# ---------------------------------------------------------------- the guard's own reading

SOURCE = '''
def _rows(con):
    return con.sql("select n_channels from journeys").fetchall()


def test_through_a_helper(con):
    assert _rows(con) == [(2,)]


COLUMNS = "journey_id, n_events"


def test_through_a_constant(con):
    assert con.sql(f"select {COLUMNS} from journeys").fetchall() == [("A/j0001", 3)]


def test_in_a_comment_only(con):
    """Checks journeys.first_channel."""
    # first_channel of journeys
    assert con.sql("select 1 from journeys").fetchall()


def test_reads_but_asserts_nothing(con):
    con.sql("select last_channel from journeys").fetchall()


def test_golden(con):
    assert_matches_golden(con, "small_funnel", "journeys", order_by="journey_id")


def test_golden_named(con):
    assert_matches_golden(con, table="stage_conversion", case="boundaries", order_by="stage_index")


def test_golden_from_a_variable(con, case):
    assert_matches_golden(con, case, "journeys", order_by="journey_id")


def helper_not_a_test(con):
    assert_matches_golden(con, "small_funnel", "stage_dropout", order_by="stage_index")


def test_enumerates(published):
    for model in load_catalog().kept():
        for column in [c for c in model.columns if c.endswith("_text")]:
            assert column
'''


def test_a_column_counts_when_the_test_or_its_helper_reads_it_and_asserts():
    assert registration_error(SOURCE, "test_through_a_helper", "journeys", "n_channels") is None
    assert registration_error(SOURCE, "test_through_a_helper", "stage_funnel", "n_channels") == (
        "it does not mention stage_funnel"
    )
    assert registration_error(SOURCE, "test_in_a_comment_only", "journeys", "first_channel") == (
        "it does not mention first_channel"
    )
    assert registration_error(SOURCE, "test_reads_but_asserts_nothing", "journeys", "last_channel") == (
        "it asserts nothing"
    )
    assert registration_error(SOURCE, "test_through_a_constant", "journeys", "n_events") is None
    assert registration_error(SOURCE, "test_missing", "journeys", "n_channels") == "no such test function"
    assert registration_error(SOURCE, "_rows", "journeys", "n_channels") == "no such test function"


def test_only_literal_golden_comparisons_inside_tests_count():
    assert [(c, t) for c, t, _ in golden_comparisons(SOURCE)] == [
        ("small_funnel", "journeys"),
        ("boundaries", "stage_conversion"),
    ]


def test_an_enumerating_test_must_list_the_catalogs_columns_with_the_suffix():
    assert enumeration_error(SOURCE, "test_enumerates", "_text") is None
    assert (
        enumeration_error(SOURCE, "test_enumerates", "_at") == "it does not list the catalog's columns ending in '_at'"
    )
    assert enumeration_error(SOURCE, "test_through_a_helper", "_text") is not None
