"""The run's HTML report: one self-contained file (plotly.js inlined) that opens from disk with no server.

It reads only the published warehouse (set-based SQL returning small result sets: the funnel and survival
tables are already aggregates), the ingest manifest and the record the publish step leaves in `state/`.
Every run writes `reports/journeys-<batch>.html` and replaces `reports/journeys.html` with it.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from journeys import db
from journeys.config import Settings

LATEST = "journeys.html"
RUN_RECORD = "last_published.json"
TOP_DROPOUTS = 12
# The report stays readable and bounded at any data size: a Sankey of more than ~20 paths is a tangle, and red
# points past the first ten per stage model are in the `red_points` mart for whoever needs them.
TOP_PATHS = 20
TOP_RED_POINTS = 10


@dataclass(frozen=True)
class ReportResult:
    """Where the report went, how big it is and how long it took to write."""

    path: Path
    latest: Path
    size_bytes: int
    seconds: float
    charts: int


def reports_dir(settings: Settings) -> Path:
    """Where run reports (quality Markdown, the HTML report) are written."""
    return settings.root / "reports"


def run_record_path(settings: Settings) -> Path:
    """The record of the last published run, kept beside the other state."""
    return settings.state_dir / RUN_RECORD


def write_run_record(settings: Settings, record: Mapping[str, Any], path: Path | None = None) -> Path:
    """Keep what the report needs about the published run (batch, as-of, quality outcome), atomically.

    `path`: where to write it instead (the run's set, which moves it into place when it is published).
    """
    path = path or run_record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(record), indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_run_record(settings: Settings) -> dict[str, Any]:
    """The last published run's record, or an empty one for a data root published before records existed."""
    path = run_record_path(settings)
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    rel = con.sql(sql, params=dict(params)) if params else con.sql(sql)
    cols = [c[0] for c in rel.description]
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def _present(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in db.fetch(con, "select table_name from information_schema.tables")}


# --- formatting ---------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return ""
    if kind == "pct":
        return f"{float(value):.1%}"
    if kind == "days":
        return f"{float(value) / 86400:.1f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _align(value: Any, kind: str) -> str:
    return "num" if kind or (isinstance(value, int | float) and not isinstance(value, bool)) else "txt"


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]], cls: str = "") -> str:
    """An HTML table; columns are (key, header, kind) with kind '', 'pct' or 'days'."""
    head = "".join(f"<th>{_esc(h)}</th>" for _, h, _ in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td class='{_align(r.get(k), kind)}'>{_esc(_fmt(r.get(k), kind))}</td>" for k, _, kind in columns)
        + "</tr>"
        for r in rows
    )
    empty = f"<tr><td colspan='{len(columns)}' class='none'>no rows</td></tr>" if not rows else ""
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}{empty}</tbody></table>"


# plotly's default qualitative colours (its templates carry them), kept when no template is used.
_COLORS = ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880", "#FF97FF"]


class _Charts:
    """Plotly figures as divs that share the one plotly.js inlined in the page's head."""

    def __init__(self) -> None:
        self.count = 0

    def div(self, fig: Any, name: str) -> str:
        import plotly.io as pio

        self.count += 1
        # A few light settings instead of a named template: merging plotly's templates deep-copies them per
        # figure, which was most of the report's writing time.
        grid = {"gridcolor": "#e4e7eb", "zerolinecolor": "#cbd2d9", "automargin": True}
        fig.update_layout(
            template="none",
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
            font={"size": 12, "color": "#1f2933"},
            colorway=_COLORS,
            xaxis=grid,
            yaxis=grid,
        )
        # Fixed ids keep the file identical for identical data (apart from the time it was written).
        return str(
            pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=False,
                div_id=f"chart-{self.count}-{name}",
                config={"displayModeBar": False, "responsive": True},
                default_width="100%",
            )
        )


# --- sections -----------------------------------------------------------------------------------------


def _primary_first(con: duckdb.DuckDBPyConnection, groups: dict[tuple[Any, ...], Any]) -> list[tuple[Any, ...]]:
    """Group keys with the primary stage model and mode (the ones `journeys` carries) first, as in the summary."""
    primary = tuple(db.fetch(con, "select any_value(j.stage_model), any_value(j.mode) from journeys as j")[0])
    return sorted(groups, key=lambda k: (k != primary, k))


