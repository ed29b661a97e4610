"""Goals and alerts: the configured goals and the previous published run's marts as tables, then `alerts`.

The `alerts` mart (sql/marts/alerts.sql) is a SQL model built by the `alerts` procedure, because two of
its inputs are not tables of the run: the goals come from the config (one row per goal, as the stage
tables come from the stage YAML), and the previous run's values come from its published Parquet marts,
`marts/.current/<table>.parquet` (while a run builds, `.current` is still the previous run's set), which
do not exist on a first run and may predate a column. Both are made here as scratch tables with fixed
columns; every comparison stays in SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from journeys import db, models
from journeys.config import Settings

GOALS_TABLE = "int_goals"
PREVIOUS_RUN_TABLE = "int_previous_run"

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


def previous_marts(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict[str, int]:
    """Tables int_previous_<mart> and int_previous_run from the previous published set; empty on a first run."""
    counts = {}
    for mart, columns in PREVIOUS_MARTS.items():
        table = db.quote_ident(previous_table(mart))
        path = previous_mart_path(settings, mart)
        if path.exists():
            present = {r[0] for r in db.fetch(con, "select name from parquet_schema($p)", {"p": str(path)})}
            # A set published before a column existed lacks it: its value was not known then.
            cols = ", ".join(
                f"{db.quote_ident(c)}::{t} as {db.quote_ident(c)}"
                if c in present
                else f"null::{t} as {db.quote_ident(c)}"
                for c, t in columns.items()
            )
            db.execute(
                con, f"create or replace temp table {table} as select {cols} from read_parquet($p)", {"p": str(path)}
            )
        else:
            cols = ", ".join(f"{db.quote_ident(c)} {t}" for c, t in columns.items())
            db.execute(con, f"create or replace temp table {table} ({cols})")
        counts[previous_table(mart)] = db.fetch(con, f"select count(*) from {table}")[0][0]
    db.execute(con, f"create or replace temp table {PREVIOUS_RUN_TABLE} (batch_id varchar, as_of varchar)")
    funnel = previous_mart_path(settings, "stage_funnel")
    if funnel.exists():
        db.execute(
            con,
            f"insert into {PREVIOUS_RUN_TABLE} values ($b, $a)",
            {"b": _kv(con, funnel, "journeys.batch_id"), "a": _kv(con, funnel, "journeys.as_of")},
        )
    counts[PREVIOUS_RUN_TABLE] = db.fetch(con, f"select count(*) from {PREVIOUS_RUN_TABLE}")[0][0]
    return counts


SCRATCH = (GOALS_TABLE, PREVIOUS_RUN_TABLE, *(previous_table(m) for m in PREVIOUS_MARTS))


def build_alerts(
    con: duckdb.DuckDBPyConnection, context: Any, params: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Tables int_goals and the previous run's marts, then the `alerts` mart from them."""
    goals = goals_table(context.settings, context.stage_models)
    con.register("_arrow_in", goals)
    db.execute(con, f"create or replace temp table {GOALS_TABLE} as select * from _arrow_in")
    con.unregister("_arrow_in")
    counts = {GOALS_TABLE: goals.num_rows, **previous_marts(con, context.settings)}
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
    PREVIOUS_RUN_TABLE: "The previous published run (batch_id, as_of from its stage_funnel mart's metadata); no row"
    " on a first run.",
    **{
        previous_table(m): f"The previous published run's {m}, only the columns alerts reads (null where that mart"
        " lacked one); empty on a first run."
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
