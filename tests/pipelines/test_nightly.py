"""End to end: the real nightly flow (Prefect test harness) on a small generated sample, against ground truth."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from prefect.testing.utilities import prefect_test_harness

from journeys.config import DEFAULT_CHANNELS, load_settings
from journeys.generate import GenerateSpec, generate_sample
from pipelines.nightly import nightly

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "journeys.yaml")
SPEC = GenerateSpec(events=4_000, seed=7, shared_device_rate=0.0)


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def run(harness, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    gen = generate_sample(SPEC, root)
    result = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    settings = load_settings(CONFIG, data_root=root)
    return root, gen, result, settings


def marts_digest(settings) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(settings.marts_dir.glob("*/*.parquet"))}


def truth_funnel(truth: pl.DataFrame, as_of, n_stages: int = 5, timeout=timedelta(days=30)) -> list[dict]:
    """The stage funnel computed from the generator's ground truth alone (independent of the pipeline)."""
    truth = truth.sort("person_id", "occurred_at", "event_id")
    journeys: list[tuple[int, bool]] = []
    for _, ev in truth.group_by("person_id", maintain_order=True):
        rows = ev.select("occurred_at", "true_stage").rows()
        chunks, current, last = [], [], None
        for at, stage in rows:
            if last is not None and at - last > timeout:
                chunks.append(current)
                current = []
            current.append((at, stage))
            last = at
        chunks.append(current)
        for chunk in chunks:
            # windowFunnel with no window: greedy chain over events in (time, stage) order.
            level = 0
            for _, stage in sorted(chunk, key=lambda r: (r[0], r[1] or 0)):
                if stage == level + 1:
                    level = stage
            closed = level == n_stages or as_of - chunk[-1][0] > timeout
            journeys.append((level, closed))
    out = []
    for i in range(1, n_stages + 1):
        out.append(
            {
                "stage_index": i,
                "journeys_entered": sum(1 for lv, _ in journeys if lv >= i),
                "journeys_converted": sum(1 for lv, _ in journeys if lv > i) if i < n_stages else None,
                "journeys_dropped": sum(1 for lv, c in journeys if lv == i and c and lv < n_stages),
                "journeys_in_progress": sum(1 for lv, c in journeys if lv == i and not c),
            }
        )
    return out


def test_every_row_is_accounted_for(run):
    _, gen, result, _ = run
    ing = result["ingest"]
    assert ing["read"] == ing["loaded"] + ing["quarantined"] + ing["duplicates"]
    assert ing["loaded"] == gen.n_true_events
    assert ing["duplicates"] == gen.n_duplicates
    assert ing["quarantined"] == gen.n_malformed


def test_stage_conversion_equals_the_ground_truth_funnel(run):
    root, _, _, settings = run
    truth = pl.read_parquet(root / "truth" / "events.parquet").with_columns(
        pl.col("occurred_at").dt.replace_time_zone(None)
    )
    want = truth_funnel(truth, SPEC.as_of.replace(tzinfo=None))
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        got = con.sql(
            "select stage_index, journeys_entered, journeys_converted, journeys_dropped, journeys_in_progress"
            " from stage_conversion where stage_model = 'generic_lifecycle' and mode = 'ordered'"
            " and cohort = 'all' and breakdown = 'none' order by stage_index"
        ).pl()
    assert got.to_dicts() == want
    assert want[0]["journeys_entered"] > 100 and want[-1]["journeys_entered"] > 0


def test_identity_matches_ground_truth_persons(run):
    root, _, _, settings = run
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rows = con.sql(
            "select count(distinct t.person_id) as persons, count(distinct je.customer_key) as customers,"
            " count(*) filter (where je.customer_key is null) as unresolved,"
            " (select max(n) from (select count(distinct t2.person_id) as n from journey_events as j2"
            "   join read_parquet($p) as t2 on j2.event_id = t2.source || ':' || t2.event_id"
            "   group by j2.customer_key)) as persons_per_customer"
            " from read_parquet($p) as t left join journey_events as je on je.event_id = t.source || ':' || t.event_id",
            params={"p": str(root / "truth" / "events.parquet")},
        ).fetchall()
    persons, customers, unresolved, persons_per_customer = rows[0]
    assert unresolved == 0
    assert persons_per_customer == 1
    assert customers == persons