def _funnel_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The headline funnel: every cohort, no breakdown, per stage model, mode and stage."""
    return _rows(
        con,
        "select sc.stage_model, sc.mode, sc.stage_index, sc.stage_name, sc.journeys_entered, sc.journeys_converted,"
        " sc.conversion_rate, sc.conversion_from_start, sc.journeys_dropped, sc.journeys_in_progress,"
        " sc.journeys_overdue, sc.median_time_to_next_s, sc.p90_time_to_next_s, sc.share_within_budget"
        " from stage_funnel as sc order by sc.stage_model, sc.mode, sc.stage_index",
    )


def _group(rows: Sequence[Mapping[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    out: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _funnel_section(con: duckdb.DuckDBPyConnection, charts: _Charts) -> str:
    import plotly.graph_objects as go

    parts = [
        "<h2 id='funnel'>Stage funnel</h2>",
        "<p class='note'>Every cohort, no breakdown. Entered: the journeys that reached the stage; conversion:"
        " of those, the share that reached the next stage; time to next: among the journeys that did.</p>",
    ]
    survival = _group(
        _rows(
            con,
            "select ss.stage_model, ss.mode, ss.stage_index, ss.stage_name, ss.t_days, ss.p_reached_next,"
            " ss.journeys_at_risk from stage_survival as ss order by ss.stage_model, ss.mode, ss.stage_index,"
            " ss.t_days",
        ),
        "stage_model",
        "mode",
    )
    columns = [
        ("stage_index", "#", ""),
        ("stage_name", "stage", ""),
        ("journeys_entered", "entered", ""),
        ("journeys_converted", "converted", ""),
        ("conversion_rate", "conversion", "pct"),
        ("conversion_from_start", "from start", "pct"),
        ("journeys_dropped", "dropped", ""),
        ("journeys_in_progress", "in progress", ""),
        ("journeys_overdue", "overdue", ""),
        ("median_time_to_next_s", "median days to next", "days"),
        ("p90_time_to_next_s", "p90 days to next", "days"),
        ("share_within_budget", "within budget", "pct"),
    ]
    funnels = _group(_funnel_rows(con), "stage_model", "mode")
    for model, mode in _primary_first(con, funnels):
        rows = funnels[(model, mode)]
        slug = f"{model}-{mode}"
        fig = go.Figure(
            go.Funnel(
                y=[f"{r['stage_index']}. {r['stage_name']}" for r in rows],
                x=[int(r["journeys_entered"]) for r in rows],
                textinfo="value+percent initial",
                marker={"color": "#3b6ea8"},
            )
        )
        fig.update_layout(
            title="Journeys entering each stage",
            height=340,
            xaxis={"showgrid": False, "showticklabels": False, "zeroline": False},
            yaxis={"showgrid": False},
        )
        km = go.Figure()
        for (index, name), points in _group(survival.get((model, mode), []), "stage_index", "stage_name").items():
            km.add_trace(
                go.Scatter(
                    x=[0, *(p["t_days"] for p in points)],
                    y=[0.0, *(p["p_reached_next"] for p in points)],
                    mode="lines",
                    line={"shape": "hv"},
                    name=f"{index}. {name} → {index + 1}",
                    customdata=[None, *(int(p["journeys_at_risk"]) for p in points)],
                    hovertemplate="day %{x}: %{y:.1%} (at risk %{customdata})<extra></extra>",
                )
            )
        km.update_layout(
            title="Kaplan-Meier: reached the next stage within t days",
            height=340,
            xaxis_title="days after reaching the stage",
            yaxis={"title": "share reached next", "tickformat": ".0%", "range": [0, 1]},
            legend={"orientation": "h", "y": -0.25},
        )
        parts += [
            f"<h3 id='funnel-{_esc(slug)}'>{_esc(model)} <span class='mode'>{_esc(mode)}</span></h3>",
            "<div class='grid'>",
            f"<div class='chart'>{charts.div(fig, slug + '-funnel')}</div>",
            f"<div class='chart'>{charts.div(km, slug + '-survival')}</div>",
            "</div>",
            _table(rows, columns),
        ]
    return "\n".join(parts)


def _dropout_section(con: duckdb.DuckDBPyConnection, charts: _Charts) -> str:
    import plotly.graph_objects as go

    parts = [
        "<h2 id='dropout'>Where customers are lost</h2>",
        "<p class='note'>Closed journeys that stopped at a stage without converting, by their last touchpoint"
        " and channel, with the owner who answers for that point.</p>",
    ]
    by_owner = _group(
        _rows(
            con,
            "select sd.stage_model, sd.mode, coalesce(sd.owner, '(no owner)') as owner, sd.stage_index,"
            " sd.stage_name, sum(sd.journeys_dropped)::bigint as journeys_dropped from stage_dropout as sd"
            " group by all order by sd.stage_model, sd.mode, sd.stage_index, owner",
        ),
        "stage_model",
        "mode",
    )
    top = _group(
        _rows(
            con,
            "select * from (select sd.stage_model, sd.mode, sd.stage_index, sd.stage_name, sd.last_touchpoint,"
            " sd.last_channel, sd.journeys_dropped, sd.share_of_stage_dropouts, sd.owner,"
            " sd.mean_last_known_sentiment, row_number() over (partition by sd.stage_model, sd.mode"
            " order by sd.journeys_dropped desc, sd.stage_index, sd.last_touchpoint, sd.last_channel) as rank"
            " from stage_dropout as sd) where rank <= $top order by stage_model, mode, rank",
            {"top": TOP_DROPOUTS},
        ),
        "stage_model",
        "mode",
    )
    columns = [
        ("stage_name", "stage", ""),
        ("last_touchpoint", "last touchpoint", ""),
        ("last_channel", "channel", ""),
        ("journeys_dropped", "journeys dropped", ""),
        ("share_of_stage_dropouts", "share of stage", "pct"),
        ("owner", "owner", ""),
        ("mean_last_known_sentiment", "last sentiment", ""),
    ]
    for model, mode in _primary_first(con, by_owner):
        rows = by_owner[(model, mode)]
        slug = f"{model}-{mode}"
        fig = go.Figure()
        for (index, name), cells in _group(rows, "stage_index", "stage_name").items():
            fig.add_trace(
                go.Bar(
                    y=[c["owner"] for c in cells],
                    x=[int(c["journeys_dropped"]) for c in cells],
                    name=f"{index}. {name}",
                    orientation="h",
                )
            )
        fig.update_layout(
            barmode="stack",
            title="Dropped journeys by owner and stage",
            height=max(260, 60 + 28 * len({r["owner"] for r in rows})),
            yaxis={"automargin": True, "categoryorder": "total ascending"},
            legend={"orientation": "h", "y": -0.2},
        )
        parts += [
            f"<h3>{_esc(model)} <span class='mode'>{_esc(mode)}</span></h3>",
            f"<div class='chart'>{charts.div(fig, slug + '-owners')}</div>",
            f"<p class='note'>Top {TOP_DROPOUTS} dropout points</p>",
            _table(top.get((model, mode), []), columns),
        ]
    if not by_owner:
        parts.append("<p class='none'>No closed journey dropped out.</p>")
    return "\n".join(parts)


def _matrix_section(con: duckdb.DuckDBPyConnection, charts: _Charts) -> str:
    import plotly.graph_objects as go

    parts = [
        "<h2 id='channels'>Stage x channel</h2>",
        "<p class='note'>Share of each stage's events per channel (colour) and their count; * marks a channel"
        " the stage model does not design for that stage.</p>",
    ]
    rows = _rows(
        con,
        "select m.stage_model, m.stage_index, m.stage_name, m.channel, m.events_in_cell, m.share_of_stage_events,"
        " m.journeys_in_cell, m.is_designed_channel,"
        " sum(m.events_in_cell) over (partition by m.stage_model, m.channel) as channel_events"
        " from stage_channel_matrix as m order by m.stage_model, m.stage_index, m.channel",
    )
    for (model,), cells in _group(rows, "stage_model").items():
        channels = sorted(
            {c["channel"] for c in cells},
            key=lambda ch: (-max(int(c["channel_events"]) for c in cells if c["channel"] == ch), ch),
        )
        stages = sorted({(c["stage_index"], c["stage_name"]) for c in cells})
        at = {(c["stage_index"], c["channel"]): c for c in cells}
        z, text = [], []
        for index, _ in stages:
            z.append([at[(index, ch)]["share_of_stage_events"] if (index, ch) in at else None for ch in channels])
            text.append(
                [
                    f"{int(at[(index, ch)]['events_in_cell']):,}{'' if at[(index, ch)]['is_designed_channel'] else '*'}"
                    if (index, ch) in at
                    else ""
                    for ch in channels
                ]
            )
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=channels,
                y=[f"{i}. {n}" for i, n in stages],
                text=text,
                texttemplate="%{text}",
                colorscale="Blues",
                zmin=0,
                zmax=1,
                colorbar={"title": "share", "tickformat": ".0%"},
                hovertemplate="%{y} on %{x}: %{z:.1%} of the stage's events (%{text})<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"{model}: where each stage happens",
            height=120 + 40 * len(stages),
            xaxis={"showgrid": False},
            yaxis={"autorange": "reversed", "automargin": True, "showgrid": False},
        )
        parts.append(f"<div class='chart'>{charts.div(fig, model + '-matrix')}</div>")
    return "\n".join(parts)


def _models(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The run's stage models, the primary one (the one `journeys` carries) first."""
    found = [r[0] for r in db.fetch(con, "select distinct sd.stage_model from stage_definitions as sd")]
    primary = db.fetch(con, "select any_value(j.stage_model) from journeys as j")[0][0]
    return sorted(found, key=lambda m: (m != primary, m))


