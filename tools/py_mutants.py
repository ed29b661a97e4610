"""Python mutants made by parsing the package's modules with `ast` and rewriting one comparison at a time.

The counterpart of tools/sql_mutants.py for `src/journeys/*.py`: every `<`, `<=`, `>` and `>=` between two
operands becomes its inclusive or strict twin, the boundary bugs the SQL mutants look for. A module's mutant
is the whole module printed back by `ast.unparse` (comments dropped, behaviour kept), and the baseline the
tests run on first is every module printed back unmutated, so a mutant differs from it in one operator only.
"""

from __future__ import annotations

import ast
import copy
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    from tools.sql_mutants import SqlMutant
except ModuleNotFoundError:  # run as `python tools/mutate.py`: tools/ is on the path, the repository is not
    from sql_mutants import SqlMutant  # type: ignore[no-redef]

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
    module = Path(file.path).stem
    seen: dict[str, int] = {}
    for index in sites:
        tree = copy.deepcopy(file.tree)
        node = next(n for i, n in enumerate(ast.walk(tree)) if i == index)
        assert isinstance(node, ast.Compare)
        before = ast.unparse(node)
        node.ops = [_FLIPS[type(node.ops[0])]()]
        after = ast.unparse(node)
        digest = hashlib.sha256(f"comparison\0{before}".encode()).hexdigest()[:8]
        seen[digest] = seen.get(digest, 0) + 1
        suffix = f"-{seen[digest]}" if seen[digest] > 1 else ""
        mutant_id = f"{module}.py:comparison:{digest}{suffix}"
        yield SqlMutant(mutant_id, file.path, "comparison", before, after, file.text(tree))


def generate(root: Path, pattern: str) -> tuple[list[PyFile], list[SqlMutant], dict[str, str]]:
    """Parse every module; its round-trip baseline, every mutant, and the modules that could not be parsed."""
    files, mutants, unparsed = [], [], {}
    for rel in sorted(str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file()):
        try:
            parsed = PyFile(rel, ast.parse((root / rel).read_text(encoding="utf-8")))
        except SyntaxError as exc:
            unparsed[rel] = str(exc)
            continue
        files.append(parsed)
        mutants.extend(mutants_of(parsed))
    return files, mutants, unparsed


def round_trip(files: list[PyFile], copy_root: Path) -> None:
    """Write every parsed module printed back, unmutated, over its copy under `copy_root` (the baseline)."""
    for f in files:
        (copy_root / f.path).write_text(f.text(), encoding="utf-8")


def mirrored_tests(root: Path, path: str) -> list[str]:
    """The tests that mirror a module (tests mirror the source tree): tests/journeys/test_<module>[_*].py."""
    stem = Path(path).stem
    found = sorted(root.glob(f"tests/journeys/test_{stem}.py")) + sorted(root.glob(f"tests/journeys/test_{stem}_*.py"))
    return [str(p.relative_to(root)) for p in found]
