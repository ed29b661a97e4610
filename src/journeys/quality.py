"""Great Expectations suites per layer (raw landing rows, canonical events, identity, journeys, marts).

The suites are GX ExpectationSuite JSON files: the shipped ones in `journeys/expectations/`, copied into the
data root's GX project folder `gx/expectations/` where a user edits them or adds suites of their own (one per
table); an edited file is never overwritten. GX 1.x has no DuckDB data source and its SQL route fails on
DuckDB, so batches are pulled from DuckDB as pandas frames of at most `batch_rows` rows (per source for raw
landing rows, whole days for events) and validated there. Each run's results become GX Data Docs under
`reports/data_docs/`. Besides the suites, every landing file is held to `quality.max_quarantine_share`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from journeys import db, models, pii
from journeys.config import ConfigError, Settings, parse_duration_us

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

BATCH_ROWS = 1_000_000


@dataclass
class Failure:
    """One failed expectation on one batch."""

    suite: str
    batch: str
    expectation: str
    column: str | None
    unexpected_count: int | None
    sample: list[Any]


@dataclass
class FileShare:
    """Quarantined share of one landing file, against the configured limit."""

    source: str
    file: str
    batch_id: str
    read: int
    quarantined: int
    share: float
    ok: bool


@dataclass
class QualityReport:
    """Every suite's outcome for one run."""

    suites: dict[str, int] = field(default_factory=dict)  # suite -> batches validated
    expectations_run: int = 0
    failures: list[Failure] = field(default_factory=list)
    files: list[FileShare] = field(default_factory=list)  # landing files checked for their quarantine share
    warnings: list[str] = field(default_factory=list)  # not failures: schema drift and the like
    events_checked: int = 0  # canonical event rows validated (only rows no published run has checked)
    event_dates: list[str] = field(default_factory=list)  # their event dates
    event_batches: list[str] = field(default_factory=list)  # their ingest batches
    # Ingest batches whose landing files the raw suites checked: this run's, and earlier ones no published run
    # recorded (a run that died or failed before publishing); recorded with event_batches when published.
    landing_batches: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # outcome of the freshness and volume checks, one line each
    identity: list[str] = field(default_factory=list)  # outcome of the identity checks, one line each
    # Table suites checked on the rows their table did not hold when it last passed them, one line each.
    scopes: list[str] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)  # narrowable table suite -> fingerprint it passed with
    # For the Data Docs: each GX suite run (its JSON) and each validation result, PII already scrubbed.
    suite_docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[tuple[str, str, Any]] = field(default_factory=list)  # (suite, batch label, GX result)

    @property
    def success(self) -> bool:
        return not self.failures

    def merged(self, other: QualityReport) -> QualityReport:
        """One report holding this report's outcomes and then the other's."""
        suites = dict(self.suites)
        for name, n in other.suites.items():
            suites[name] = suites.get(name, 0) + n
        return QualityReport(
            suites=suites,
            expectations_run=self.expectations_run + other.expectations_run,
            failures=self.failures + other.failures,
            files=self.files + other.files,
            warnings=self.warnings + other.warnings,
            events_checked=self.events_checked + other.events_checked,
            event_dates=sorted({*self.event_dates, *other.event_dates}),
            event_batches=sorted({*self.event_batches, *other.event_batches}),
            landing_batches=sorted({*self.landing_batches, *other.landing_batches}),
            checks=self.checks + other.checks,
            identity=self.identity + other.identity,
            scopes=self.scopes + other.scopes,
            checked={**self.checked, **other.checked},
            suite_docs={**self.suite_docs, **other.suite_docs},
            results=self.results + other.results,
        )

    def outcome(self) -> dict[str, Any]:
        """The outcome in numbers, for the run record and the HTML report."""
        return {
            "success": self.success,
            "expectations_run": self.expectations_run,
            "suites": dict(sorted(self.suites.items())),
            "failures": len(self.failures),
            "warnings": list(self.warnings),
            "files_checked": len(self.files),
            "files_over_limit": sum(1 for f in self.files if not f.ok),
            "max_file_share": max((f.share for f in self.files), default=None),
            "identity": list(self.identity),
        }

    def summary(self) -> str:
        """Readable lines naming each failure."""
        notes = [f"  warning: {w}" for w in self.warnings]
        if self.success:
            return "\n".join(
                [f"all {self.expectations_run} expectations passed over suites {sorted(self.suites)}", *notes]
            )
        lines = [f"{len(self.failures)} expectation(s) failed:"]
        for f in self.failures:
            if f.unexpected_count is None and f.sample:
                # A run-level check (freshness, volume): its one sample is the whole story.
                lines.append(f"  [{f.suite}] {f.sample[0]}")
                continue
            lines.append(
                f"  [{f.suite} / {f.batch}] {f.expectation}"
                f"{'(' + f.column + ')' if f.column else ''}: {f.unexpected_count} unexpected, e.g. {f.sample[:5]}"
            )
        return "\n".join(lines + notes)


class QualityError(RuntimeError):
    """A suite failed: the run's marts must not be published."""


# --- the suites: shipped JSON files, the data root's GX project folder, a user's own suites ---------------

SUITES_DIR = Path("gx") / "expectations"
"""The suites folder under the data root, laid out as a GX project's (`gx/expectations/<suite>.json`)."""

SHIPPED_MANIFEST = "shipped_suites.json"
"""In state/: sha256 of each suite file the run wrote, so a file the user changed is told from one it may replace."""

EVENTS_SUITE, GRAIN_SUITE, RAW_SUITE = "canonical_events", "grain", "raw"
SPECIAL_SUITES = (EVENTS_SUITE, GRAIN_SUITE, RAW_SUITE)
"""Shipped suites that validate something other than one warehouse table (the others are named after theirs)."""

PARAMETERS = ("channels", "max_occurred_at", "max_quarantine_share", "min_occurred_at", "n_stages")
"""Values a suite may take as `{"$PARAMETER": name}`, filled in by each run from the config and the run."""

SAMPLE_VALUES = 10
"""Unexpected values kept per expectation (GX `partial_unexpected_count`): the report and Data Docs show these."""

DATA_DOCS = "data_docs"
"""Data Docs folder under reports/: one GX site per run (`<batch>/index.html`), `index.html` opens the latest."""

KEEP_DATA_DOCS = 5
"""Data Docs sites kept (newest first, besides the published run's): each is a few hundred kB."""

_COLUMN_KWARGS = ("column", "column_A", "column_B")
_LIST_KWARGS = ("column_list",)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Suite:
    """One expectation suite as the run uses it: GX ExpectationSuite JSON and where it came from."""

    name: str
    table: str | None  # the warehouse table it validates; None for the shipped special suites
    expectations: tuple[dict[str, Any], ...]
    origin: str  # "shipped", "edited" (a shipped suite the user changed) or "yours" (a suite of the user's)
    path: str  # the file it was read from
    notes: str | None = None  # the file's `notes`: Data Docs show them on the suite's page


def suites_dir(settings: Settings) -> Path:
    """The data root's suites folder, where a user reads, edits and adds suites."""
    return settings.root / SUITES_DIR


