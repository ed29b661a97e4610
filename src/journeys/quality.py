"""Great Expectations suites per layer (canonical events, identity, journeys, marts), run on bounded batches.

GX 1.x has no DuckDB data source and its SQL route fails on DuckDB, so batches are pulled from DuckDB as
pandas frames of at most `batch_rows` rows (per lake partition for events) and validated there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from journeys import db
from journeys.config import Settings, parse_duration_us

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
class QualityReport:
    """Every suite's outcome for one run."""

    suites: dict[str, int] = field(default_factory=dict)  # suite -> batches validated
    expectations_run: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """Readable lines naming each failure."""
        if self.success:
            return f"all {self.expectations_run} expectations passed over suites {sorted(self.suites)}"
        lines = [f"{len(self.failures)} expectation(s) failed:"]
        for f in self.failures:
            lines.append(
                f"  [{f.suite} / {f.batch}] {f.expectation}"
                f"{'(' + f.column + ')' if f.column else ''}: {f.unexpected_count} unexpected, e.g. {f.sample[:5]}"
            )
        return "\n".join(lines)


class QualityError(RuntimeError):
    """A suite failed: the run's marts must not be published."""


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def _expectations(suite: str, settings: Settings, as_of: datetime, n_stages: int | None = None) -> list[Any]:
    import great_expectations.expectations as gxe

    if suite == "canonical_events":
        max_at = as_of.replace(tzinfo=None) + timedelta(microseconds=parse_duration_us(settings.quality.max_future))
        return [
            gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
            gxe.ExpectColumnValuesToBeUnique(column="event_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="occurred_at"),
            gxe.ExpectColumnValuesToBeBetween(
                column="occurred_at",
                min_value=datetime.fromisoformat(settings.quality.min_occurred_at),
                max_value=max_at,
            ),
            gxe.ExpectColumnValuesToBeInSet(column="channel", value_set=list(settings.channels)),
            gxe.ExpectColumnValuesToNotBeNull(column="event_type"),
            gxe.ExpectColumnValuesToBeBetween(column="sentiment", min_value=-1.0, max_value=1.0),
        ]
    if suite == "identity":
        return [
            gxe.ExpectColumnValuesToNotBeNull(column="customer_key"),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["id_type", "id_value"]),
        ]
    if suite == "journeys":
        return [
            gxe.ExpectColumnValuesToNotBeNull(column="journey_id"),
            gxe.ExpectColumnValuesToBeUnique(column="journey_id"),
            gxe.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="furthest_stage", min_value=0, max_value=n_stages),
        ]
    if suite == "stage_conversion":
        return [
            gxe.ExpectColumnValuesToBeBetween(column="conversion_rate", min_value=0.0, max_value=1.0),
            gxe.ExpectColumnValuesToBeBetween(column="conversion_from_start", min_value=0.0, max_value=1.0),
            gxe.ExpectColumnValuesToBeBetween(column="journeys_entered", min_value=0),
        ]
    raise ValueError(f"unknown suite {suite}")


class _Validator:
    """Runs named suites over pandas batches and collects failures."""

    def __init__(self) -> None:
        self.ctx = _context()
        self.source = self.ctx.data_sources.add_pandas("journeys")
        self.report = QualityReport()
        self._defs: dict[str, Any] = {}

    def validate(self, suite: str, batch: str, frame: Any, expectations: list[Any]) -> None:
        import great_expectations as gx

        if suite not in self._defs:
            asset = self.source.add_dataframe_asset(suite)
            bd = asset.add_batch_definition_whole_dataframe(suite)
            s = self.ctx.suites.add(gx.ExpectationSuite(name=suite))
            for e in expectations:
                s.add_expectation(e)
            self._defs[suite] = self.ctx.validation_definitions.add(
                gx.ValidationDefinition(name=suite, data=bd, suite=s)
            )
        if len(frame) == 0:
            return
        result = self._defs[suite].run(batch_parameters={"dataframe": frame})
        self.report.suites[suite] = self.report.suites.get(suite, 0) + 1
        self.report.expectations_run += len(result.results)
        for r in result.results:
            if not r.success:
                kw = r.expectation_config.kwargs
                self.report.failures.append(
                    Failure(
                        suite=suite,
                        batch=batch,
                        expectation=r.expectation_config.type,
                        column=kw.get("column") or ",".join(kw.get("column_list") or []) or None,
                        unexpected_count=r.result.get("unexpected_count"),
                        sample=[str(v) for v in (r.result.get("partial_unexpected_list") or [])[:10]],
                    )
                )


def _frames(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int, params: dict | None = None):
    rel = con.sql(sql, params=params) if params else con.sql(sql)
    for batch in rel.to_arrow_reader(batch_rows):
        if batch.num_rows:
            yield batch.to_pandas()


def validate_warehouse(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    as_of: datetime,
    event_dates: list[Any] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> QualityReport:
    """Run every suite: lake events (per partition, only `event_dates` if given), identity, journeys, marts."""
    v = _Validator()
    dates = event_dates
    if dates is None:
        dates = [r[0] for r in db.fetch(con, "select distinct event_date from events order by 1")]
    ev = _expectations("canonical_events", settings, as_of)
    for d in dates:
        sql = (
            "select event_id, occurred_at, channel, event_type, sentiment from events "
            "where event_date = $event_date::date"
        )
        for i, frame in enumerate(_frames(con, sql, batch_rows, {"event_date": str(d)})):
            v.validate("canonical_events", f"event_date={d}#{i}", frame, ev)
    for i, frame in enumerate(_frames(con, "select id_type, id_value, customer_key from identity_map", batch_rows)):
        v.validate("identity", f"identity_map#{i}", frame, _expectations("identity", settings, as_of))
    n_stages = db.fetch(con, "select coalesce(max(n_stages), 0) from stage_definitions")[0][0]
    js = _expectations("journeys", settings, as_of, n_stages=n_stages)
    for i, frame in enumerate(_frames(con, "select journey_id, n_events, furthest_stage from journeys", batch_rows)):
        v.validate("journeys", f"journeys#{i}", frame, js)
    sc = _expectations("stage_conversion", settings, as_of)
    for i, frame in enumerate(_frames(con, "select * from stage_conversion", batch_rows)):
        v.validate("stage_conversion", f"stage_conversion#{i}", frame, sc)
    return v.report


def write_quality_report(report: QualityReport, path: Path) -> Path:
    """Write the run's quality outcome as Markdown beside the run (atomic)."""
    lines = ["# Data quality", "", f"Result: {'PASSED' if report.success else 'FAILED'}", ""]
    lines += [f"- suite `{s}`: {n} batch(es)" for s, n in sorted(report.suites.items())]
    lines += ["", f"Expectations evaluated: {report.expectations_run}", ""]
    if report.failures:
        lines += ["| suite | batch | expectation | column | unexpected | sample |", "|---|---|---|---|---|---|"]
        for f in report.failures:
            lines.append(
                f"| {f.suite} | {f.batch} | {f.expectation} | {f.column or ''} | {f.unexpected_count} "
                f"| {', '.join(f.sample[:5])} |"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
