"""SQL mutants made by parsing the models with sqlglot and rewriting one node at a time.

Where tools/mutants.toml lists hand-picked text mutants, this module finds every site of four kinds of
bug in every SQL model and makes one mutant per site:

- `comparison`: a strict comparison made inclusive or the reverse (`>` / `>=`, `<` / `<=`): boundaries;
- `tie-break`: the last key of a window's or an ordered aggregate's `order by` dropped: ties;
- `filter`: an aggregate's `filter (where ...)` dropped, so it aggregates every row of its group;
- `arg-min-max`: `arg_min` and `arg_max` swapped.

A file's mutants are written as the whole file: its header comments verbatim, then the query as sqlglot
prints it back (`pretty`, comments dropped). So that a mutant differs from what the tests saw in that one
node only, the baseline is the same print-back without a mutation (`round_trip`): tools/mutate.py puts it
in the package copy and runs the tests on it unmutated before any mutant. A file sqlglot cannot parse is
reported, not mutated.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import sqlglot
from sqlglot import exp

DIALECT = "duckdb"


class Printable(Protocol):
    """A parsed file: where it is, and its text as the baseline prints it."""

    path: str

    def text(self) -> str: ...


F = TypeVar("F")
KINDS = ("comparison", "tie-break", "filter", "arg-min-max")

_FLIPS: dict[type[exp.Expression], type[exp.Expression]] = {
    exp.GT: exp.GTE,
    exp.GTE: exp.GT,
    exp.LT: exp.LTE,
    exp.LTE: exp.LT,
    exp.ArgMax: exp.ArgMin,
    exp.ArgMin: exp.ArgMax,
}


@dataclass(frozen=True)
class SqlFile:
    """One model file split into its header comments and its parsed query."""

    path: str
    header: str
    tree: exp.Expression

    def text(self, tree: exp.Expression | None = None) -> str:
        """The file as the mutants see it: the header verbatim, the (possibly mutated) query printed back."""
        return self.header + (tree or self.tree).sql(dialect=DIALECT, pretty=True, comments=False) + "\n"


@dataclass(frozen=True)
class SqlMutant:
    """One rewritten node: `before` became `after` in `path`; `text` is the whole mutated file."""

    id: str
    path: str
    kind: str
    before: str
    after: str
    text: str


def split_header(text: str) -> tuple[str, str]:
    """The leading comment lines (the header the catalog reads) and the rest."""
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and (lines[n].lstrip().startswith("--") or not lines[n].strip()):
        n += 1
    return "".join(lines[:n]), "".join(lines[n:])


def parse_file(root: Path, rel: str) -> SqlFile:
    """Parse one model file (sqlglot's errors propagate: the caller reports the file as not mutated)."""
    header, body = split_header((root / rel).read_text(encoding="utf-8"))
    return SqlFile(rel, header, sqlglot.parse_one(body, read=DIALECT))


def _is_tie_break_site(node: exp.Expression) -> bool:
    # Only orders that decide a result: a window's, an ordered aggregate's. A query's final `order by`
    # orders rows of a table, which publication orders by the grain anyway.
    if not isinstance(node, exp.Order) or len(node.expressions) < 2:
        return False
    return isinstance(node.parent, exp.Window | exp.AggFunc)


def _mutation(node: exp.Expression) -> tuple[str, Callable[[exp.Expression], exp.Expression]] | None:
    """The kind of mutant a node is a site of, and how to rewrite (a copy of) it; None when it is none."""
    flip = _FLIPS.get(type(node))
    if flip is not None:
        kind = "arg-min-max" if isinstance(node, exp.ArgMax | exp.ArgMin) else "comparison"
        return kind, lambda n, f=flip: f(this=n.this, expression=n.expression)  # type: ignore[misc]
    if _is_tie_break_site(node):

        def drop_last(n: exp.Expression) -> exp.Expression:
            out = n.copy()
            out.set("expressions", list(out.expressions[:-1]))
            return out

        return "tie-break", drop_last
    if isinstance(node, exp.Filter):
        return "filter", lambda n: n.this.copy()
    return None


def _short(node: exp.Expression, width: int = 160) -> str:
    text = " ".join(node.sql(dialect=DIALECT, comments=False).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def mutants_of(file: SqlFile) -> Iterator[SqlMutant]:
    """Every mutant of one file, in the order sqlglot walks its tree."""
    sites = [(i, m) for i, node in enumerate(file.tree.walk()) if (m := _mutation(node)) is not None]
    model = Path(file.path).stem
    ids = site_ids(model)
    for index, (kind, rewrite) in sites:
        tree = file.tree.copy()
        node = next(n for i, n in enumerate(tree.walk()) if i == index)
        before = _short(node)
        new = rewrite(node)
        after = _short(new)
        node.replace(new)
        yield SqlMutant(ids(kind, before), file.path, kind, before, after, file.text(tree))


def sql_files(root: Path, pattern: str) -> list[str]:
    """The model files under `root` matching the glob `pattern`, as paths relative to `root`, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file())


def site_ids(prefix: str) -> Callable[[str, str], str]:
    """Ids for one file's sites, `<prefix>:<kind>:<hash of the site's text>`, numbered when a text repeats.

    The id survives edits elsewhere in the file, so a named equivalent keeps naming the same site.
    """
    seen: dict[str, int] = {}

    def site_id(kind: str, before: str) -> str:
        digest = hashlib.sha256(f"{kind}\0{before}".encode()).hexdigest()[:8]
        seen[digest] = seen.get(digest, 0) + 1
        return f"{prefix}:{kind}:{digest}" + (f"-{seen[digest]}" if seen[digest] > 1 else "")

    return site_id


def generate_from(
    root: Path,
    pattern: str,
    parse: Callable[[Path, str], F],
    errors: tuple[type[Exception], ...],
    mutants: Callable[[F], Iterator[SqlMutant]],
) -> tuple[list[F], list[SqlMutant], dict[str, str]]:
    """Parse every file matching `pattern`; the parsed files, every mutant, and the files that raised `errors`."""
    files: list[F] = []
    made: list[SqlMutant] = []
    unparsed: dict[str, str] = {}
    for rel in sql_files(root, pattern):
        try:
            parsed = parse(root, rel)
        except errors as exc:
            unparsed[rel] = " ".join(str(exc).split())[:200]
            continue
        files.append(parsed)
        made.extend(mutants(parsed))
    return files, made, unparsed


def generate(root: Path, pattern: str) -> tuple[list[SqlFile], list[SqlMutant], dict[str, str]]:
    """Parse every model file; its round-trip baseline, every mutant, and the files sqlglot could not parse."""
    return generate_from(root, pattern, parse_file, (sqlglot.errors.SqlglotError,), mutants_of)


def round_trip(files: Sequence[Printable], copy_root: Path) -> None:
    """Write every parsed file printed back, unmutated, over its copy under `copy_root` (the baseline)."""
    for f in files:
        (copy_root / f.path).write_text(f.text(), encoding="utf-8")


def tests_for(path: str, groups: Sequence[tuple[Sequence[str], Sequence[str]]], default: Sequence[str]) -> list[str]:
    """The tests of the first group whose file globs match the model file's name, else the default ones."""
    name = Path(path).name
    for patterns, tests in groups:
        if any(fnmatch.fnmatch(name, p) for p in patterns):
            return list(tests)
    return list(default)