def shipped_suites() -> dict[str, str]:
    """Name -> JSON text of every suite shipped with the package."""
    folder = resources.files("journeys.expectations")
    return {
        entry.name.removesuffix(".json"): entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    }


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sync_suites(settings: Settings) -> list[str]:
    """Write the shipped suites into the data root's suites folder; files a user changed are left as they are.

    A file is the run's to replace only while it is byte for byte what a run wrote (its sha256 is in
    state/shipped_suites.json): an edit, or a file put there by hand, makes it the user's for good.
    Returns one line per suite a user edited whose shipped version differs from their file.
    """
    folder = suites_dir(settings)
    manifest_path = settings.state_dir / SHIPPED_MANIFEST
    written = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    notes = []
    for name, text in shipped_suites().items():
        path = folder / f"{name}.json"
        on_disk = path.read_text(encoding="utf-8") if path.exists() else None
        if on_disk is None or (on_disk != text and _sha(on_disk) == written.get(name)):
            _write_atomic(path, text)
        elif on_disk != text:
            notes.append(
                f"suite {name}: your edited {SUITES_DIR / path.name} is used; the shipped version differs"
                f" (journeys/expectations/{path.name}; delete your file to get it back)"
            )
            continue
        written[name] = _sha(text)
    _write_atomic(manifest_path, json.dumps(dict(sorted(written.items())), indent=2) + "\n")
    return notes


def _parameters_named(value: Any) -> set[str]:
    if isinstance(value, dict):
        if set(value) == {"$PARAMETER"}:
            return {str(value["$PARAMETER"])}
        return set().union(*(_parameters_named(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_parameters_named(v) for v in value))
    return set()


def _checked_suite(path: Path, text: str, origin: str, tables: Collection[str]) -> Suite:
    """The suite of one JSON file, every expectation built by GX; ConfigError naming the file and expectation."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    name = path.stem
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ConfigError(f"{path}: expected a GX ExpectationSuite object with a list `expectations`")
    if data.get("name", name) != name:
        raise ConfigError(f"{path}: name {data['name']!r} differs from the file name; the file name is the suite's")
    meta = data.get("meta") or {}
    table = None if name in SPECIAL_SUITES else str(meta.get("table") or name)
    if origin == "yours" and table not in tables:
        raise ConfigError(
            f"{path}: suite {name!r} validates table {table!r}, which this run does not build; name the file after"
            f" a table, or set meta.table to one of {sorted(tables)}"
        )
    out = []
    for i, exp in enumerate(data["expectations"]):
        what = f"{path}: expectations[{i}]" + (f" ({exp.get('type')})" if isinstance(exp, dict) else "")
        if not isinstance(exp, dict) or not isinstance(exp.get("type"), str):
            raise ConfigError(f"{what}: expected an object with `type` and `kwargs`")
        unknown = sorted(_parameters_named(exp.get("kwargs")) - set(PARAMETERS))
        if unknown:
            raise ConfigError(f"{what}: unknown $PARAMETER {unknown}; a run fills in {list(PARAMETERS)}")
        if name == RAW_SUITE and set(exp.get("kwargs") or {}) & {*_COLUMN_KWARGS, *_LIST_KWARGS}:
            raise ConfigError(f"{what}: {RAW_SUITE}.json applies to every source's rows and may name no column")
        try:
            ExpectationConfiguration(**exp).to_domain_obj()
        except Exception as exc:  # GX raises its own errors, pydantic's and TypeError: all say the same thing
            detail = " ".join(str(exc).split())
            raise ConfigError(f"{what}: {detail[:400]}") from None
        out.append(exp)
    return Suite(name, table, tuple(out), origin, str(path), data.get("notes"))


def load_suites(settings: Settings, catalog: models.Catalog | None = None) -> dict[str, Suite]:
    """Every suite a run validates: the data root's suite files where they exist, else the shipped ones.

    Raises ConfigError naming the file and the expectation for any that GX cannot build.
    """
    catalog = catalog or models.load_catalog(settings.models_path)
    tables = {m.name for m in catalog.kept()} | {"events"}
    folder = suites_dir(settings)
    suites = {}
    for name, text in shipped_suites().items():
        path = folder / f"{name}.json"
        if path.exists():
            mine = path.read_text(encoding="utf-8")
            suites[name] = _checked_suite(path, mine, "shipped" if mine == text else "edited", tables)
        else:
            suites[name] = _checked_suite(Path("journeys/expectations") / f"{name}.json", text, "shipped", tables)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.stem not in suites:
            suites[path.stem] = _checked_suite(path, path.read_text(encoding="utf-8"), "yours", tables)
    return suites


def suite_columns(suite: Suite, available: list[str]) -> list[str]:
    """The columns of `available` a suite reads (in table order): all of them if one expectation is table-wide."""
    wanted: set[str] = set()
    for exp in suite.expectations:
        kw = exp.get("kwargs") or {}
        named = {kw[k] for k in _COLUMN_KWARGS if isinstance(kw.get(k), str)}
        named |= {c for k in _LIST_KWARGS for c in kw.get(k) or [] if isinstance(c, str)}
        if not named and not exp["type"].startswith("expect_table_row_count"):
            return list(available)  # column sets, column counts: the whole table
        wanted |= named
        if isinstance(kw.get("row_condition"), str):
            wanted |= set(_WORD.findall(kw["row_condition"]))
    return [c for c in available if c in wanted]


def run_parameters(settings: Settings, as_of: datetime, n_stages: int = 0) -> dict[str, Any]:
    """The values of every $PARAMETER a suite may use, for one run."""
    max_at = as_of.replace(tzinfo=None) + timedelta(microseconds=parse_duration_us(settings.quality.max_future) or 0)
    return {
        "channels": list(settings.channels),
        "max_occurred_at": max_at,
        "max_quarantine_share": settings.quality.max_quarantine_share,
        "min_occurred_at": datetime.fromisoformat(settings.quality.min_occurred_at),
        "n_stages": n_stages,
    }


ROW_WISE = frozenset(
    {
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_column_pair_values_to_be_equal",
        "expect_column_pair_values_to_be_in_set",
        "expect_column_value_lengths_to_be_between",
        "expect_column_value_lengths_to_equal",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_dateutil_parseable",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_json_parseable",
        "expect_column_values_to_be_null",
        "expect_column_values_to_match_json_schema",
        "expect_column_values_to_match_like_pattern",
        "expect_column_values_to_match_like_pattern_list",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_match_regex_list",
        "expect_column_values_to_match_strftime_format",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_not_match_like_pattern",
        "expect_column_values_to_not_match_like_pattern_list",
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_not_match_regex_list",
        "expect_multicolumn_sum_to_equal",
        "expect_multicolumn_values_to_be_equal",
        "expect_select_column_values_to_be_unique_within_record",
    }
)
"""GX expectations whose verdict on a row depends on that row's values (and the run's parameters) alone.

Not among them: uniqueness, order, z-scores and outliers (other rows decide), a column's type (the batch's
dtype decides), and everything table- or column-wide (row counts, means, column sets).
"""


def narrowable(suite: Suite) -> bool:
    """Whether a table suite holds on a table when it holds on the rows the table held no passing copy of.

    True when every expectation is row-wise (ROW_WISE), critical (a warning is reported every night while its
    rows remain) and without `mostly` (a share of the rows checked, which narrowing would change).
    """

    def row_wise(exp: dict[str, Any]) -> bool:
        kw = exp.get("kwargs") or {}
        critical = str(exp.get("severity") or "critical").lower() == "critical"
        return exp["type"] in ROW_WISE and critical and kw.get("mostly", 1) in (1, None)

    return bool(suite.expectations) and all(row_wise(e) for e in suite.expectations)


def suite_fingerprint(suite: Suite, parameters: Mapping[str, Any]) -> str:
    """sha256 of what a table suite checks: its table, its expectations and the values of the parameters they use."""
    used = sorted(set().union(*(_parameters_named(e.get("kwargs")) for e in suite.expectations)))
    payload = {
        "table": suite.table,
        "expectations": list(suite.expectations),
        "parameters": {p: parameters.get(p) for p in used},
    }
    return _sha(json.dumps(payload, sort_keys=True, default=str))


LAST_CHECKED = "_journeys_last_checked"
"""The alias the last published run's kept build is attached under while the table suites run."""