# How each goal metric reads: shares as percentages (their change in points), the rest as plain numbers.
_SHARE_METRICS = {"conversion_rate", "flow_rate", "dropout_share"}


def _metric_text(metric: str, value: Any, *, signed: bool = False) -> str:
    if value is None:
        return ""
    v = float(value)
    if metric in _SHARE_METRICS:
        return f"{v * 100:+.1f} pp" if signed else f"{v:.1%}"
    if metric == "monetised_value":
        return f"{v:+,.0f}" if signed else f"{v:,.0f}"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _alerts_section(con: duckdb.DuckDBPyConnection, present: set[str], goals: int) -> str:
    parts = [
        "<h2 id='alerts'>Alerts</h2>",
        "<p class='note'>Goals (<code>goals</code> in the config) this run misses, or whose metric has no value;"
        " previous: the last published run with an earlier as_of (blank on a first run).</p>",
    ]
    if "alerts" not in present:
        return "\n".join([*parts, "<p class='none'>This warehouse has no <code>alerts</code> table.</p>"])
    rows = _rows(
        con,
        "select a.goal_name, a.stage_model, a.stage_name, coalesce(a.channel, a.touchpoint, a.mode) as unit,"
        " a.metric, a.direction, a.threshold, a.status, a.metric_value, a.previous_value, a.change_since_previous,"
        " a.missed_in_previous, coalesce(a.owner, '(no owner)') as owner from alerts as a"
        " order by a.status = 'no_value', a.stage_model, a.stage_index, a.goal_name",
    )
    if not rows:
        if goals:
            return "\n".join([*parts, f"<p class='ok'>No goal missed: all {goals} goals met.</p>"])
        return "\n".join([*parts, "<p class='none'>No goals configured.</p>"])
    missed = sum(r["status"] == "missed" for r in rows)
    parts.append(
        f"<p class='bad'>{missed} of {goals} goals missed"
        + (f", {len(rows) - missed} without a value this run" if len(rows) > missed else "")
        + ".</p>"
    )
    shown = [
        {
            **r,
            "target": f"{'≥' if r['direction'] == 'min' else '≤'} {_metric_text(r['metric'], r['threshold'])}",
            "now": _metric_text(r["metric"], r["metric_value"]),
            "previous": _metric_text(r["metric"], r["previous_value"]),
            "change": _metric_text(r["metric"], r["change_since_previous"], signed=True),
            "since": {True: "ongoing", False: "new"}.get(r["missed_in_previous"], ""),
        }
        for r in rows
    ]
    columns = [
        ("goal_name", "goal", ""),
        ("stage_model", "stage model", ""),
        ("stage_name", "stage", ""),
        ("unit", "channel / touchpoint / mode", ""),
        ("metric", "metric", ""),
        ("target", "target", ""),
        ("status", "status", ""),
        ("now", "now", "num"),
        ("previous", "previous run", "num"),
        ("change", "change", "num"),
        ("since", "since", ""),
        ("owner", "owner", ""),
    ]
    return "\n".join([*parts, _table(shown, columns, "alerts")])


