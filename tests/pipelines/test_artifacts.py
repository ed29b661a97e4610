"""The alerts artifact: the run's missed goals and each stage model's top red points, as markdown."""

from datetime import UTC, datetime

from journeys import db
from pipelines import artifacts

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)


def _warehouse():
    con = db.connect()
    db.execute(
        con,
        """create table alerts as select * from (values
            ('chat_flow', 'm', 2, 'consideration', 'flow_rate', 'chat', null, 'ecommerce', 'min', 0.6::double, 'missed',
             0.5::double, 0.5::double, true),
            ('aware', 'm', 1, 'awareness', 'conversion_rate', null, null, 'marketing', 'min', 0.9::double, 'missed',
             0.8::double, null, null)
        ) as t(goal_name, stage_model, stage_index, stage_name, metric, channel, touchpoint, owner, direction,
               threshold, status, metric_value, previous_value, missed_in_previous)""",
    )
    # Seven red points of model m, one of model n: the top 5 of each are shown.
    db.execute(
        con,
        """create table red_points as select stage_model, red_rank, 'consideration' as stage_name,
            'touchpoint' as unit_type, 'tp' || red_rank as unit, 'sales' as owner, 'dropout' as metric, 40 as n,
            0.5 as share, 0.2 as stage_share, 2.5 as lift, 12.0 as excess_over_norm
        from (select 'm' as stage_model, unnest(range(1, 8)) as red_rank union all select 'n', 1)""",
    )
    return con


def test_alerts_and_the_top_red_points_are_read_in_order():
    alerts, red = artifacts.alerts_and_red_points(_warehouse(), top=5)
    assert [a["goal_name"] for a in alerts] == ["aware", "chat_flow"]  # by stage model, stage, goal
    assert [(r["stage_model"], r["red_rank"]) for r in red] == [
        ("m", 1),
        ("m", 2),
        ("m", 3),
        ("m", 4),
        ("m", 5),
        ("n", 1),
    ]


def test_alerts_markdown_lists_the_missed_goals_and_the_red_points():
    alerts, red = artifacts.alerts_and_red_points(_warehouse())
    text = artifacts.alerts_markdown(batch_id="b1", as_of=AS_OF, alerts=alerts, red_points=red)
    lines = text.splitlines()
    # one of the two was missed in the previous run too; the other is new
    assert "## Goals missed: 2 (1 not missed in the previous run or without a previous value)" in lines
    assert (
        "| chat_flow | m | consideration | flow_rate | chat |  | ecommerce | min | 0.600 | missed | 0.500 | 0.500"
        " | True |" in lines
    )
    assert sum(line.startswith("| m | ") or line.startswith("| n | ") for line in lines) == 6


def test_alerts_markdown_says_when_every_goal_is_met():
    text = artifacts.alerts_markdown(batch_id="b1", as_of=AS_OF, alerts=[], red_points=[])
    assert "## Goals missed: 0" in text and "_every configured goal is met_" in text and "_none_" in text


def test_the_run_summary_lists_refused_files_and_says_when_a_source_was_refused_whole():
    ingest = {
        "read": 3,
        "loaded": 3,
        "quarantined": 0,
        "duplicates": 0,
        "files": 3,
        "files_skipped": 0,
        "files_refused": {"pos/a.parquet": "cannot be read as parquet: bad", "web/b.csv": "column 'hit_id' not found"},
        "sources_refused": ["pos"],
    }

    def summary(ingest: dict) -> str:
        quality = {"expectations": 1, "report": "q.md"}
        return artifacts.run_summary_markdown(
            batch_id="b1",
            as_of=AS_OF,
            ingest=ingest,
            identity={},
            quality=quality,
            model=None,
            mode=None,
            funnel=[],
            dropout=[],
            warehouse="w.duckdb",
        )

    text = summary(ingest)
    assert "**Every new landing file of source `pos` was refused**" in text
    assert "- `pos/a.parquet`: cannot be read as parquet: bad\n- `web/b.csv`: column 'hit_id' not found" in text
    assert "source `web`" not in text
    clean = summary({**ingest, "files_refused": {}, "sources_refused": []})
    assert "refused" not in clean.lower()
