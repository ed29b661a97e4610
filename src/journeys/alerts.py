"""Goals and alerts: the configured goals and the previous published run's marts as tables, then `alerts`.

The `alerts` mart (sql/marts/alerts.sql) is a SQL model built by the `alerts` procedure, because two of
its inputs are not tables of the run: the goals come from the config (one row per goal, as the stage
tables come from the stage YAML), and the previous run's values come from its published Parquet marts,
`marts/.current/<table>.parquet` (while a run builds, `.current` is still the previous run's set), which
do not exist on a first run and may predate a column. Both are made here as scratch tables with fixed
columns; every comparison stays in SQL.

"Previous" means the previous night: the latest published run with an earlier as_of. A rerun of the same
night (`.current` has this run's as_of) compares with what that night's published alerts compared with,
their own previous values, so a rerun that changes nothing publishes the same alerts (SPEC 8).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from journeys import db, models
from journeys.config import Settings

GOALS_TABLE = "int_goals"
PREVIOUS_RUN_TABLE = "int_previous_run"
PREVIOUS_ALERTS_TABLE = "int_previous_alerts"

PREVIOUS_MARTS: dict[str, dict[str, str]] = {
    "stage_funnel": {
        "stage_model": "varchar",
        "mode": "varchar",
        "stage_name": "varchar",
        "conversion_rate": "double",
    },
    "stage_channel_matrix": {
        "stage_model": "varchar",
        "stage_name": "varchar",
        "channel": "varchar",
        "flow_rate": "double",
        "monetised_value": "double",
    },
    "touchpoint_performance": {
        "stage_model": "varchar",
        "stage_name": "varchar",
        "touchpoint": "varchar",
        "share_dropped_at_stage": "double",
        "mean_sentiment": "double",
    },
}
"""The columns `alerts` reads from each of the previous run's marts (the keys of a goal and its metrics)."""

_GOALS_SCHEMA = pa.schema(
    [
        ("goal_name", pa.string()),
        ("stage_model", pa.string()),
        ("metric", pa.string()),
        ("stage_name", pa.string()),
        ("mode", pa.string()),
        ("channel", pa.string()),
        ("touchpoint", pa.string()),
        ("threshold", pa.float64()),
        ("direction", pa.string()),
    ]
)


def previous_table(mart: str) -> str:
    """Name of the scratch table holding the previous run's rows of `mart`."""
    return f"int_previous_{mart}"


def previous_mart_path(settings: Settings, mart: str) -> Path:
    """The previous published run's Parquet file of `mart`, as seen while a run builds."""
    return settings.marts_dir / ".current" / f"{mart}.parquet"


def goals_table(settings: Settings, stage_models: Any) -> pa.Table:
    """One row per configured goal; `mode` is the funnel mode its value comes from (null where none applies)."""
    first_mode = {m.name: ref.modes[0] for m, ref in stage_models}
    rows = []
    for g in settings.goals:
        mode = None
        if g.metric == "conversion_rate":
            mode = g.mode or first_mode[g.stage_model]
        elif g.metric == "dropout_share":
            # touchpoint_performance judges dropout in the stage model's first mode.
            mode = first_mode[g.stage_model]
        rows.append(
            {
                "goal_name": g.name,
                "stage_model": g.stage_model,
                "metric": g.metric,
                "stage_name": g.stage,
                "mode": mode,
                "channel": g.channel,
                "touchpoint": g.touchpoint,
                "threshold": g.threshold,
                "direction": g.direction,
            }
        )
    return pa.Table.from_pylist(rows, schema=_GOALS_SCHEMA)


def _kv(con: duckdb.DuckDBPyConnection, path: Path, key: str) -> str | None:
    rows = db.fetch(
        con, "select kv.value from parquet_kv_metadata($p) as kv where decode(kv.key) = $k", {"p": str(path), "k": key}
    )
    return rows[0][0].decode() if rows else None


def _empty(con: duckdb.DuckDBPyConnection, table: str, columns: Mapping[str, str]) -> None:
    cols = ", ".join(f"{db.quote_ident(c)} {t}" for c, t in columns.items())
    db.execute(con, f"create or replace temp table {db.quote_ident(table)} ({cols})")


def _from_parquet(con: duckdb.DuckDBPyConnection, table: str, path: Path, columns: Mapping[str, str]) -> None:
    present = {r[0] for r in db.fetch(con, "select name from parquet_schema($p)", {"p": str(path)})}
    # A set published before a column existed lacks it: its value was not known then.
    cols = ", ".join(
        f"{db.quote_ident(c)}::{t} as {db.quote_ident(c)}" if c in present else f"null::{t} as {db.quote_ident(c)}"
        for c, t in columns.items()
    )
    db.execute(
        con,
        f"create or replace temp table {db.quote_ident(table)} as select {cols} from read_parquet($p)",
        {"p": str(path)},
    )