def _path_links(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The Sankey's links: each top stage path split into steps, step k to k + 1, the last step to its outcome."""
    return _rows(
        con,
        "with paths as (select jp.stage_model, jp.journeys, jp.journeys_converted,"
        " string_split(jp.step_path, ' > ') as steps from journey_paths as jp"
        " where jp.path_type = 'stage' and jp.repeats_collapsed and jp.path_rank <= $top),"
        " steps as (select p.stage_model, p.journeys, p.journeys_converted, p.steps,"
        " unnest(p.steps) as stage_name, generate_subscripts(p.steps, 1) as step from paths as p),"
        " moves as (select s.stage_model, s.step, s.stage_name, s.steps[s.step + 1] as to_name,"
        " null as outcome, s.journeys from steps as s where s.step < len(s.steps)"
        " union all select s.stage_model, s.step, s.stage_name, null, 'converted', s.journeys_converted"
        " from steps as s where s.step = len(s.steps)"
        " union all select s.stage_model, s.step, s.stage_name, null, 'not converted',"
        " s.journeys - s.journeys_converted from steps as s where s.step = len(s.steps))"
        " select m.stage_model, m.step, m.stage_name, m.to_name, m.outcome, sum(m.journeys)::bigint as journeys"
        " from moves as m where m.journeys > 0 group by all"
        " order by m.stage_model, m.step, m.stage_name, m.to_name, m.outcome",
        {"top": TOP_PATHS},
    )


def _paths_section(con: duckdb.DuckDBPyConnection, present: set[str], charts: _Charts) -> str:
    import plotly.graph_objects as go

    parts = [
        "<h2 id='paths'>Top paths</h2>",
        f"<p class='note'>The {TOP_PATHS} most frequent stage paths per stage model (repeats of a stage in a row"
        " count once; conversion in the model's first funnel mode). A node is a stage at a step of the path, so a"
        " journey that goes back shows as a later step, not a loop.</p>",
    ]
    if "journey_paths" not in present:
        return "\n".join([*parts, "<p class='none'>This warehouse has no <code>journey_paths</code> table.</p>"])
    paths = _group(
        _rows(
            con,
            "select jp.stage_model, jp.path_rank, jp.step_path, jp.n_steps, jp.journeys, jp.share,"
            " jp.journeys_converted, jp.conversion_rate, jp.median_duration_s from journey_paths as jp"
            " where jp.path_type = 'stage' and jp.repeats_collapsed and jp.path_rank <= $top"
            " order by jp.stage_model, jp.path_rank",
            {"top": TOP_PATHS},
        ),
        "stage_model",
    )
    links = _group(_path_links(con), "stage_model")
    order = {
        (r["stage_model"], r["stage_name"]): int(r["stage_index"])
        for r in _rows(con, "select sd.stage_model, sd.stage_name, sd.stage_index from stage_definitions as sd")
    }
    outcomes = {"converted": "#1b7a3d", "not converted": "#9aa5b1"}
    columns = [
        ("path_rank", "#", ""),
        ("step_path", "stage path", ""),
        ("journeys", "journeys", ""),
        ("share", "share of journeys", "pct"),
        ("journeys_converted", "converted", ""),
        ("conversion_rate", "conversion", "pct"),
        ("median_duration_s", "median days", "days"),
    ]
    for model in _models(con):
        rows = paths.get((model,), [])
        if not rows:
            parts += [f"<h3>{_esc(model)}</h3>", "<p class='none'>No journey has a step of this model.</p>"]
            continue
        moves = links[(model,)]
        # A node is (step, stage) so the flow runs left to right; the outcomes close it.
        steps = sorted({(m["step"], m["stage_name"]) for m in moves})
        node = {key: i for i, key in enumerate([*steps, *outcomes])}
        fig = go.Figure(
            go.Sankey(
                arrangement="snap",
                node={
                    "label": [f"step {step}: {name}" for step, name in steps] + list(outcomes),
                    "color": [_COLORS[(order.get((model, name), 1) - 1) % len(_COLORS)] for _, name in steps]
                    + list(outcomes.values()),
                    "pad": 14,
                    "thickness": 14,
                    "hovertemplate": "%{label}: %{value:,} journeys<extra></extra>",
                },
                link={
                    "source": [node[(m["step"], m["stage_name"])] for m in moves],
                    "target": [node[m["outcome"] or (m["step"] + 1, m["to_name"])] for m in moves],
                    "value": [int(m["journeys"]) for m in moves],
                    "color": [
                        "rgba(27,122,61,0.45)" if m["outcome"] == "converted" else "rgba(123,135,148,0.35)"
                        for m in moves
                    ],
                    "hovertemplate": "%{source.label} → %{target.label}: %{value:,} journeys<extra></extra>",
                },
            )
        )
        covered = sum(float(r["share"]) for r in rows)
        fig.update_layout(
            title=f"{model}: top {len(rows)} stage paths ({covered:.0%} of journeys)",
            height=420,
            font={"size": 11},
        )
        parts += [
            f"<h3 id='paths-{_esc(model)}'>{_esc(model)}</h3>",
            f"<div class='chart'>{charts.div(fig, model + '-paths')}</div>",
            _table(rows, columns, "compact"),
        ]
    return "\n".join(parts)


def _red_points_section(con: duckdb.DuckDBPyConnection, present: set[str], charts: _Charts) -> str:
    import plotly.graph_objects as go

    parts = [
        "<h2 id='red-points'>Red points</h2>",
        "<p class='note'>Touchpoints and stage x channel cells whose dropout (or negative-sentiment) share is"
        " significantly above their stage's: the share with its Wilson interval against the stage's norm, ranked"
        f" by the journeys lost (or negative readings) above the norm; the top {TOP_RED_POINTS} per stage"
        " model.</p>",
    ]
    if "red_points" not in present:
        return "\n".join([*parts, "<p class='none'>This warehouse has no <code>red_points</code> table.</p>"])
    red = _group(
        _rows(
            con,
            "select rp.stage_model, rp.red_rank, rp.stage_name, rp.unit_type, rp.unit, rp.channel,"
            " coalesce(rp.owner, '(no owner)') as owner, rp.metric, rp.n, rp.k, rp.share, rp.share_low,"
            " rp.share_high, rp.stage_share, rp.lift, rp.excess_over_norm from red_points as rp"
            " where rp.red_rank <= $top order by rp.stage_model, rp.red_rank",
            {"top": TOP_RED_POINTS},
        ),
        "stage_model",
    )
    columns = [
        ("red_rank", "#", ""),
        ("stage_name", "stage", ""),
        ("unit_type", "unit", ""),
        ("unit", "touchpoint / channel", ""),
        ("channel", "channel", ""),
        ("owner", "owner", ""),
        ("metric", "metric", ""),
        ("n", "n", ""),
        ("k", "k", ""),
        ("share", "share", "pct"),
        ("stage_share", "stage norm", "pct"),
        ("lift", "lift", ""),
        ("excess_over_norm", "lost above norm", ""),
    ]
    for model in _models(con):
        rows = red.get((model,), [])
        parts.append(f"<h3 id='red-{_esc(model)}'>{_esc(model)}</h3>")
        if not rows:
            parts.append(
                "<p class='none'>No red point: no touchpoint or cell is significantly worse than its stage.</p>"
            )
            continue
        names = [f"{r['red_rank']}. {r['stage_name']} · {r['unit']} ({r['metric'].replace('_', ' ')})" for r in rows]
        fig = go.Figure(
            [
                go.Scatter(
                    x=[r["share"] for r in rows],
                    y=names,
                    mode="markers",
                    name="share (Wilson interval)",
                    marker={"color": "#b42318", "size": 10},
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": [r["share_high"] - r["share"] for r in rows],
                        "arrayminus": [r["share"] - r["share_low"] for r in rows],
                        "color": "#b42318",
                    },
                    customdata=[[r["owner"], float(r["excess_over_norm"])] for r in rows],
                    hovertemplate="%{y}: %{x:.1%} (owner %{customdata[0]}, %{customdata[1]:.1f} above norm)"
                    "<extra></extra>",
                ),
                go.Scatter(
                    x=[r["stage_share"] for r in rows],
                    y=names,
                    mode="markers",
                    name="stage norm",
                    marker={"color": "#52606d", "symbol": "line-ns-open", "size": 16, "line": {"width": 3}},
                    hovertemplate="%{y}: stage norm %{x:.1%}<extra></extra>",
                ),
            ]
        )
        fig.update_layout(
            title=f"{model}: share vs the stage's norm",
            height=110 + 34 * len(rows),
            xaxis={"tickformat": ".0%", "rangemode": "tozero"},
            yaxis={"autorange": "reversed", "automargin": True},
            legend={"orientation": "h", "y": -0.15},
        )
        parts += [f"<div class='chart'>{charts.div(fig, model + '-red')}</div>", _table(rows, columns, "compact")]
    return "\n".join(parts)


