"""Mutation score: plant each mutant of a fixed list in a copy of the package and run the tests that should kill it.

A mutant is one small, realistic bug written as file + exact text + replacement (tools/mutants.toml): a `>`
that should be `>=`, a dropped `event_id` tie-break, `arg_min` for `arg_max`, `count` for `count(distinct)`.
The text must occur exactly once in its file; one that no longer does (a refactor moved it) is reported as
stale and fails the run, so the list cannot silently shrink. Each mutant is planted in a copy of `src/` put
first on PYTHONPATH (the working tree is never edited), its tests run with `-x -m "not slow"`, and it counts
as killed when they fail (or time out). Before any mutant, the union of the selections must pass unmutated.

    python tools/mutate.py                      # every mutant, the score and the survivors
    python tools/mutate.py --only ID [--only ID]  # some mutants
    python tools/mutate.py --check              # only check that every mutant still applies (no tests)
    python tools/mutate.py --threshold 0.9      # exit 1 when fewer than 90% are killed

Exit status: 0 at or above the threshold, 1 below it, 2 when a mutant is stale or the unmutated tests fail.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from tools import py_mutants as py_mutants_module
    from tools import sql_mutants as sql_mutants_module
except ModuleNotFoundError:  # run as `python tools/mutate.py`: tools/ is on the path, the repository is not
    import py_mutants as py_mutants_module  # type: ignore[no-redef]
    import sql_mutants as sql_mutants_module  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = Path(__file__).resolve().with_name("mutants.toml")
PACKAGE_DIR = "src"
"""Only files under this folder are mutated: it is what the copy holds."""


class MutantError(ValueError):
    """The mutant list is malformed, or a mutant does not apply to its file (stale or ambiguous)."""


@dataclass(frozen=True)
class Mutant:
    """One planted bug: replace the single occurrence of `find` in `file` by `replace`."""

    id: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    why: str = ""
    text: str | None = None
    """The whole mutated file, for a mutant made by rewriting a parsed tree (tools/sql_mutants.py)."""


@dataclass(frozen=True)
class Outcome:
    """What the tests made of one mutant: killed, survived or timeout (counted as killed)."""

    mutant: Mutant
    status: str
    seconds: float
    detail: str = ""

    @property
    def killed(self) -> bool:
        """The tests noticed the mutant."""
        return self.status in ("killed", "timeout")


def load_mutants(path: Path) -> tuple[int, list[Mutant]]:
    """The list's version and its mutants; a missing field, an unknown key or a repeated id is an error."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - {"version", "mutant", "sql", "python"}
    if unknown:
        raise MutantError(f"{path}: unknown keys {sorted(unknown)}")
    version = data.get("version")
    if not isinstance(version, int):
        raise MutantError(f"{path}: version must be an integer")
    fields = {"id", "file", "find", "replace", "tests", "why"}
    mutants: list[Mutant] = []
    for i, entry in enumerate(data.get("mutant", []), start=1):
        where = f"{path}: mutant {entry.get('id', f'#{i}')}"
        if set(entry) - fields:
            raise MutantError(f"{where}: unknown keys {sorted(set(entry) - fields)}")
        missing = sorted(fields - {"why"} - set(entry))
        if missing:
            raise MutantError(f"{where}: missing {missing}")
        if not Path(entry["file"]).parts or Path(entry["file"]).parts[0] != PACKAGE_DIR:
            raise MutantError(f"{where}: file must be under {PACKAGE_DIR}/, got {entry['file']!r}")
        if not entry["find"] or entry["find"] == entry["replace"]:
            raise MutantError(f"{where}: find must be non-empty and differ from replace")
        if not entry["tests"] or not all(isinstance(t, str) and t for t in entry["tests"]):
            raise MutantError(f"{where}: tests must name at least one test file or node id")
        tests = tuple(entry["tests"])
        mutants.append(Mutant(entry["id"], entry["file"], entry["find"], entry["replace"], tests, entry.get("why", "")))
    ids = [m.id for m in mutants]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise MutantError(f"{path}: repeated mutant ids {repeated}")
    return version, mutants


def mutated_text(text: str, mutant: Mutant) -> str:
    """`text` with the mutant planted; MutantError when its text is not there exactly once."""
    if mutant.text is not None:
        return mutant.text
    count = text.count(mutant.find)
    if count == 0:
        raise MutantError(f"{mutant.id}: stale, {mutant.file} no longer contains {mutant.find!r}")
    if count > 1:
        raise MutantError(f"{mutant.id}: ambiguous, {mutant.file} contains {mutant.find!r} {count} times")
    return text.replace(mutant.find, mutant.replace)