_PREVIOUS_ALERTS = {"goal_name": "varchar", "previous_value": "double", "previous_batch_id": "varchar"}


def previous_marts(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: datetime) -> dict[str, int]:
    """Tables int_previous_<mart>, int_previous_run and int_previous_alerts from the published set (see above)."""
    current = settings.marts_dir / ".current"
    funnel = previous_mart_path(settings, "stage_funnel")
    published_as_of = _kv(con, funnel, "journeys.as_of") if funnel.exists() else None
    this_night = as_of.astimezone(UTC)
    same_night = published_as_of is not None and datetime.fromisoformat(published_as_of) >= this_night
    earlier = funnel.exists() and not same_night
    for mart, columns in PREVIOUS_MARTS.items():
        path = previous_mart_path(settings, mart)
        if earlier and path.exists():
            _from_parquet(con, previous_table(mart), path, columns)
        else:
            _empty(con, previous_table(mart), columns)
    _empty(con, PREVIOUS_RUN_TABLE, {"batch_id": "varchar", "as_of": "varchar"})
    if earlier:
        db.execute(
            con,
            f"insert into {PREVIOUS_RUN_TABLE} values ($b, $a)",
            {"b": _kv(con, funnel, "journeys.batch_id"), "a": published_as_of},
        )
    alerts = current / "alerts.parquet"
    # Only a rerun of the published night carries its previous values over; a later set of an older night's
    # rerun (a backfill out of order) is no previous night at all.
    if same_night and datetime.fromisoformat(str(published_as_of)) == this_night and alerts.exists():
        _from_parquet(con, PREVIOUS_ALERTS_TABLE, alerts, _PREVIOUS_ALERTS)
    else:
        _empty(con, PREVIOUS_ALERTS_TABLE, _PREVIOUS_ALERTS)
    tables = [*(previous_table(m) for m in PREVIOUS_MARTS), PREVIOUS_RUN_TABLE, PREVIOUS_ALERTS_TABLE]
    return {t: db.fetch(con, f"select count(*) from {db.quote_ident(t)}")[0][0] for t in tables}


SCRATCH = (GOALS_TABLE, PREVIOUS_RUN_TABLE, PREVIOUS_ALERTS_TABLE, *(previous_table(m) for m in PREVIOUS_MARTS))


def build_alerts(
    con: duckdb.DuckDBPyConnection, context: Any, params: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Tables int_goals and the previous run's marts, then the `alerts` mart from them."""
    goals = goals_table(context.settings, context.stage_models)
    con.register("_arrow_in", goals)
    db.execute(con, f"create or replace temp table {GOALS_TABLE} as select * from _arrow_in")
    con.unregister("_arrow_in")
    counts = {GOALS_TABLE: goals.num_rows, **previous_marts(con, context.settings, context.as_of)}
    models.materialize(con, context.catalog.models["alerts"], {**context.params, **(params or {})})
    counts["alerts"] = db.fetch(con, "select count(*) from alerts")[0][0]
    if not context.keep_scratch:
        # Temp tables outlive the step when the connection does (a test, one in-memory build).
        for name in SCRATCH:
            db.execute(con, f"drop table if exists {db.quote_ident(name)}")
    return counts


_SCRATCH_DESCRIPTIONS = {
    GOALS_TABLE: "One row per goal of the config: name, stage model, metric, stage name, funnel mode, channel,"
    " touchpoint, threshold, direction.",
    PREVIOUS_RUN_TABLE: "The previous night's published run (batch_id, as_of from its stage_funnel mart's metadata);"
    " no row on a first run or a rerun of the published night.",
    PREVIOUS_ALERTS_TABLE: "On a rerun of the published night: that night's alerts' previous values, per goal; empty"
    " otherwise.",
    **{
        previous_table(m): f"The previous night's published {m}, only the columns alerts reads (null where that"
        " mart lacked one); empty on a first run or a rerun of the published night."
        for m in PREVIOUS_MARTS
    },
}

models.register(
    models.Procedure(
        name="alerts",
        task="build-marts",
        layer="marts",
        run=build_alerts,
        outputs=tuple(
            models.Model(name=name, layer="marts", materialized="temp", procedure="alerts", description=text)
            for name, text in _SCRATCH_DESCRIPTIONS.items()
        ),
    )
)