class _LastChecked:
    """The last published run's kept build, attached read-only: which table suites its tables passed, and their rows.

    Empty (nothing narrowed) when there is none, it cannot be read, or it predates the record of its suites.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, build: Path | None) -> None:
        from journeys import incremental

        self.con = con
        self.passed: dict[str, str] = {}
        self.attached = False
        if build is None or not build.is_file():
            return
        try:
            db.execute(con, f"attach $p as {db.quote_ident(LAST_CHECKED)} (read_only)", {"p": str(build)})
        except duckdb.Error:
            return  # a kept build that cannot be read: every table is checked whole
        self.attached = True
        if self._columns(incremental.CHECKED_TABLE, LAST_CHECKED):
            table = f"{db.quote_ident(LAST_CHECKED)}.main.{db.quote_ident(incremental.CHECKED_TABLE)}"
            self.passed = dict(db.fetch(con, f"select suite, fingerprint from {table}"))

    def _columns(self, table: str, database: str | None = None) -> dict[str, str]:
        sql = (
            "select column_name, data_type from duckdb_columns()"
            " where table_name = $t and schema_name = 'main' and database_name = coalesce($d, current_database())"
        )
        return dict(db.fetch(self.con, sql, {"t": table, "d": database}))

    def changed_rows_sql(self, suite: Suite, fingerprint: str, columns: list[str]) -> str | None:
        """SQL of the table's rows (those columns) beyond the copies the kept table passed this suite with, or None.

        None (check the whole table) unless both are tables, not views, and the kept table passed the suite with
        the same fingerprint and holds the columns with the same types. Each row of the kept table covers one
        equal row: a multiset difference, so a failing value counts as often as the whole table holds it.
        """
        table = str(suite.table)
        if self.passed.get(suite.name) != fingerprint or not columns:
            return None
        # A view is no snapshot: the kept build's `events` reads today's lake, as this one's does.
        if not (db.table_exists(self.con, table) and db.table_exists(self.con, table, database=LAST_CHECKED)):
            return None
        now, kept = self._columns(table), self._columns(table, LAST_CHECKED)
        if any(c not in kept or kept[c] != now[c] for c in columns):
            return None
        cols = ", ".join(map(db.quote_ident, columns))
        same = " and ".join(f"nw.{c} is not distinct from kp.{c}" for c in map(db.quote_ident, columns))
        # EXCEPT ALL does the same, but four times slower here (467k identity_map rows: 0.43 s against 0.11 s):
        # equal rows are counted on each side, and a value is kept as often as the table holds it beyond that.
        return f"""
            with now_rows as (
                select {cols}, count(*) as __n from {db.quote_ident(table)} group by all
            ),
            kept_rows as (
                select {cols}, count(*) as __n
                from {db.quote_ident(LAST_CHECKED)}.main.{db.quote_ident(table)} group by all
            ),
            beyond as (
                select nw.*, nw.__n - coalesce(kp.__n, 0) as __extra
                from now_rows as nw left join kept_rows as kp on {same}
                where nw.__n > coalesce(kp.__n, 0)
            ),
            final as (
                select {cols} from (select *, unnest(range(bd.__extra)) as __copy from beyond as bd) as ch
            )
            select * from final order by all
        """

    def close(self) -> None:
        if self.attached:
            db.execute(self.con, f"detach {db.quote_ident(LAST_CHECKED)}")
            self.attached = False


def record_checked_suites(con: duckdb.DuckDBPyConnection, report: QualityReport) -> None:
    """Keep in the working file which table suites its tables passed, and with what, for the next run to narrow."""
    from journeys import incremental

    table = db.quote_ident(incremental.CHECKED_TABLE)
    db.execute(con, f"create or replace table {table} (suite varchar, fingerprint varchar)")
    names = sorted(report.checked)
    db.execute(
        con,
        f"insert into {table} select unnest($s::varchar[]), unnest($f::varchar[])",
        {"s": names, "f": [report.checked[n] for n in names]},
    )


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX md5-hashes every pandas batch under this many bytes (all of ours) into a batch marker, a "data
    # fingerprint" nothing here reads: a full extra pass over each frame (1.2 s of 14 at 1M events).
    pandas_execution_engine.HASH_THRESHOLD = 0

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def _scrubbed(value: Any, scrub: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v, scrub) for v in value]
    return value


def scrub_result(result: Any, *, raw: bool) -> None:
    """Take personal data out of one GX expectation result (in place), before anyone stores or shows it.

    Mart values are hashed already, but a raw landing value is not known to be safe, so a raw suite's values
    keep only their shape (as quarantine does) and other values lose whatever looks like an e-mail or phone.
    The full lists of unexpected values are dropped: the bounded sample is what a reader needs.
    """
    scrub = pii.shape_masked if raw else pii.redacted
    kept = {k: v for k, v in (result.result or {}).items() if k not in ("unexpected_list", "unexpected_index_list")}
    result.result = _scrubbed(kept, scrub)
    if result.exception_info:
        result.exception_info = _scrubbed(result.exception_info, pii.redacted)


class _Validator:
    """Runs named suites over pandas batches and collects failures and the results for Data Docs."""

    def __init__(self, parameters: Mapping[str, Any] | None = None, run_name: str = "adhoc") -> None:
        self.ctx = _context()
        self.source = self.ctx.data_sources.add_pandas("journeys")
        self.report = QualityReport()
        self.parameters = dict(parameters or {})
        self.run_name = run_name
        self._defs: dict[str, Any] = {}

    def validate(
        self,
        suite: str,
        batch: str,
        frame: Any,
        expectations: list[Any],
        *,
        empty_ok: bool = True,
        raw: bool = False,
        notes: str | None = None,
    ) -> None:
        """Validate one batch; an empty batch is skipped unless `empty_ok` is False (row-count suites).

        `expectations` are GX expectations or their JSON dicts; `raw` marks landing rows (see scrub_result).
        """
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier

        if suite not in self._defs:
            asset = self.source.add_dataframe_asset(suite)
            bd = asset.add_batch_definition_whole_dataframe(suite)
            s = self.ctx.suites.add(gx.ExpectationSuite(name=suite, expectations=list(expectations), notes=notes))
            self._defs[suite] = self.ctx.validation_definitions.add(
                gx.ValidationDefinition(name=suite, data=bd, suite=s)
            )
            self.report.suite_docs[suite] = s.to_json_dict()
        if len(frame) == 0 and empty_ok:
            return
        result = self._defs[suite].run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=self.parameters,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_VALUES},
            run_id=RunIdentifier(run_name=self.run_name, run_time=datetime.now(UTC)),
        )
        self.report.suites[suite] = self.report.suites.get(suite, 0) + 1
        self.report.expectations_run += len(result.results)
        for r in result.results:
            scrub_result(r, raw=raw)
        self.report.results.append((suite, batch, result))
        for r in result.results:
            if r.success:
                continue
            kw = r.expectation_config.kwargs
            failure = Failure(
                suite=suite,
                batch=batch,
                expectation=r.expectation_config.type,
                column=kw.get("column") or ",".join(kw.get("column_list") or []) or None,
                unexpected_count=r.result.get("unexpected_count"),
                sample=[str(v) for v in (r.result.get("partial_unexpected_list") or [])[:SAMPLE_VALUES]],
            )
            if r.exception_info and r.exception_info.get("raised_exception"):
                failure.sample = [f"error: {r.exception_info.get('exception_message')}"]
            if str(getattr(r.expectation_config, "severity", "critical")).lower().endswith("critical"):
                self.report.failures.append(failure)
            else:
                # A user's `severity: warning` (or info): reported, and the run still publishes.
                self.report.warnings.append(
                    f"[{suite} / {batch}] {failure.expectation}({failure.column or ''}):"
                    f" {failure.unexpected_count} unexpected, e.g. {failure.sample[:5]}"
                )


def _frames(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int, params: dict | None = None) -> Iterator[Any]:
    """The query's rows as pandas frames of `batch_rows` rows each (the last one fewer), in `_gx_frame`'s types."""
    rel = con.sql(sql, params=params) if params else con.sql(sql)
    return _batched(rel.to_arrow_reader(batch_rows), batch_rows)


def _batched(chunks: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[Any]:
    """Arrow chunks (of one schema) regrouped into pandas frames of `batch_rows` rows, the last one fewer."""
    # DuckDB hands out smaller chunks than asked for (a 300k-row result came as 5), and a landing file is a
    # chunk of its own: each would be a GX run, and a run has a fixed cost, so they are gathered first.
    pending: list[pa.RecordBatch] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += chunk.num_rows
        while held >= batch_rows:
            rows = pa.Table.from_batches(pending)
            yield _gx_frame(rows.slice(0, batch_rows))
            rest = rows.slice(batch_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield _gx_frame(pa.Table.from_batches(pending))


def _gx_frame(rows: pa.Table) -> Any:
    """A pandas frame of the rows in types GX's pandas metrics compute vectorised.

    GX compares a column against bounds row by row in Python unless it is int64, float64 or datetime64[ns]
    (`expect_column_values_to_be_between` on a million timestamps in microseconds: 5 s instead of 0.05 s), so
    narrower numbers are widened and naive timestamps turned to nanoseconds; a timestamp nanoseconds cannot
    hold (before 1677 or after 2262) keeps its unit, and with it the slow but correct comparison.
    """
    columns = []
    for col in rows.columns:
        t = col.type
        if pa.types.is_integer(t) and t != pa.int64() and t != pa.uint64():
            col = col.cast(pa.int64())
        elif pa.types.is_floating(t) and t != pa.float64():
            col = col.cast(pa.float64())
        elif pa.types.is_timestamp(t) and t.tz is None and t.unit != "ns":
            with contextlib.suppress(pa.ArrowInvalid):
                col = col.cast(pa.timestamp("ns"))
        columns.append(col)
    return pa.Table.from_arrays(columns, names=rows.column_names).to_pandas()


def published_batches(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Ingest batches whose events a published run has checked (from `runs` of the working warehouse)."""
    rows = db.fetch(
        con, "select batch_id from runs union select unnest(event_batches) from runs where event_batches is not null"
    )
    return sorted(r[0] for r in rows if r[0] is not None)