def _accounting_section(con: duckdb.DuckDBPyConnection, settings: Settings, batch_id: str | None) -> str:
    from journeys import ingest

    parts = ["<h2 id='accounting'>Row accounting</h2>"]
    manifest = ingest.manifest_path(settings)
    columns = [
        ("source", "source", ""),
        ("files", "files", ""),
        ("read", "read", ""),
        ("loaded", "loaded", ""),
        ("quarantined", "quarantined", ""),
        ("duplicates", "duplicates", ""),
        ("held", "held back (later than as_of)", ""),
        ("balanced", "read = sum", ""),
        ("blank", "blank rows (not read)", ""),
    ]
    if manifest.exists():
        present_columns = {
            r[0]
            for r in db.fetch(
                con, "select column_name from (describe select * from read_parquet($m))", {"m": str(manifest)}
            )
        }
        # Manifests written before blank rows (or held rows) were counted have no such column.
        blank = "sum(blank)::bigint" if "blank" in present_columns else "null::bigint"
        held = "coalesce(sum(held), 0)::bigint" if "held" in present_columns else "0::bigint"
        sql = (
            "select coalesce(source, 'all sources') as source, count(*) as files, sum(read)::bigint as read,"
            " sum(loaded)::bigint as loaded, sum(quarantined)::bigint as quarantined,"
            f" sum(duplicates)::bigint as duplicates, {held} as held, {blank} as blank,"
            f" case when sum(read) = sum(loaded) + sum(quarantined) + sum(duplicates) + {held} then 'yes' else 'NO' end"
            " as balanced"
            " from read_parquet($manifest) where $batch::varchar is null or batch_id = $batch"
            # a rollup over no rows still yields its grand-total row
            " group by rollup (source) having count(*) > 0 order by source is null, source"
        )
        this_run = _rows(con, sql, {"manifest": str(manifest), "batch": batch_id}) if batch_id else []
        every = _rows(con, sql, {"manifest": str(manifest), "batch": None})
        parts += [
            "<h3>This run's landing files</h3>",
            _table(this_run, columns, "compact")
            if this_run
            else "<p class='none'>No new or changed landing file in this run.</p>",
            "<h3>Every ingested landing file version (the whole lake)</h3>",
            _table(every, columns, "compact"),
        ]
        still_held = ingest.count_held(settings)
        if still_held:
            parts.append(
                f"<p>{still_held} rows later than their run's as_of + max_future are held back in state/held/;"
                " the first run whose as_of passes them loads them.</p>"
            )
    else:
        parts.append("<p class='none'>No ingest manifest on this data root.</p>")
    present = _present(con)
    if "quarantine" in present:
        reasons = _rows(
            con,
            "select q.source, q.field, count(*) as quarantined_rows from quarantine as q group by all"
            " order by quarantined_rows desc, q.source, q.field limit 15",
        )
        parts += [
            "<h3>Quarantined rows by source and field</h3>",
            _table(
                reasons, [("source", "source", ""), ("field", "field", ""), ("quarantined_rows", "rows", "")], "compact"
            ),
        ]
    tables = sorted(present)
    if tables:
        counts = " union all ".join(
            f"select $t{i} as table_name, count(*) as n_rows from {db.quote_ident(t)}" for i, t in enumerate(tables)
        )
        names = {f"t{i}": t for i, t in enumerate(tables)}
        parts += [
            "<h3>Rows per warehouse table</h3>",
            _table(
                _rows(con, f"select * from ({counts}) order by table_name", names),
                [("table_name", "table", ""), ("n_rows", "rows", "")],
                "compact",
            ),
        ]
    return "\n".join(parts)