def stale_mutants(mutants: Sequence[Mutant], root: Path) -> list[str]:
    """One message per mutant that does not apply to the files under `root` (missing file, text gone or repeated)."""
    problems = []
    for m in mutants:
        path = root / m.file
        if not path.is_file():
            problems.append(f"{m.id}: stale, {m.file} does not exist")
            continue
        try:
            mutated_text(path.read_text(encoding="utf-8"), m)
        except MutantError as exc:
            problems.append(str(exc))
    return problems


def package_copy(root: Path, dest: Path) -> Path:
    """A copy of `root`/src under `dest` (no bytecode), to plant mutants in; returns the copy's src folder."""
    copy = dest / PACKAGE_DIR
    shutil.copytree(root / PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return copy


@contextmanager
def planted(mutant: Mutant, copy: Path) -> Iterator[Path]:
    """Plant the mutant in the copy (`copy` is the copied src folder) and restore the file afterwards."""
    target = copy.parent / mutant.file
    original = target.read_text(encoding="utf-8")
    target.write_text(mutated_text(original, mutant), encoding="utf-8")
    try:
        yield target
    finally:
        target.write_text(original, encoding="utf-8")


def run_tests(tests: Sequence[str], *, root: Path, copy: Path, scratch: Path, timeout: float) -> tuple[int | None, str]:
    """Run pytest on `tests` from `root` with the copy first on the path; (exit code or None on timeout, output)."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p) != root / PACKAGE_DIR]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(copy), str(root), *inherited]),
        # the copy's files change between runs within one second: bytecode keyed on mtime could go stale
        "PYTHONDONTWRITEBYTECODE": "1",
        # a fresh example database per run, so one mutant's failures are not replayed against the next
        "HYPOTHESIS_STORAGE_DIRECTORY": str(scratch),
    }
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider"]
    cmd += ["--hypothesis-seed=0", *tests]
    try:
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, ""
    return done.returncode, done.stdout + done.stderr


def _failures(output: str) -> str:
    """The FAILED/ERROR lines of a pytest summary, joined: which test killed the mutant."""
    lines = [ln.split(" - ")[0] for ln in output.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    return "; ".join(lines)


def run_mutant(mutant: Mutant, *, root: Path, copy: Path, scratch: Path, timeout: float) -> Outcome:
    """Plant one mutant in the copy, run its tests and say whether they noticed."""
    start = time.monotonic()
    with planted(mutant, copy):
        code, output = run_tests(mutant.tests, root=root, copy=copy, scratch=scratch / mutant.id, timeout=timeout)
    seconds = time.monotonic() - start
    if code is None:
        return Outcome(mutant, "timeout", seconds)
    if code == 0:
        return Outcome(mutant, "survived", seconds)
    # 1: tests failed; 2: collection failed (the mutant broke an import). Anything else is the run's fault.
    if code in (1, 2):
        return Outcome(mutant, "killed", seconds, _failures(output))
    raise MutantError(f"{mutant.id}: pytest exited {code} (bad test selection?)\n{output[-2000:]}")


def _unique(items: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class SqlConfig:
    """The `[sql]` table of the mutant list: which models sqlglot mutates and which tests each group runs."""

    files: str
    default_tests: tuple[str, ...]
    groups: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    equivalent: dict[str, str]
    """Generated mutants that no test can kill because they change no result, with why (id -> why)."""


def load_sql_config(path: Path, table: str = "sql") -> SqlConfig | None:
    """The list's `[sql]` or `[python]` table, or None when it has none; an unknown key or missing field is an error."""
    data = tomllib.loads(path.read_text(encoding="utf-8")).get(table)
    if data is None:
        return None
    where = f"{path}: [{table}]"
    unknown = set(data) - {"files", "default_tests", "tests", "equivalent"}
    if unknown:
        raise MutantError(f"{where}: unknown keys {sorted(unknown)}")
    if not isinstance(data.get("files"), str) or not data.get("default_tests"):
        raise MutantError(f"{where}: needs files (a glob) and default_tests")
    table_name = f"{table}."
    groups = []
    for g in data.get("tests", []):
        if set(g) != {"files", "tests"} or not g["files"] or not g["tests"]:
            raise MutantError(f"{where}: each [[{table_name}tests]] needs files and tests only, got {sorted(g)}")
        groups.append((tuple(g["files"]), tuple(g["tests"])))
    equivalent = {}
    for e in data.get("equivalent", []):
        if set(e) != {"id", "why"} or not str(e["why"]).strip():
            raise MutantError(f"{where}: each [[{table_name}equivalent]] needs an id and a why, got {sorted(e)}")
        equivalent[e["id"]] = e["why"]
    return SqlConfig(data["files"], tuple(data["default_tests"]), tuple(groups), equivalent)


def sql_mutants(root: Path, config: SqlConfig) -> tuple[list[Mutant], list[sql_mutants_module.SqlFile], dict[str, str]]:
    """The generated SQL mutants as Mutants (with their tests), the parsed files and the files not parsed."""
    files, generated, unparsed = sql_mutants_module.generate(root, config.files)
    mutants = _as_mutants(
        generated, lambda g: sql_mutants_module.tests_for(g.path, config.groups, config.default_tests)
    )
    return mutants, files, unparsed


def py_mutants(root: Path, config: SqlConfig) -> tuple[list[Mutant], list[py_mutants_module.PyFile], dict[str, str]]:
    """The generated Python mutants; a module's tests: a matching group's, else the mirroring ones, else the default."""

    def tests(g: sql_mutants_module.SqlMutant) -> list[str]:
        name = Path(g.path).name
        if any(fnmatch.fnmatch(name, p) for patterns, _ in config.groups for p in patterns):
            return sql_mutants_module.tests_for(g.path, config.groups, config.default_tests)
        return py_mutants_module.mirrored_tests(root, g.path) or list(config.default_tests)

    files, generated, unparsed = py_mutants_module.generate(root, config.files)
    return _as_mutants(generated, tests), files, unparsed


def _as_mutants(generated: Sequence[sql_mutants_module.SqlMutant], tests: Any) -> list[Mutant]:
    return [Mutant(g.id, g.path, g.before, g.after, tuple(tests(g)), why=g.kind, text=g.text) for g in generated]


def run_set(
    label: str, mutants: Sequence[Mutant], *, root: Path, copy: Path, scratch: Path, timeout: float
) -> list[Outcome] | None:
    """Run the union of the set's tests unmutated, then each mutant; None when the unmutated tests fail."""
    everything = _unique(t for m in mutants for t in m.tests)
    code, output = run_tests(everything, root=root, copy=copy, scratch=scratch / f"baseline-{label}", timeout=timeout)
    if code != 0:
        print(f"the unmutated tests of the {label} mutants do not pass (exit {code}): fix them first\n{output[-4000:]}")
        return None
    outcomes = []
    for i, m in enumerate(mutants, start=1):
        outcome = run_mutant(m, root=root, copy=copy, scratch=scratch, timeout=timeout)
        outcomes.append(outcome)
        print(f"[{label} {i:>3}/{len(mutants)}] {outcome.status:<8} {m.id} ({outcome.seconds:.0f}s) {outcome.detail}")
        sys.stdout.flush()
    return outcomes


def report(label: str, outcomes: Sequence[Outcome], equivalent: dict[str, str]) -> tuple[int, int]:
    """Print one set's score and survivors; (killed, mutants that could be killed: equivalents left out)."""
    killed = sum(o.killed for o in outcomes)
    judged = [o for o in outcomes if o.mutant.id not in equivalent]
    score = killed / len(judged) if judged else 1.0
    n_eq = len(outcomes) - len(judged)
    print(f"\n{label}: {killed}/{len(judged)} killed ({score:.1%})" + (f", {n_eq} equivalent left out" if n_eq else ""))
    for o in outcomes:
        m = o.mutant
        if o.killed:
            continue
        if m.id in equivalent:
            print(f"EQUIVALENT {m.id}: {m.file}: {m.find!r} -> {m.replace!r} ({equivalent[m.id]})")
        else:
            print(f"SURVIVED {m.id}: {m.file}: {m.find!r} -> {m.replace!r}" + (f" ({m.why})" if m.why else ""))
    return killed, len(judged)


def main(argv: Sequence[str] | None = None) -> int:
    """Check, plant and test the mutants; print the score and the survivors; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mutants", type=Path, default=MUTANTS, help="the mutant list (TOML)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (holds src/ and tests/)")
    parser.add_argument("--only", action="append", default=[], metavar="ID", help="run only these mutants")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies")
    parser.add_argument("--list", action="store_true", help="print every mutant (generated ones too), run nothing")
    parser.add_argument("--text-only", action="store_true", help="the listed text mutants (and the chosen)")
    parser.add_argument("--sql-only", action="store_true", help="the mutants sqlglot generates (and the chosen)")
    parser.add_argument("--python-only", action="store_true", help="the Python mutants ast generates (idem)")
    parser.add_argument("--threshold", type=float, default=0.0, help="least share killed (0-1) for exit 0")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test run; longer = killed")
    args = parser.parse_args(argv)
    root = args.root.resolve()

    version, listed = load_mutants(args.mutants)
    sql_config, py_config = load_sql_config(args.mutants, "sql"), load_sql_config(args.mutants, "python")
    sql_made, sql_parsed, unparsed = sql_mutants(root, sql_config) if sql_config else ([], [], {})
    py_made, py_parsed, py_unparsed = py_mutants(root, py_config) if py_config else ([], [], {})
    unparsed = {**unparsed, **py_unparsed}
    # (label, mutants, parsed files, their module, named equivalents, the table that names them)
    generated_sets = [
        ("sql", sql_made, sql_parsed, sql_mutants_module, sql_config.equivalent if sql_config else {}, "sql"),
        ("python", py_made, py_parsed, py_mutants_module, py_config.equivalent if py_config else {}, "python"),
    ]
    problems = stale_mutants(listed, root)
    for _, made, _, _, equivalent, table in generated_sets:
        gone = sorted(set(equivalent) - {m.id for m in made})
        problems += [f"{i}: stale, [[{table}.equivalent]] names a mutant no longer made" for i in gone]
    if args.text_only or args.sql_only or args.python_only:
        listed = listed if args.text_only else []
        generated_sets = [g for g in generated_sets if (args.sql_only, args.python_only)[g[0] == "python"]]
    every = [*listed, *(m for g in generated_sets for m in g[1])]
    unknown = sorted(set(args.only) - {m.id for m in every})
    if unknown:
        parser.error(f"unknown mutant ids {unknown}")
    if args.only:
        listed = [m for m in listed if m.id in args.only]
        generated_sets = [(g[0], [m for m in g[1] if m.id in args.only], *g[2:]) for g in generated_sets]
    for p in problems:
        print(f"STALE {p}")
    if problems:
        n_eq = sum(len(g[4]) for g in generated_sets)
        print(f"{len(problems)} of {len(listed) + n_eq} mutants no longer apply: update {args.mutants.name}")
        return 2
    for rel, why in unparsed.items():
        print(f"NOT PARSED {rel}: {why} (no generated mutants)")
    made_counts = ", ".join(f"{g[0]} {len(g[1])}" for g in generated_sets)
    print(f"{len(listed)} listed mutants (list version {version}) apply; generated: {made_counts}")
    if args.list:
        for m in [*listed, *(m for g in generated_sets for m in g[1])]:
            print(f"{m.id}\t{m.file}\t{m.find!r} -> {m.replace!r}\t{' '.join(m.tests)}")
    if args.check or args.list:
        return 0

    results: list[tuple[int, int]] = []
    titles = {"sql": "sqlglot mutants", "python": "ast mutants (Python)"}
    with tempfile.TemporaryDirectory(prefix="journeys-mutate-") as tmp:
        scratch = Path(tmp)
        if listed:
            copy = package_copy(root, scratch / "package")
            outcomes = run_set("listed", listed, root=root, copy=copy, scratch=scratch, timeout=args.timeout)
            if outcomes is None:
                return 2
            results.append(report(f"listed mutants (version {version})", outcomes, {}))
        for label, mutants, parsed, module, equivalent, _ in generated_sets:
            if not mutants:
                continue
            copy = package_copy(root, scratch / f"package-{label}")
            # The baseline of generated mutants is each parsed file printed back, unmutated.
            module.round_trip(parsed, copy.parent)
            outcomes = run_set(label, mutants, root=root, copy=copy, scratch=scratch, timeout=args.timeout)
            if outcomes is None:
                return 2
            results.append(report(titles[label], outcomes, equivalent))
    killed, judged = sum(k for k, _ in results), sum(n for _, n in results)
    score = killed / judged if judged else 1.0
    print(f"\nmutation score: {killed}/{judged} killed ({score:.1%})")
    if score < args.threshold:
        print(f"below the threshold of {args.threshold:.0%}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