def unchecked_event_files(settings: Settings, published_batches: list[str]) -> list[Path]:
    """Lake event files of ingest batches that no published run has checked."""
    # This run's new rows, and those of a run that failed before publishing: in the lake, never accepted.
    done = set(published_batches)
    out = []
    for path in sorted(settings.events_dir.glob("event_date=*/*.parquet")):
        # Ingest names a file `<batch_id>-<ordinal>[-<k>].parquet`, compaction `<checked batch>-c<digest>.parquet`
        # (journeys.lake), and a batch id may hold '-' itself.
        prefixes = {path.stem[:i] for i, ch in enumerate(path.stem) if ch == "-"}
        if not prefixes & done:
            out.append(path)
    return out


def validate_warehouse(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    as_of: datetime,
    event_files: list[str] | None = None,
    published_batches: list[str] | None = None,
    batch_rows: int = BATCH_ROWS,
    catalog: models.Catalog | None = None,
    suites: Mapping[str, Suite] | None = None,
    run_name: str = "adhoc",
    checked_build: Path | None = None,
) -> QualityReport:
    """Run every suite: lake events (in row batches; only `event_files`, less rows of `published_batches`, if
    given), the grain (unique, not null) of every table the catalog publishes, and each table's suite (shipped
    or the user's, `suites` as load_suites gives them).

    `checked_build` is the last published run's kept build: a narrowable table suite it records as passed with
    the same fingerprint is run on the rows its table did not hold only (see narrowable).
    """
    catalog = catalog or models.load_catalog(settings.models_path)
    suites = load_suites(settings, catalog) if suites is None else suites
    n_stages = db.fetch(con, "select coalesce(max(n_stages), 0) from stage_definitions")[0][0]
    v = _Validator(run_parameters(settings, as_of, n_stages), run_name)
    validate_grains(con, v, catalog, suites[GRAIN_SUITE])
    ev = suites[EVENTS_SUITE]
    # Only the suite's columns go to GX.
    wanted = suite_columns(ev, list(ingest_event_columns()))
    # Naive UTC, as the bounds are: the published `events` view is TIMESTAMP WITH TIME ZONE (the connection is UTC).
    picked = [
        f"{db.quote_ident(c)}::timestamp as {db.quote_ident(c)}" if c == "occurred_at" else db.quote_ident(c)
        for c in wanted
    ]
    if event_files is None:
        scope, params = "events", {}
    else:
        scope = (
            "(select * from read_parquet($files::varchar[], hive_partitioning = true, union_by_name = true)"
            " where not list_contains($published::varchar[], batch_id))"
        )
        params = {"files": event_files, "published": list(published_batches or [])}
    if event_files != []:
        # The bookkeeping is counted in DuckDB: GX gets the suite's columns only.
        n, dates, batches = db.fetch(
            con,
            "select count(*), coalesce(list(distinct left(cast(event_date as varchar), 10)), []),"
            f" coalesce(list(distinct batch_id), []) from {scope} as ev",
            params,
        )[0]
        sql = f"select {', '.join(picked) or '1 as __row'} from {scope} as ev"
        # Batches of up to `batch_rows` rows: a GX run has a fixed cost, so one per day is slow.
        for i, frame in enumerate(_frames(con, sql, batch_rows, params)):
            frame = frame.drop(columns=["__row"], errors="ignore")
            v.validate(EVENTS_SUITE, f"events#{i}", frame, list(ev.expectations), notes=ev.notes)
        v.report.events_checked = n
        v.report.event_dates, v.report.event_batches = sorted(dates), sorted(b for b in batches if b is not None)
    present = {
        r[0] for r in db.fetch(con, "select table_name from duckdb_tables() union select view_name from duckdb_views()")
    }
    last = _LastChecked(con, checked_build)
    try:
        for suite in sorted((s for s in suites.values() if s.table is not None), key=lambda s: s.name):
            table = str(suite.table)
            if table not in present:
                if suite.origin == "yours":
                    missing = f"{suite.path}: no table {table!r} to validate"
                    v.report.failures.append(Failure(suite.name, "run", "table", None, None, [missing]))
                continue  # a shipped suite of a table this catalog does not keep
            available = [r[0] for r in db.fetch(con, f"select column_name from (describe {db.quote_ident(table)})")]
            picked = suite_columns(suite, available)
            fingerprint = suite_fingerprint(suite, v.parameters) if narrowable(suite) else None
            changed = last.changed_rows_sql(suite, fingerprint, picked) if fingerprint else None
            cols = ", ".join(map(db.quote_ident, picked)) or "1 as __row"
            sql, label, n = changed or f"select {cols} from {db.quote_ident(table)}", table, 0
            if changed:
                label = f"{table} (new or changed rows)"
            for i, frame in enumerate(_frames(con, sql, batch_rows)):
                frame = frame.drop(columns=["__row"], errors="ignore")
                n += len(frame)
                v.validate(suite.name, f"{label}#{i}", frame, list(suite.expectations), notes=suite.notes)
            if changed:
                total = db.fetch(con, f"select count(*) from {db.quote_ident(table)}")[0][0]
                v.report.scopes.append(
                    f"{suite.name}: {n} of the {total} rows of {table} (the others passed it in the last published run)"
                )
            if fingerprint:
                v.report.checked[suite.name] = fingerprint
    finally:
        last.close()
    return v.report.merged(check_identity(con, settings))


