"""tools/py_mutants.py: one mutant per comparison, one changed operator each, stable ids, mirrored tests."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tools import mutate, py_mutants

MODULE = '''"""A toy module."""


def is_adult(age):
    # a comment ast drops
    return age >= 18


def band(x):
    return "low" if x < 10 else "high" if 20 > x else "top"


def between(x):
    return 1 < x < 5  # a chained comparison is not a site
'''


def write_module(root: Path, text: str = MODULE) -> str:
    path = root / "src" / "toy" / "ages.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path.relative_to(root))


def test_each_single_comparison_is_one_mutant_of_that_operator_only(tmp_path):
    files, mutants, unparsed = py_mutants.generate(tmp_path, "src/toy/*.py")
    assert files == [] and mutants == [] and unparsed == {}
    write_module(tmp_path)
    files, mutants, unparsed = py_mutants.generate(tmp_path, "src/toy/*.py")
    assert sorted((m.before, m.after) for m in mutants) == [
        ("20 > x", "20 >= x"),
        ("age >= 18", "age > 18"),
        ("x < 10", "x <= 10"),
    ]
    baseline = files[0].text()
    assert "a comment ast drops" not in baseline and "def is_adult(age):" in baseline
    for m in mutants:
        ops = difflib.SequenceMatcher(None, baseline.splitlines(), m.text.splitlines()).get_opcodes()
        assert [op[0] for op in ops if op[0] != "equal"] == ["replace"] and m.id.startswith("ages.py:comparison:")


def test_ids_survive_edits_elsewhere_and_a_module_that_does_not_parse_is_reported(tmp_path):
    write_module(tmp_path)
    before = {m.id for m in py_mutants.generate(tmp_path, "src/toy/*.py")[1]}
    write_module(tmp_path, MODULE + "\n\nLIMIT = 3\n")
    assert {m.id for m in py_mutants.generate(tmp_path, "src/toy/*.py")[1]} == before
    (tmp_path / "src" / "toy" / "broken.py").write_text("def f(:\n", encoding="utf-8")
    _, _, unparsed = py_mutants.generate(tmp_path, "src/toy/*.py")
    assert list(unparsed) == ["src/toy/broken.py"]


def test_a_module_is_tested_by_the_tests_that_mirror_it(tmp_path):
    (tmp_path / "tests" / "journeys").mkdir(parents=True)
    for name in ("test_ages.py", "test_ages_edge.py", "test_agesx.py"):
        (tmp_path / "tests" / "journeys" / name).write_text("", encoding="utf-8")
    assert py_mutants.mirrored_tests(tmp_path, "src/journeys/ages.py") == [
        "tests/journeys/test_ages.py",
        "tests/journeys/test_ages_edge.py",
    ]


@pytest.mark.slow
def test_the_shipped_python_table_parses_every_module_and_names_existing_tests():
    repo = Path(__file__).resolve().parents[2]
    config = mutate.load_sql_config(mutate.MUTANTS, "python")
    assert config is not None
    generated, parsed, unparsed = mutate.py_mutants(repo, config)
    assert unparsed == {} and len(parsed) == len(list(repo.glob(config.files))) and len(generated) >= 50
    assert set(config.equivalent) <= {m.id for m in generated}
    assert {t for m in generated for t in m.tests if not (repo / t.split("::")[0]).is_file()} == set()