def test_levels_equal_clickhouse_windowfunnel(run, tmp_path):
    chdb = pytest.importorskip("chdb")
    _, _, _, settings = run
    events = tmp_path / "je.parquet"
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        con.sql(
            "select journey_id, epoch_us(occurred_at)::ubigint as ts, coalesce(stage_index, 0)::ubigint as stage"
            " from journey_events"
        ).write_parquet(str(events))
        ours = dict(con.sql("select journey_id, furthest_stage from journeys").fetchall())
    conds = ", ".join(f"stage = {i}" for i in range(1, 6))
    res = chdb.query(
        f"select journey_id, windowFunnel(1000000000000000)(ts, {conds}) as level"
        f" from file('{events}', Parquet) group by journey_id",
        "ArrowTable",
    )
    theirs = dict(zip(res.column("journey_id").to_pylist(), res.column("level").to_pylist(), strict=True))
    assert len(ours) > 100
    assert ours == theirs


def test_outputs_are_published(run):
    _, _, result, settings = run
    for table in (
        "identity_map",
        "customers",
        "journeys",
        "journey_events",
        "stage_conversion",
        "stage_dropout",
        "stage_channel_matrix",
    ):
        path = settings.marts_dir / table / f"{table}.parquet"
        assert path.exists(), table
        assert pl.read_parquet(path).height > 0, table
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        tables = {r[0] for r in con.sql("select table_name from information_schema.tables").fetchall()}
    assert {"events", "quarantine", "journeys", "stage_conversion", "identity_map"} <= tables
    assert not {"int_journey_events", "stage_events"} & tables
    assert Path(result["quality"]["report"]).exists()


def test_no_raw_pii_reaches_lake_marts_or_warehouse(run):
    root, _, _, settings = run
    persons = pl.read_parquet(root / "truth" / "persons.parquet")
    needles = set()
    for col in ("email", "phone"):
        if col in persons.columns:
            needles |= {v.strip().lower().encode() for v in persons[col].drop_nulls().to_list() if v and len(v) > 5}
    assert needles
    for path in [
        *settings.lake_dir.rglob("*.parquet"),
        *settings.marts_dir.rglob("*.parquet"),
        settings.warehouse_path,
    ]:
        data = path.read_bytes().lower()
        leaked = [n for n in needles if n in data]
        assert not leaked, f"{path}: {leaked[:3]}"


def test_rerun_changes_nothing(run):
    root, _, _, settings = run
    before = marts_digest(settings)
    result = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    assert result["ingest"]["loaded"] == 0
    assert marts_digest(settings) == before


def test_failing_quality_suite_keeps_previous_marts(run, tmp_path):
    root, _, _, settings = run
    before = marts_digest(settings)
    warehouse_before = settings.warehouse_path.stat().st_mtime_ns
    strict = tmp_path / "strict.yaml"
    # 'ads' only comes from the cdp source's channel column, so the config itself still loads; the lake
    # already holds ads events (nothing new is ingested, so the per-file channel check has nothing to read).
    known = [c for c in DEFAULT_CHANNELS if c != "ads"]
    text = Path(CONFIG).read_text() + f"\nchannels: [{', '.join(known)}]\n"
    strict.write_text(text)
    with pytest.raises(Exception, match="expect_column_values_to_be_in_set"):
        nightly(config_path=str(strict), as_of=SPEC.as_of, data_root=str(root))
    assert marts_digest(settings) == before
    assert settings.warehouse_path.stat().st_mtime_ns == warehouse_before
    assert not list(settings.warehouse_path.parent.glob(".build-*"))