def ingest_event_columns() -> tuple[str, ...]:
    """The lake's event columns (journeys.ingest.EVENT_SCHEMA), imported late: ingest is a large module."""
    from journeys.ingest import EVENT_COLUMNS

    return EVENT_COLUMNS


def _days(us: float) -> str:
    return f"{us / 86_400_000_000:.1f} days"


def _outcome(
    report: QualityReport,
    name: str,
    setting: str,
    on_fail: str,
    ok: bool,
    detail: str,
    lines: list[str] | None = None,
) -> None:
    """Record one run-level outcome: a line always (in `lines`, default the freshness and volume lines), and a
    failure or a warning when it did not hold."""
    lines = report.checks if lines is None else lines
    if ok:
        lines.append(f"{name}: ok, {detail}")
        return
    text = f"{name}: {detail}; {setting}"
    lines.append(f"{name}: {'FAILED' if on_fail == 'fail' else 'warning'}, {detail}; {setting}")
    if on_fail == "fail":
        report.failures.append(Failure(name, "run", setting.split(" ")[0], None, None, [text]))
    else:
        report.warnings.append(text)


def check_freshness_and_volume(con: duckdb.DuckDBPyConnection, settings: Settings, *, as_of: datetime) -> QualityReport:
    """The configured freshness and volume checks of this run (off unless configured)."""
    from journeys import ingest

    # From the ingest manifest and the run history (`runs` of the working warehouse): new events are those
    # no published run has taken in.
    report = QualityReport()
    fresh, volume = settings.quality.freshness, settings.quality.volume
    if fresh.max_staleness is None and volume.min_ratio is None:
        return report
    last_load, loaded = None, 0
    if ingest.manifest_path(settings).exists():
        # New is what no published run has taken in: this run's ingest (every attempt of it) and that of a run
        # that failed its checks, whose rows this run will publish; so a failed low-volume run fails again.
        last_load, loaded = db.fetch(
            con,
            "select max(ingested_at) filter (where loaded > 0),"
            " coalesce(sum(loaded) filter (where not list_contains($published::varchar[], batch_id)), 0)"
            " from read_parquet($p)",
            {"p": str(ingest.manifest_path(settings)), "published": published_batches(con)},
        )[0]
    if fresh.max_staleness is not None:
        limit_us = parse_duration_us(fresh.max_staleness) or 0
        setting = f"quality.freshness.max_staleness is {fresh.max_staleness}"
        if loaded:
            _outcome(report, "freshness", setting, fresh.on_fail, True, f"{loaded} new events to publish")
        elif last_load is None:
            _outcome(report, "freshness", setting, fresh.on_fail, False, "no ingest has ever loaded an event")
        else:
            age_us = (as_of.astimezone(UTC).replace(tzinfo=None) - last_load) / timedelta(microseconds=1)
            detail = f"nothing new for {_days(age_us)} (last rows loaded at {last_load:%Y-%m-%d %H:%M} UTC)"
            _outcome(report, "freshness", setting, fresh.on_fail, age_us <= limit_us, detail)
    if volume.min_ratio is not None and loaded:
        setting = f"quality.volume.min_ratio is {volume.min_ratio}"
        previous = db.fetch(
            con, "select batch_id, rows_loaded from runs where rows_loaded > 0 order by published_at desc limit 1"
        )
        if not previous:
            report.checks.append(f"volume: skipped, no earlier published run loaded events ({loaded} new now)")
        else:
            prev_batch, prev_loaded = previous[0]
            ratio = loaded / prev_loaded
            detail = f"{loaded} new events, {ratio:.0%} of the {prev_loaded} loaded by run {prev_batch}"
            _outcome(report, "volume", setting, volume.on_fail, ratio >= volume.min_ratio, detail)
    return report


def check_identity(con: duckdb.DuckDBPyConnection, settings: Settings) -> QualityReport:
    """The identity section: the largest customer by linked identifiers and by events against
    `quality.identity`, what the guardrails held back, and the identifier-type trap."""
    report = QualityReport()
    present = {
        r[0] for r in db.fetch(con, "select table_name from duckdb_tables() union select view_name from duckdb_views()")
    }
    if not {"customers", "shared_identifiers"} <= present:
        return report
    check = settings.quality.identity
    for measure, column, limit, key in (
        ("identifiers", "n_identifiers", check.max_identifiers, "max_identifiers"),
        ("events", "n_events", check.max_events, "max_events"),
    ):
        col = db.quote_ident(column)
        largest, size, over = db.fetch(
            con,
            f"select (select customer_key from customers order by {col} desc, customer_key limit 1),"
            f" max({col}), count(*) filter (where {col} > $limit) from customers",
            {"limit": limit},
        )[0]
        name = f"largest customer by {measure}"
        if largest is None:
            report.identity.append(f"{name}: no customers")
            continue
        detail = f"{largest} holds {size} {measure}"
        if limit is None:
            report.identity.append(f"{name}: {detail} (quality.identity.{key} is off)")
            continue
        if over:
            # Strangers fused into one customer: the usual cause is a value every one of them shares.
            detail += (
                f", {over} customer(s) above {limit}: strangers fused? Look for a shared value in their"
                " identity_map rows and lower identity.max_links_per_value, or raise the limit for a real customer"
            )
        setting = f"quality.identity.{key} is {limit}"
        _outcome(report, name, setting, check.on_fail, not over, detail, report.identity)
    held = db.fetch(con, "select reason, count(*), max(n_events) from shared_identifiers group by all order by all")
    report.identity.append(
        "held back from linking (shared_identifiers): "
        + (", ".join(f"{n} {reason} (up to {most} events each)" for reason, n, most in held) or "none")
    )
    if "int_event_customers" not in present:
        # A published warehouse no longer holds the per-event customers the trap is counted over.
        report.identity.append("identifier-type trap: not checked, int_event_customers is not in this warehouse")
        return report
    traps = identity_limit_warnings(con, settings)
    report.warnings += traps
    report.identity += [f"identifier-type trap: warning, {t}" for t in traps] or ["identifier-type trap: ok"]
    return report


LIMIT_TRAP_MIN = 10
"""Held-back values of a one-per-customer type from which the run warns: one is a guardrail, many a mapping."""