def _quality_section(record: Mapping[str, Any], out_dir: Path) -> str:
    parts = ["<h2 id='quality'>Data quality</h2>"]
    # Great Expectations' Data Docs are built by the quality step, which records where (relative to reports/).
    docs = str(record.get("data_docs") or "")
    link = (
        f"<p>Great Expectations Data Docs: <a href='{_esc(urllib.parse.quote(docs))}'>{_esc(docs)}</a></p>"
        if docs
        else ""
    )
    q = record.get("quality") or {}
    if not q:
        return parts[0] + "<p class='none'>No quality outcome recorded for this run.</p>" + link
    ok = q.get("success", True)
    parts.append(
        f"<p class='{'ok' if ok else 'bad'}'>{'PASSED' if ok else 'FAILED'}: {_fmt(q.get('expectations_run'))}"
        f" expectations over {len(q.get('suites') or {})} suites; {_fmt(q.get('files_checked'))} landing files"
        f" checked for their quarantined share (highest {_fmt(q.get('max_file_share'), 'pct')},"
        f" {_fmt(q.get('files_over_limit'))} over the limit).</p>"
    )
    suites = [{"suite": s, "batches": n} for s, n in sorted((q.get("suites") or {}).items())]
    parts.append(_table(suites, [("suite", "suite", ""), ("batches", "batches validated", "")], "compact"))
    identity = q.get("identity") or []
    if identity:
        # Largest customer, held-back identifiers, the identifier-type trap: fused or split people show here.
        parts += ["<h3>Identity</h3>", "<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in identity) + "</ul>"]
    for w in q.get("warnings") or []:
        parts.append(f"<p class='warn'>warning: {_esc(w)}</p>")
    md = Path(str(q.get("report") or ""))
    if md.name and (out_dir / md.name).exists():
        parts.append(f"<p>Full quality report: <a href='{_esc(md.name)}'>{_esc(md.name)}</a></p>")
    if link:
        parts.append(link)
    return "\n".join(parts)


_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1280px;
padding:16px 24px;color:#1f2933;background:#fff}
h1{font-size:24px;margin:4px 0} h2{font-size:20px;border-bottom:2px solid #3b6ea8;padding-bottom:4px;margin-top:32px}
h3{font-size:16px;margin:20px 0 6px} .mode{font-weight:normal;color:#52606d;font-size:14px}
nav a{margin-right:14px} .meta{color:#52606d;font-size:13px} .note{color:#52606d;font-size:13px;margin:4px 0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px} .chart{min-height:200px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px} th,td{padding:3px 8px;border-bottom:1px solid #e4e7eb}
th{text-align:left;background:#f5f7fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.none{color:#7b8794;font-style:italic} table.alerts td{white-space:nowrap}
.ok{color:#1b7a3d;font-weight:600} .bad{color:#b42318;font-weight:600} .warn{color:#9a6700}
#js-errors{display:none;background:#fde8e8;color:#b42318;padding:8px}
"""

# Any script error or console error (a chart that failed to draw) is shown at the top and counted for the
# browser test.
_ERROR_HOOK = """<script>window.__reportErrors=[];function __reportError(m){window.__reportErrors.push(String(m));
var b=document.getElementById('js-errors');
if(b){b.style.display='block';b.textContent='Some charts failed to draw: '+window.__reportErrors.join('; ');}
document.documentElement.setAttribute('data-js-errors',String(window.__reportErrors.length));}
window.addEventListener('error',function(e){__reportError(e.message);});
var __consoleError=console.error;console.error=function(){__reportError(Array.prototype.join.call(arguments,' '));
return __consoleError.apply(console,arguments);};</script>"""


def render_report(settings: Settings, record: Mapping[str, Any], warehouse: Path | None = None) -> tuple[str, int]:
    """The report's HTML for the published warehouse and the run record; returns (html, number of charts)."""
    from plotly.offline import get_plotlyjs

    warehouse = warehouse or settings.warehouse_path
    charts = _Charts()
    batch_id = record.get("batch_id")
    with db.connect(warehouse, read_only=True) as con:
        present = _present(con)
        needed = {"stage_funnel", "stage_survival", "stage_dropout", "stage_channel_matrix"}
        if needed - present:
            raise FileNotFoundError(f"{warehouse} lacks {sorted(needed - present)}: not a published warehouse")
        # The number of goals tells "none missed" from "none configured"; the run's own count, where recorded.
        goals = int(record.get("goals", len(settings.goals)))
        body = [
            _alerts_section(con, present, goals),
            _funnel_section(con, charts),
            _red_points_section(con, present, charts),
            _dropout_section(con, charts),
            _paths_section(con, present, charts),
            _matrix_section(con, charts),
            _accounting_section(con, settings, batch_id),
            _quality_section(record, reports_dir(settings)),
        ]
    title = f"journeys report {batch_id or ''}".strip()
    meta = (
        f"run <b>{_esc(batch_id or 'unknown')}</b> as of {_esc(record.get('as_of') or 'unknown')}"
        f" · written {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC · warehouse {_esc(warehouse)}"
    )
    page = f"""<!DOCTYPE html>
<html lang="en" data-js-errors="0"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style>
{_ERROR_HOOK}
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<div id="js-errors"></div>
<h1>Customer journeys</h1>
<p class="meta">{meta}</p>
<nav><a href="#alerts">Alerts</a><a href="#funnel">Funnel</a><a href="#red-points">Red points</a>
<a href="#dropout">Dropout</a><a href="#paths">Paths</a><a href="#channels">Stage x channel</a>
<a href="#accounting">Row accounting</a><a href="#quality">Quality</a></nav>
{chr(10).join(body)}
</body></html>
"""
    return page, charts.count


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def report_path(settings: Settings, batch_id: str | None) -> Path:
    """Where the report of one run is written."""
    return reports_dir(settings) / f"journeys-{batch_id or 'unknown'}.html"


def write_report(
    settings: Settings, record: Mapping[str, Any] | None = None, warehouse: Path | None = None
) -> ReportResult:
    """Write the run's report and replace the stable `reports/journeys.html` with it (both atomic)."""
    started = time.perf_counter()
    record = read_run_record(settings) if record is None else record
    page, n_charts = render_report(settings, record, warehouse)
    data = page.encode("utf-8")
    path = report_path(settings, record.get("batch_id"))
    latest = reports_dir(settings) / LATEST
    _write_atomic(path, data)
    _write_atomic(latest, data)
    return ReportResult(path, latest, len(data), time.perf_counter() - started, n_charts)
