"""Python mutants made by parsing the package's modules with `ast` and rewriting one comparison at a time.

The counterpart of tools/sql_mutants.py for `src/journeys/*.py`: every `<`, `<=`, `>` and `>=` between two
operands becomes its inclusive or strict twin, the boundary bugs the SQL mutants look for. A module's mutant
is the whole module printed back by `ast.unparse` (comments dropped, behaviour kept), and the baseline the
tests run on first is every module printed back unmutated, so a mutant differs from it in one operator only.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    from tools.sql_mutants import SqlMutant, generate_from, round_trip, site_ids
except ModuleNotFoundError:  # run as `python tools/mutate.py`: tools/ is on the path, the repository is not
    from sql_mutants import SqlMutant, generate_from, round_trip, site_ids  # type: ignore[no-redef]

# round_trip is the SQL mutants' own: both print every parsed file back over the copy.
__all__ = ["KINDS", "PyFile", "generate", "mirrored_tests", "mutants_of", "round_trip"]

KINDS = ("comparison",)

_FLIPS: dict[type[ast.cmpop], type[ast.cmpop]] = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}


@dataclass(frozen=True)
class PyFile:
    """One module and its parsed tree."""

    path: str
    tree: ast.Module

    def text(self, tree: ast.Module | None = None) -> str:
        """The module as the mutants see it: printed back by ast.unparse."""
        return ast.unparse(tree or self.tree) + "\n"


def _is_site(node: ast.AST) -> bool:
    return isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _FLIPS


def mutants_of(file: PyFile) -> Iterator[SqlMutant]:
    """Every comparison mutant of one module, in `ast.walk` order."""
    sites = [i for i, node in enumerate(ast.walk(file.tree)) if _is_site(node)]
    ids = site_ids(f"{Path(file.path).stem}.py")
    for index in sites:
        tree = copy.deepcopy(file.tree)
        node = next(n for i, n in enumerate(ast.walk(tree)) if i == index)
        assert isinstance(node, ast.Compare)
        before = ast.unparse(node)
        node.ops = [_FLIPS[type(node.ops[0])]()]
        yield SqlMutant(ids("comparison", before), file.path, "comparison", before, ast.unparse(node), file.text(tree))


def _parse(root: Path, rel: str) -> PyFile:
    return PyFile(rel, ast.parse((root / rel).read_text(encoding="utf-8")))


def generate(root: Path, pattern: str) -> tuple[list[PyFile], list[SqlMutant], dict[str, str]]:
    """Parse every module; its round-trip baseline, every mutant, and the modules that could not be parsed."""
    return generate_from(root, pattern, _parse, (SyntaxError,), mutants_of)


def mirrored_tests(root: Path, path: str) -> list[str]:
    """The tests that mirror a module (tests mirror the source tree): tests/journeys/test_<module>[_*].py."""
    stem = Path(path).stem
    found = sorted(root.glob(f"tests/journeys/test_{stem}.py")) + sorted(root.glob(f"tests/journeys/test_{stem}_*.py"))
    return [str(p.relative_to(root)) for p in found]