def identity_limit_warnings(con: duckdb.DuckDBPyConnection, settings: Settings) -> list[str]:
    """Warn when many held-back e-mails or phones each join customers holding one value of a once-per-customer type.

    That is the pattern of an order-level id mapped as customer_id: every repeat buyer's e-mail would give
    one customer two customer ids, so the e-mail is held back and the buyer silently stays split.
    """
    single = sorted(t for t, n in settings.identity.max_values_per_type.items() if n == 1)
    if not single:
        return []
    rows = db.fetch(
        con,
        """
        with shared as (
            -- personal identifiers only: a device or cookie shared by a household is the guardrail at work,
            -- and so is a hub (a call centre's number), whoever its customers are
            select sh.id_type, sh.id_value
            from shared_identifiers as sh
            where sh.n_customers >= 2 and list_contains($personal, sh.id_type) and sh.reason <> 'hub'
        ),
        event_identifiers as (
            select ec.customer_key, unnest(ev.identifiers) as idf
            from events as ev
            inner join int_event_customers as ec on ec.event_id = ev.event_id
            where ec.customer_key is not null
        ),
        holders as (
            select distinct im.id_type, im.customer_key
            from identity_map as im
            where list_contains($types, im.id_type) and not im.is_shared
        ),
        split as (
            select sh.id_type as via_type, sh.id_value, ho.id_type as limited_type,
                count(distinct ei.customer_key) as n_customers
            from shared as sh
            inner join event_identifiers as ei on ei.idf.id_type = sh.id_type and ei.idf.id_value = sh.id_value
            inner join holders as ho on ho.customer_key = ei.customer_key
            group by all
            having count(distinct ei.customer_key) >= 2
        )
        select sp.limited_type, count(*), sum(sp.n_customers), min(sp.via_type)
        from split as sp group by sp.limited_type order by 1
        """,
        {"types": single, "personal": ["email", "phone"]},
    )
    return [
        f"identity: {held} held-back identifiers (e.g. {via}) each join customers that hold one {limited} each;"
        f" identity.max_values_per_type.{limited} = 1 keeps those {customers} customers apart. If one person"
        f" legitimately has several {limited} values (an order-level id), map that column to a per-order"
        " identifier type or raise the limit"
        for limited, held, customers, via in rows
        if held >= LIMIT_TRAP_MIN
    ]


def grain_summary(con: duckdb.DuckDBPyConnection, catalog: models.Catalog) -> list[dict[str, Any]]:
    """Per kept table with a grain: rows, rows with a null grain column, grain keys that occur twice or more."""
    present = {r[0] for r in db.fetch(con, "select table_name from duckdb_tables()")}
    out = []
    for m in catalog.kept():
        if not m.grain or m.materialized == "view" or m.name not in present:
            continue
        cols = ", ".join(map(db.quote_ident, m.grain))
        any_null = " or ".join(f"{db.quote_ident(c)} is null" for c in m.grain)
        rows, null_rows = db.fetch(
            con, f"select count(*), count(*) filter (where {any_null}) from {db.quote_ident(m.name)}"
        )[0]
        dup_keys = db.fetch(
            con,
            f"select count(*) from (select {cols} from {db.quote_ident(m.name)} group by all having count(*) > 1)",
        )[0][0]
        out.append(
            {
                "model": m.name,
                "grain": ", ".join(m.grain),
                "rows": rows,
                "null_grain_rows": null_rows,
                "duplicate_grain_keys": dup_keys,
            }
        )
    return out


def validate_grains(con: duckdb.DuckDBPyConnection, v: _Validator, catalog: models.Catalog, suite: Suite) -> None:
    """One GX run of the grain suite over the grain summary of every kept table (counted in DuckDB, set-based)."""
    import pandas as pd

    summary = grain_summary(con, catalog)
    frame = pd.DataFrame(summary, columns=["model", "grain", "rows", "null_grain_rows", "duplicate_grain_keys"])
    before = len(v.report.failures)
    v.validate(GRAIN_SUITE, f"{len(summary)} tables", frame, list(suite.expectations), notes=suite.notes)
    # GX names the offending counts; the report should name the tables and their grain.
    for f in v.report.failures[before:]:
        col = f.column or ""
        if col not in frame.columns:
            continue
        f.sample = [
            f"{row['model']} ({row['grain']}): {row[col]} of {row['rows']} rows"
            if col == "null_grain_rows"
            else f"{row['model']} ({row['grain']}): {row[col]} keys repeated"
            for row in summary
            if row[col]
        ]


