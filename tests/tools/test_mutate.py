"""tools/mutate.py: stale mutants are reported, mutants are planted only in a copy, and the score is right."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import mutate

REPO = Path(__file__).resolve().parents[2]


def write_list(path: Path, *entries: str) -> Path:
    path.write_text("version = 1\n" + "".join(f"\n[[mutant]]\n{e}\n" for e in entries), encoding="utf-8")
    return path


def mutant_entry(id_: str, file: str, find: str, replace: str, tests: str = "tests/test_toy.py") -> str:
    return f"id = {id_!r}\nfile = {file!r}\nfind = {find!r}\nreplace = {replace!r}\ntests = [{tests!r}]"


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A repository with a one-module package and a test that pins its age boundary (not its wording)."""
    root = tmp_path / "repo"
    (root / "src" / "toy").mkdir(parents=True)
    (root / "src" / "toy" / "__init__.py").write_text(
        "def is_adult(age):\n    return age >= 18\n\n\n"
        'def label(age):\n    return "adult" if is_adult(age) else "minor"\n'
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_toy.py").write_text(
        "from toy import is_adult\n\n\ndef test_eighteen_is_adult():\n    assert is_adult(18) and not is_adult(17)\n"
    )
    return root


def test_a_mutant_whose_text_is_gone_is_reported_stale_and_fails_the_run(toy, tmp_path, capsys):
    listing = write_list(
        tmp_path / "mutants.toml",
        mutant_entry("boundary", "src/toy/__init__.py", "age >= 18", "age > 18"),
        mutant_entry("refactored-away", "src/toy/__init__.py", "age >= 21", "age > 21"),
        mutant_entry("file-gone", "src/toy/old.py", "x", "y"),
    )
    assert mutate.main(["--mutants", str(listing), "--root", str(toy), "--check"]) == 2
    out = capsys.readouterr().out
    assert "STALE refactored-away: stale, src/toy/__init__.py no longer contains 'age >= 21'" in out
    assert "STALE file-gone: stale, src/toy/old.py does not exist" in out
    assert "boundary" not in out
    assert "2 of 3 mutants no longer apply" in out


def test_a_text_found_twice_is_ambiguous_not_planted_at_both():
    twice = mutate.Mutant("twice", "src/a.sql", "a < b", "a <= b", ("tests/t.py",))
    with pytest.raises(mutate.MutantError, match=r"twice: ambiguous, src/a.sql contains 'a < b' 2 times"):
        mutate.mutated_text("a < b or a < b", twice)


def test_a_malformed_list_names_the_mutant_and_the_problem(tmp_path):
    outside = write_list(tmp_path / "out.toml", mutant_entry("outside", "tests/x.py", "a", "b"))
    with pytest.raises(mutate.MutantError, match=r"mutant outside: file must be under src/, got 'tests/x.py'"):
        mutate.load_mutants(outside)
    same = write_list(tmp_path / "same.toml", mutant_entry("noop", "src/x.py", "a", "a"))
    with pytest.raises(mutate.MutantError, match=r"mutant noop: find must be non-empty and differ from replace"):
        mutate.load_mutants(same)
    twice = write_list(tmp_path / "twice.toml", *[mutant_entry("dup", "src/x.py", "a", "b")] * 2)
    with pytest.raises(mutate.MutantError, match=r"repeated mutant ids \['dup'\]"):
        mutate.load_mutants(twice)


def test_a_mutant_is_planted_only_in_the_copy_and_restored_after(toy, tmp_path):
    original = (toy / "src" / "toy" / "__init__.py").read_text()
    copy = mutate.package_copy(toy, tmp_path / "copy")
    boundary = mutate.Mutant("boundary", "src/toy/__init__.py", "age >= 18", "age > 18", ("tests/test_toy.py",))
    with mutate.planted(boundary, copy) as target:
        assert target == copy / "toy" / "__init__.py"
        assert "age > 18" in target.read_text()
        assert (toy / "src" / "toy" / "__init__.py").read_text() == original
    assert target.read_text() == original


@pytest.mark.slow
def test_killed_and_surviving_mutants_give_the_score_and_name_the_survivor(toy, tmp_path, capsys):
    listing = write_list(
        tmp_path / "mutants.toml",
        mutant_entry("boundary", "src/toy/__init__.py", "age >= 18", "age > 18"),
        mutant_entry("wording", "src/toy/__init__.py", '"minor"', '"child"'),
    )
    original = (toy / "src" / "toy" / "__init__.py").read_text()
    assert mutate.main(["--mutants", str(listing), "--root", str(toy), "--threshold", "0.9"]) == 1
    out = capsys.readouterr().out
    assert "killed   boundary" in out
    assert "survived wording" in out
    assert "listed mutants (version 1): 1/2 killed (50.0%)" in out
    assert "mutation score: 1/2 killed (50.0%)" in out
    assert "SURVIVED wording: src/toy/__init__.py: '\"minor\"' -> '\"child\"'" in out
    assert (toy / "src" / "toy" / "__init__.py").read_text() == original
    assert mutate.main(["--mutants", str(listing), "--root", str(toy), "--threshold", "0.5", "--only", "boundary"]) == 0


def test_the_shipped_list_applies_to_the_working_tree_and_names_existing_tests():
    version, mutants = mutate.load_mutants(mutate.MUTANTS)
    assert version >= 1 and len(mutants) >= 30
    assert mutate.stale_mutants(mutants, REPO) == []
    missing = {t for m in mutants for t in m.tests if not (REPO / t.split("::")[0]).is_file()}
    assert missing == set()


def test_sqlglot_parses_every_shipped_model_and_the_sql_table_names_existing_tests():
    config = mutate.load_sql_config(mutate.MUTANTS)
    assert config is not None
    generated, parsed, unparsed = mutate.sql_mutants(REPO, config)
    assert unparsed == {}
    assert len(parsed) == len(list(REPO.glob(config.files))) and len(generated) >= 150
    assert set(config.equivalent) <= {m.id for m in generated}
    named = {t for m in generated for t in m.tests} | {t for _, tests in config.groups for t in tests}
    assert {t for t in named if not (REPO / t.split("::")[0]).is_file()} == set()
