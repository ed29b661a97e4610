"""tools/sql_mutants.py: one mutant per site of each kind, stable ids, the header kept, and scoring with equivalents."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tools import mutate, sql_mutants

MODEL = """-- model: toy
-- grain: k
with src as (
    select * from range(6) as t (x)
),

final as (
    select
        x % 2 as k,
        count(*) filter (where x > 1) as n_big,
        arg_max(x, x) as top,
        list(x order by x // 4, x desc) as xs
    from src
    where x < 10
    group by x % 2
)

select * from final
"""


def write_model(root: Path, text: str = MODEL, name: str = "toy.sql") -> str:
    path = root / "src" / "toy" / "sql" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path.relative_to(root))


def test_each_site_of_each_kind_is_one_mutant_of_that_node_only(tmp_path):
    parsed = sql_mutants.parse_file(tmp_path, write_model(tmp_path))
    mutants = list(sql_mutants.mutants_of(parsed))
    got = sorted((m.kind, m.before, m.after) for m in mutants)
    assert got == [
        ("arg-min-max", "ARG_MAX(x, x)", "ARG_MIN(x, x)"),
        ("comparison", "x < 10", "x <= 10"),
        ("comparison", "x > 1", "x >= 1"),
        ("filter", "COUNT(*) FILTER(WHERE x > 1)", "COUNT(*)"),
        ("tie-break", "x ORDER BY x // 4, x DESC", "x ORDER BY x // 4"),
    ]
    baseline = parsed.text()
    assert baseline.startswith("-- model: toy\n-- grain: k\n")
    for m in mutants:
        assert m.text.startswith("-- model: toy\n-- grain: k\n")
        # One place changed: a single run of lines differs (pretty printing may wrap the node).
        ops = difflib.SequenceMatcher(None, baseline.splitlines(), m.text.splitlines()).get_opcodes()
        changed = [op for op in ops if op[0] != "equal"]
        assert len(changed) == 1 and changed[0][2] - changed[0][1] <= 3, (m.id, changed)


def test_ids_name_the_model_and_kind_and_survive_edits_elsewhere(tmp_path):
    before = {m.id for m in sql_mutants.mutants_of(sql_mutants.parse_file(tmp_path, write_model(tmp_path)))}
    edited = MODEL.replace("arg_max(x, x) as top,", "arg_max(x, x) as top,\n        min(x) as low,")
    after = {m.id for m in sql_mutants.mutants_of(sql_mutants.parse_file(tmp_path, write_model(tmp_path, edited)))}
    assert before == after
    assert all(i.startswith("toy:") for i in before)
    assert {i.split(":")[1] for i in before} == set(sql_mutants.KINDS)


def test_a_final_order_by_is_no_tie_break_site(tmp_path):
    text = "select x from range(3) as t (x) order by x desc, x\n"
    mutants = list(sql_mutants.mutants_of(sql_mutants.parse_file(tmp_path, write_model(tmp_path, text))))
    assert mutants == []


def test_a_file_sqlglot_cannot_parse_is_reported_and_not_mutated(tmp_path):
    write_model(tmp_path)
    write_model(tmp_path, "select $a[$b] as x\n", name="bad.sql")
    files, mutants, unparsed = sql_mutants.generate(tmp_path, "src/toy/sql/*.sql")
    assert [f.path for f in files] == ["src/toy/sql/toy.sql"]
    assert list(unparsed) == ["src/toy/sql/bad.sql"] and "Error tokenizing" in unparsed["src/toy/sql/bad.sql"]
    assert {m.path for m in mutants} == {"src/toy/sql/toy.sql"}


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A package that runs its one model in DuckDB, and a test that pins the model's result on rows 0..5."""
    root = tmp_path / "repo"
    write_model(root)
    (root / "src" / "toy" / "__init__.py").write_text(
        "from pathlib import Path\n\nimport duckdb\n\n\n"
        "def rows():\n"
        "    sql = (Path(__file__).parent / 'sql' / 'toy.sql').read_text()\n"
        "    return duckdb.sql(sql + ' order by k').fetchall()\n"
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_toy.py").write_text(
        "from toy import rows\n\n\n"
        "def test_rows():\n"
        "    assert rows() == [(0, 2, 4, [2, 0, 4]), (1, 2, 5, [3, 1, 5])]\n"
    )
    return root


def write_list(path: Path, equivalent: str = "") -> Path:
    path.write_text(
        'version = 1\n\n[sql]\nfiles = "src/toy/sql/*.sql"\ndefault_tests = ["tests/test_toy.py"]\n' + equivalent,
        encoding="utf-8",
    )
    return path


@pytest.mark.slow
def test_generated_mutants_are_scored_with_equivalents_left_out(toy, tmp_path, capsys):
    original = (toy / "src" / "toy" / "sql" / "toy.sql").read_text()
    listing = write_list(tmp_path / "mutants.toml")
    assert mutate.main(["--mutants", str(listing), "--root", str(toy), "--threshold", "0.9"]) == 1
    out = capsys.readouterr().out
    # x < 10 on rows 0..5 changes nothing: the one survivor; the other four change the result.
    survivors = [ln for ln in out.splitlines() if ln.startswith("SURVIVED")]
    assert len(survivors) == 1 and "'x < 10' -> 'x <= 10'" in survivors[0]
    assert "sqlglot mutants: 4/5 killed (80.0%)" in out
    assert (toy / "src" / "toy" / "sql" / "toy.sql").read_text() == original
    survivor_id = survivors[0].split()[1].rstrip(":")
    equivalent = f'\n[[sql.equivalent]]\nid = "{survivor_id}"\nwhy = "every row is below 10"\n'
    listing = write_list(tmp_path / "mutants.toml", equivalent)
    assert mutate.main(["--mutants", str(listing), "--root", str(toy), "--threshold", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "sqlglot mutants: 4/4 killed (100.0%), 1 equivalent left out" in out
    assert f"EQUIVALENT {survivor_id}" in out and "(every row is below 10)" in out


def test_an_equivalent_sqlglot_no_longer_makes_is_stale(toy, tmp_path, capsys):
    listing = write_list(tmp_path / "mutants.toml", '\n[[sql.equivalent]]\nid = "toy:comparison:gone"\nwhy = "x"\n')
    assert mutate.main(["--mutants", str(listing), "--root", str(toy), "--check"]) == 2
    assert "STALE toy:comparison:gone: stale, [[sql.equivalent]] names a mutant no longer made" in (
        capsys.readouterr().out
    )