def _md(text: Any) -> str:
    """A value safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_quality_report(report: QualityReport, path: Path) -> Path:
    """Write the run's quality outcome as Markdown beside the run (atomic)."""
    lines = ["# Data quality", "", f"Result: {'PASSED' if report.success else 'FAILED'}", ""]
    lines += [f"- suite `{s}`: {n} batch(es)" for s, n in sorted(report.suites.items())]
    lines += ["", f"Expectations evaluated: {report.expectations_run}", ""]
    days = report.event_dates
    span = f" on {len(days)} day(s), {days[0]} .. {days[-1]}" if days else ""
    lines += [f"Canonical events checked: {report.events_checked} new row(s){span}", ""]
    if len(report.landing_batches) > 1:
        # More than this run's batch: a run died (or failed) after ingest; its landing files were checked here.
        lines += [f"Raw landing suites checked the files of batches: {_md(', '.join(report.landing_batches))}", ""]
    if report.scopes:
        lines += ["Table suites checked on new or changed rows only:", ""] + [f"- {_md(s)}" for s in report.scopes]
        lines.append("")
    if report.failures:
        lines += ["## Failures", ""]
        lines += ["| suite | batch | expectation | column | unexpected | sample |", "|---|---|---|---|---|---|"]
        for f in report.failures:
            lines.append(
                f"| {_md(f.suite)} | {_md(f.batch)} | {f.expectation} | {_md(f.column or '')} | {f.unexpected_count} "
                f"| {_md(', '.join(f.sample[:5]))} |"
            )
        lines.append("")
    if report.checks:
        lines += ["## Freshness and volume", ""] + [f"- {_md(c)}" for c in report.checks] + [""]
    if report.identity:
        lines += ["## Identity", ""] + [f"- {_md(c)}" for c in report.identity] + [""]
    if report.warnings:
        lines += ["## Warnings", ""] + [f"- {_md(w)}" for w in report.warnings] + [""]
    if report.files:
        lines += ["## Quarantined share per landing file", ""]
        lines += [
            "| source | file | batch | read | quarantined | share | within limit |",
            "|---|---|---|---|---|---|---|",
        ]
        for fs in report.files:
            lines.append(
                f"| {_md(fs.source)} | {_md(fs.file)} | {_md(fs.batch_id)} | {fs.read} | {fs.quarantined} "
                f"| {fs.share:.2%} | {'yes' if fs.ok else '**no**'} |"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _slug(text: str) -> str:
    """A label safe as a file name and in a URL (Data Docs name a page after its batch)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "batch"


def write_data_docs(report: QualityReport, reports_dir: Path, batch_id: str, *, keep: Collection[str] = ()) -> Path:
    """Build this run's GX Data Docs (its suites and validation results only) into `reports/data_docs/<batch>/`.

    `reports/data_docs/index.html` then opens that site. Older sites beyond the newest KEEP_DATA_DOCS go,
    except those of the batches in `keep` (the published run's, which the HTML report links to).
    Returns the site's index page.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    root = reports_dir / DATA_DOCS
    site = root / _slug(batch_id)
    # Built aside and renamed into place: a reader never sees half a site.
    tmp = root / f".{site.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    ctx = _context()
    ctx.update_data_docs_site(
        "local_site",
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(tmp)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    for doc in report.suite_docs.values():
        ctx.suites.add(gx.ExpectationSuite(**doc))
    for i, (suite, batch, result) in enumerate(report.results):
        suite_id = ExpectationSuiteIdentifier(name=suite)
        # Numbered: two batches of one suite may share a label and a run time.
        key = ValidationResultIdentifier(suite_id, result.meta["run_id"], _slug(f"{i:03d}-{batch}"))
        ctx.validation_results_store.store_validation_results(result, key, suite_id)
    ctx.build_data_docs(site_names=["local_site"])
    _drop_unused_static(tmp)
    shutil.rmtree(site, ignore_errors=True)
    os.replace(tmp, site)
    name = html.escape(site.name, quote=True)
    _write_atomic(
        root / "index.html",
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Data Docs {name}</title>'
        f'<meta http-equiv="refresh" content="0; url={name}/index.html"></head>'
        f'<body><p>Great Expectations Data Docs of the latest quality check: <a href="{name}/index.html">run {name}</a>'
        "</p></body></html>\n",
    )
    _prune_data_docs(root, {site.name, *map(_slug, keep)})
    return site / "index.html"


def _drop_unused_static(site: Path) -> None:
    """Remove GX's static images and fonts that no page or style sheet of the site names (most of its 4 MB)."""
    texts = "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in site.rglob("*") if p.suffix in (".html", ".css")
    )
    for path in [*site.glob("static/images/*"), *site.glob("static/fonts/**/*")]:
        if path.is_file() and path.name not in texts:
            path.unlink()


def _prune_data_docs(root: Path, keep: set[str]) -> None:
    """Remove the sites beyond the newest KEEP_DATA_DOCS (but not those in `keep`) and dead runs' partial sites."""
    sites = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    for old in sites[KEEP_DATA_DOCS:]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    # Called under the run lock: a partial site is a dead run's.
    for partial in root.glob(".*.tmp"):
        shutil.rmtree(partial, ignore_errors=True)


# --- landing layer: raw rows per source, and the quarantine share per file -----------------------------


def share_exceeded(read: int, quarantined: int, max_share: float) -> bool:
    """True when more than `max_share` of a file's rows were quarantined.

    A single bad row never fails a file on its own: in a file of a dozen rows one malformed row is
    already 8%, which says nothing about the source.
    """
    return read > 0 and quarantined > 1 and quarantined / read > max_share


def file_shares(
    settings: Settings, manifest: list[dict[str, Any]], current: set[tuple[str, str, str]]
) -> list[FileShare]:
    """Quarantined share of the latest ingested version of every landing file that is still in landing."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(manifest, key=lambda r: r["ingested_at"]):
        latest[(row["source"], row["file"])] = row
    shares = []
    for (source, file), row in sorted(latest.items()):
        # A file removed or replaced in landing no longer gates the run: fixing it is how one recovers.
        if (source, file, row["sha256"]) not in current:
            continue
        read, quarantined = row["read"], row["quarantined"]
        share = quarantined / read if read else 0.0
        ok = not share_exceeded(read, quarantined, settings.quality.max_quarantine_share)
        shares.append(FileShare(source, file, row["batch_id"], read, quarantined, share, ok))
    return shares


def _raw_expectations(src: Any, max_share: float) -> list[Any]:
    import great_expectations.expectations as gxe

    # Up to the tolerated quarantine share of a file may lack its id or a required time; those rows are
    # quarantined. Optional event times may be empty, and a links source has none.
    mostly = max(0.0, 1.0 - max_share)
    cols = dict.fromkeys([*src.event_id_columns, *src.required_time_columns])
    return [gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=mostly) for c in cols]


def _has_data_rows(f: Any) -> bool:
    """A landing file that holds at least one data line (beyond a CSV header)."""
    if f.empty:
        return False
    return f.lines > 1 if f.source.format == "csv" else True


def validate_landing(
    settings: Settings,
    *,
    batch_id: str,
    batch_rows: int = BATCH_ROWS,
    suites: Mapping[str, Suite] | None = None,
) -> QualityReport:
    """RAW suite per source on the landing files of `batch_id` and of unchecked earlier batches; the share limit.

    Each source's suite `raw_<source>` is the not-null expectations its mapping implies plus the `raw` suite.
    The earlier batches are those of the manifest no published run recorded in state/runs.parquet (see
    pending_landing_batches). The raw values come from ingest's handoff (this batch's is read, then removed);
    a file it lacks is read from landing again.
    """
    from journeys import ingest

    # Before anything is removed: the batch's handoff folder is named after it ('..' is the state folder).
    ingest.check_batch_id(batch_id)
    try:
        return _validate_landing(settings, batch_id=batch_id, batch_rows=batch_rows, suites=suites)
    finally:
        drop_raw_handoff(settings, batch_id)


def drop_raw_handoff(settings: Settings, batch_id: str) -> None:
    """Remove the raw handoff ingest left for `batch_id` (and the handoff folder once no batch has one)."""
    shutil.rmtree(settings.handoff_dir / batch_id, ignore_errors=True)
    with contextlib.suppress(OSError):
        settings.handoff_dir.rmdir()  # only when empty


def pending_landing_batches(settings: Settings, manifest: list[dict[str, Any]], batch_id: str) -> list[str]:
    """Earlier ingest batches of the manifest whose landing files no published run has checked."""
    from journeys import lake

    # state/runs.parquet, not last_published.json or the kept build: the same record the canonical-events
    # suite goes by, moved into place only with the set of a run that passed its checks, so a kill at any
    # point leaves a batch unrecorded (checked again), never recorded unchecked.
    done = lake.checked_batches(settings)
    return sorted({r["batch_id"] for r in manifest} - done - {batch_id})


def _validate_landing(
    settings: Settings, *, batch_id: str, batch_rows: int, suites: Mapping[str, Suite] | None
) -> QualityReport:
    from journeys import ingest

    report = QualityReport()
    path = ingest.manifest_path(settings)
    if not path.exists():
        return report
    with duckdb.connect() as con:
        manifest = con.sql("select * from read_parquet($p)", params={"p": str(path)}).to_arrow_table().to_pylist()
    known = _handed_fingerprints(settings, batch_id)
    landing = {(f.source.name, f.rel, f.sha256): f for f in ingest.landing_files(settings, known)}

    report.files = file_shares(settings, manifest, set(landing))
    limit = settings.quality.max_quarantine_share
    for fs in report.files:
        if not fs.ok:
            report.failures.append(
                Failure(
                    suite="quarantine_share",
                    batch=fs.file,
                    expectation="max_quarantine_share",
                    column=None,
                    unexpected_count=fs.quarantined,
                    sample=[f"{fs.share:.1%} of {fs.read} rows quarantined (limit {limit:.1%}, batch {fs.batch_id})"],
                )
            )
    # A run that died after ingest left its files unchecked: they are checked with this run's, drift included
    # (it was never reported either). Nightly, with nothing pending, this costs one read of runs.parquet.
    pending = pending_landing_batches(settings, manifest, batch_id)
    batches = {batch_id, *pending}
    report.landing_batches = sorted(batches)
    for row in manifest:
        if row["batch_id"] in batches and row.get("new_columns"):
            report.warnings.append(
                f"schema drift: source {row['source']!r}, file {row['file']!r}: new column(s) {row['new_columns']}"
            )

    raw = (load_suites(settings) if suites is None else suites)[RAW_SUITE]
    v = _Validator({"max_quarantine_share": limit}, batch_id)
    # A version in landing once, whichever batches name it (a retry's, or a version ingested again after reset).
    keys = dict.fromkeys((r["source"], r["file"], r["sha256"]) for r in manifest if r["batch_id"] in batches)
    this_batch = [landing[k] for k in keys if k in landing]
    # An earlier batch's handoff is normally gone (removed at this run's start); where one is left, it is used.
    handed = {k: h for b in sorted(batches) for k, h in _handed_files(settings, b).items()}
    # One suite run per source over all of this batch's files of it, in bounded row batches: a GX run has
    # a fixed cost, so one per file is slow when a delivery is many small files.
    # One connection for every source: each file's read replaces the reader's tables of the one before.
    with ingest.ingest_connection(settings) as con:
        for src in settings.sources:
            files = [f for f in this_batch if f.source.name == src.name and _has_data_rows(f)]
            if not files:
                continue  # empty and header-only files: nothing to expect of their rows
            suite = f"raw_{src.name}"
            expectations = [*_raw_expectations(src, limit), *raw.expectations]
            cols = ingest.raw_suite_columns(src)
            files.sort(key=lambda f: f.rel)
            # A file with data lines but not one row is a GX run of its own: exactly what a row count is for.
            on_empty = functools.partial(
                v.validate, suite, expectations=expectations, empty_ok=False, raw=True, notes=raw.notes
            )
            label = files[0].rel if len(files) == 1 else f"{len(files)} files {files[0].rel} .. {files[-1].rel}"
            rows = _raw_rows(con, files, cols, batch_rows, on_empty, handed)
            for i, frame in enumerate(_batched(rows, batch_rows)):
                v.validate(suite, f"{label}#{i}", frame, expectations, raw=True, notes=raw.notes)
    ingest.drop_landing_copies(settings)  # the raw reads above may have made some
    return report.merged(v.report)


def _handed_fingerprints(settings: Settings, batch_id: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The landing fingerprints ingest took in `batch_id` (journeys.ingest.Fingerprints); none without a handoff."""
    path = settings.handoff_dir / batch_id / "landing.parquet"
    if not path.exists():
        return {}
    with duckdb.connect() as con:
        rows = db.fetch(
            con,
            "select source, file, size, mtime_ns, sha256, lines, compression, mixed from read_parquet($p)",
            {"p": str(path)},
        )
    return {(r[0], r[1]): r[2:] for r in rows}


@dataclass(frozen=True)
class _Handed:
    """One landing file's raw values in ingest's handoff: its Parquet part, ordinal there, and counts."""

    part: Path
    ordinal: int
    rows: int
    left_out: int
    columns: tuple[str, ...]


def _handed_files(settings: Settings, batch_id: str) -> dict[tuple[str, str, str], _Handed]:
    """The files of `batch_id` ingest handed their raw values over for, by (source, file, sha256)."""
    folder = settings.handoff_dir / batch_id
    indexes = sorted(str(p) for p in folder.glob("*.files.parquet"))
    if not indexes:
        return {}  # a data root ingested before the handoff, or a batch whose handoff was not written
    with duckdb.connect() as con:
        rows = db.fetch(
            con,
            'select source, file, sha256, part, ordinal, "rows", left_out, columns'
            " from read_parquet($indexes::varchar[]) order by part, ordinal",
            {"indexes": indexes},
        )
    # A file is in one part only (a part is renamed in after the manifest records its files); should a
    # version be handed twice, its rows are the same bytes read the same way: the last part is taken.
    return {
        (source, file, sha): _Handed(folder / part, ordinal, n, left_out, tuple(cols))
        for source, file, sha, part, ordinal, n, left_out, cols in rows
    }


def _raw_rows(
    con: duckdb.DuckDBPyConnection,
    files: list[Any],
    cols: list[str],
    batch_rows: int,
    on_empty: Callable[[str, Any], None],
    handed: Mapping[tuple[str, str, str], _Handed] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Each landing file's rows as ingest read them, in line order, file after file: the raw text of `cols`.

    From ingest's handoff (`handed`) where it holds the file, else read from landing again. A links source has
    no id or time column to expect anything of: its rows hold their line number only. `on_empty(file, frame)`
    is called for a file with data lines but not one row (lines that are all blank are padding, counted by
    ingest, and fail nothing; nor do rows that keep_rows leaves out).
    """
    handed = handed or {}
    run: list[_Handed] = []
    for f in files:
        h = handed.get((f.source.name, f.rel, f.sha256))
        if h is not None and list(h.columns) != cols:
            h = None  # handed under another mapping (an edited config): read the file as it is now
        if h is not None and h.rows:
            run.append(h)  # consecutive handed files are read in one query
            continue
        yield from _handed_rows(con, run, cols, batch_rows)
        run = []
        if h is not None:
            if not h.left_out:
                empty = _raw_select(cols, "(select null::bigint as __line) where false", values=False)
                on_empty(f.rel, _gx_frame(con.sql(empty).to_arrow_table()))
            continue
        yield from _landing_rows(con, f, cols, batch_rows, on_empty)
    yield from _handed_rows(con, run, cols, batch_rows)


def _raw_select(cols: list[str], rows: str, *, values: bool = True) -> str:
    """SQL selecting the raw suite's columns (`__line` for a links source) from handed `rows` (v1, v2, ...)."""
    names = [f"cast({f'v{i}' if values else 'null'} as varchar) as {db.quote_ident(c)}" for i, c in enumerate(cols, 1)]
    return f"select {', '.join(names) or 'cast(__line as bigint) as __line'} from {rows}"


def _handed_rows(
    con: duckdb.DuckDBPyConnection, files: list[_Handed], cols: list[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """The handed rows of `files`, file after file in the given order, each in line order; streamed."""
    if not files:
        return
    params = {
        "parts": sorted({str(h.part) for h in files}),
        "file_parts": [str(h.part) for h in files],
        "ordinals": [h.ordinal for h in files],
        "ranks": list(range(len(files))),
    }
    # The handoff holds files in ingest's order, which puts replacing versions first; the suite reads them
    # by path. Spillable sort of a few narrow columns; the landing files are not read again.
    sql = f"""
        with handed as (
            select * from read_parquet($parts::varchar[], filename = true)
        ),
        chosen as (
            select
                unnest($file_parts::varchar[]) as part,
                unnest($ordinals::integer[]) as ordinal,
                unnest($ranks::integer[]) as __rank
        ),
        final as (
            select h.* exclude (filename, __file), c.__rank
            from handed as h
            inner join chosen as c on h.filename = c.part and h.__file = c.ordinal
        )
        {_raw_select(cols, "final")}
        order by __rank, __line
    """
    yield from con.sql(sql, params=params).to_arrow_reader(batch_rows)


def _landing_rows(
    con: duckdb.DuckDBPyConnection, f: Any, cols: list[str], batch_rows: int, on_empty: Callable[[str, Any], None]
) -> Iterator[pa.RecordBatch]:
    """A landing file's raw rows read again with ingest's reader (a file ingest handed nothing of)."""
    from journeys import ingest

    ingest.read_source_rows(con, f, _raw_read_columns(con, f, cols))
    types = dict(db.fetch(con, "select column_name, column_type from (describe src_rows)"))
    texts = [f"{ingest.raw_text_expr(c, types[c])} as {db.quote_ident(c)}" for c in cols]
    n_rows, n_left_out = db.fetch(
        con,
        "select (select count(*) from src_rows),"
        " (select count(*) from src_blank_rows) + (select count(*) from src_filtered_rows)",
    )[0]
    # Streamed: a large file is never whole in memory, and the next file's read replaces src_rows only
    # once this one's rows are all out.
    reader = con.sql(f"select {', '.join(texts) or '__line'} from src_rows order by __line").to_arrow_reader(batch_rows)
    if not n_rows and not n_left_out:
        on_empty(f.rel, _gx_frame(reader.schema.empty_table()))
    yield from reader


def _raw_read_columns(con: duckdb.DuckDBPyConnection, f: Any, cols: list[str]) -> list[str]:
    """The columns a landing file is read with for its raw suite: the suite's and the `keep_rows` filters'.

    A CSV file is read with all of its header's columns, as its rows split on them; a JSON lines or Parquet
    file's rows are the same whichever keys are taken out of them, and finding all of a JSON lines file's keys
    is a pass over the whole file of its own.
    """
    from journeys import ingest

    if f.source.format == "csv":
        return list(ingest.check_sources(con, [f])[f.ordinal])
    return list(dict.fromkeys([*cols, *(r.column for r in f.source.keep_rows)]))
