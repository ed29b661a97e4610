"""End to end: the real nightly flow (Prefect test harness) on a small generated sample, against ground truth."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from journeys import build, models, publish, stages
from journeys import report as html_report
from journeys.config import load_settings
from journeys.generate import GenerateSpec, generate_sample
from pipelines import artifacts, cli
from pipelines import nightly as nightly_module
from pipelines.nightly import nightly
from tests.pipelines.conftest import NIGHTLY_SPEC, marts_digest, runs

# End-to-end runs: `make test-fast` leaves them to `make test`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "journeys.yaml")
SPEC = NIGHTLY_SPEC


@pytest.fixture(scope="module")
def run(first_nightly_run):
    """The session's first nightly run (tests/pipelines/conftest.py); the tests below add runs to its root."""
    r = first_nightly_run
    return r.root, r.generated, r.result, r.settings


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
    assert ing["read"] == ing["loaded"] + ing["quarantined"] + ing["duplicates"] + ing["held"]
    assert (ing["held"], ing["released"], ing["still_held"]) == (0, 0, 0)  # the sample ends at its as_of
    assert ing["replaced"] == 0  # a first run: no landing file has an earlier version
    # The first run's quality step checks exactly the rows it loaded, on the dates ingest touched.
    assert result["quality"]["events_checked"] == ing["loaded"]
    assert result["quality"]["event_dates"] == ing["affected_dates"]
    assert ing["loaded"] == gen.n_true_events
    assert ing["duplicates"] == gen.n_duplicates
    assert ing["quarantined"] == gen.n_malformed


def test_the_summary_names_a_refused_landing_file(run, capsys):
    _, _, result, settings = run
    assert result["ingest"]["files_refused"] == {}  # the sample has no file to refuse
    # A refused file leaves the run green (it blocks only itself), so the console must say so.
    why = "cannot be read as parquet: Snappy decompression failure"
    refused = {**result, "ingest": {**result["ingest"], "files_refused": {"pos/x.parquet": why}}}
    cli.print_summary(refused, str(settings.warehouse_path))
    assert f"refused landing file pos/x.parquet: {why}; nothing of it loaded" in capsys.readouterr().out
    assert cli.run_status(refused) == cli.run_status(result) == 0
    # Every new file of a source refused: published all the same, but the exit status raises the alarm.
    whole = {**refused, "ingest": {**refused["ingest"], "sources_refused": ["pos"]}}
    cli.print_summary(whole, str(settings.warehouse_path))
    assert "source 'pos': EVERY new landing file was refused" in capsys.readouterr().out
    assert cli.run_status(whole) == cli.SOURCE_REFUSED == 3


def test_the_summary_says_how_many_rows_of_earlier_file_versions_were_replaced(run, capsys):
    _, _, result, settings = run
    replaced = {**result, "ingest": {**result["ingest"], "replaced": 3}}
    cli.print_summary(replaced, str(settings.warehouse_path))
    assert "; 3 rows of earlier versions of changed files replaced" in capsys.readouterr().out


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
    root, gen, _, settings = run
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        # One row per (person, customer) pair that some event shows, from both sides: a true event the pipeline
        # did not resolve has no customer, an event of journey_events that is no true event has no person.
        pairs = con.sql(
            "select t.person_id, je.customer_key, count(*) as n_events"
            " from read_parquet($p) as t full join journey_events as je on je.event_id = t.source || ':' || t.event_id"
            " group by t.person_id, je.customer_key",
            params={"p": str(root / "truth" / "events.parquet")},
        ).pl()
        held = con.sql("select id_value, reason, n_customers from shared_identifiers where id_type = 'device_id'").pl()
    assert pairs["person_id"].null_count() == 0 and pairs["customer_key"].null_count() == 0
    # Exactly one customer per person and one person per customer: persons and customers are a bijection over
    # events, so no household was fused and no person was split, whatever the counts add up to.
    wrong = pairs.filter(pl.col("person_id").is_duplicated() | pl.col("customer_key").is_duplicated())
    assert wrong.is_empty(), f"persons split or fused:\n{wrong.sort('person_id', 'customer_key').head(10)}"
    assert pairs.height == gen.n_persons
    # The households' shared devices are exactly the identifiers held back, each bridging its two sharers.
    shared = pl.read_parquet(root / "truth" / "persons.parquet")["shared_device_ids"].explode().drop_nulls()
    assert shared.n_unique() >= 10
    assert sorted(held["id_value"]) == sorted(shared.unique())
    assert set(held["reason"]) == {"bridge"} and set(held["n_customers"]) == {2}


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


def test_true_journeys_reach_the_levels_clickhouse_gives_them(run, tmp_path):
    chdb = pytest.importorskip("chdb")
    root, _, _, settings = run
    truth_path = root / "truth" / "events.parquet"
    # The generator's own journeys and stages: nothing here comes from the pipeline's splitting or stage rules.
    truth = pl.read_parquet(truth_path).select(
        true_journey=pl.col("person_id") + "/" + pl.col("journey_no").cast(pl.String),
        ts=pl.col("occurred_at").dt.epoch("us").cast(pl.UInt64),
        stage=pl.col("true_stage").fill_null(0).cast(pl.UInt8),
    )
    events = tmp_path / "truth.parquet"
    truth.write_parquet(events)
    # The spec's ordered funnel with the default conversion_window (unbounded within the journey): windowFunnel
    # in its default mode with a window longer than any journey, as in test_levels_equal_clickhouse_windowfunnel.
    conds = ", ".join(f"stage = {i}" for i in range(1, 6))
    res = chdb.query(
        f"select true_journey, windowFunnel(1000000000000000)(ts, {conds}) as level"
        f" from file('{events}', Parquet) group by true_journey",
        "ArrowTable",
    )
    true_level = dict(zip(res.column("true_journey").to_pylist(), res.column("level").to_pylist(), strict=True))

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        # Each (true journey, pipeline journey) pair some event shows, from both sides (a full join).
        pairs = con.sql(
            "select t.person_id || '/' || t.journey_no as true_journey, je.journey_id, count(*) as n_events"
            " from read_parquet($p) as t full join journey_events as je on je.event_id = t.source || ':' || t.event_id"
            " group by true_journey, je.journey_id",
            params={"p": str(truth_path)},
        ).pl()
        ours = dict(
            con.sql(
                "select journey_id, furthest_stage from journeys"
                " where stage_model = 'generic_lifecycle' and mode = 'ordered'"
            ).fetchall()
        )
    assert pairs["true_journey"].null_count() == 0 and pairs["journey_id"].null_count() == 0
    # One to one: every pipeline journey's events are all of one true journey's events, and the other way round.
    wrong = pairs.filter(pl.col("true_journey").is_duplicated() | pl.col("journey_id").is_duplicated())
    assert wrong.is_empty(), f"journeys split or merged:\n{wrong.sort('true_journey', 'journey_id').head(10)}"
    assert pairs.height == len(true_level)
    assert set(ours) == set(pairs["journey_id"])
    to_true = dict(zip(pairs["journey_id"], pairs["true_journey"], strict=True))
    assert {to_true[j]: level for j, level in ours.items()} == true_level
    # Every level occurs, so journeys ending at each stage of the model are compared.
    assert set(true_level.values()) == {1, 2, 3, 4, 5} and len(true_level) > 100


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
    assert not {"int_journey_events", "int_stage_events"} & tables
    assert Path(result["quality"]["report"]).exists()
    # The flow's report step and the catalog's comments on the published warehouse.
    report = Path(result["report"]["path"])
    assert report.name == f"journeys-{result['batch_id']}.html"
    assert (report.parent / "journeys.html").read_bytes() == report.read_bytes()
    # The run records its goals, so its report can tell "no goal missed" from "no goal configured".
    from journeys.report import read_run_record

    assert read_run_record(settings)["goals"] == len(settings.goals) == 5
    # The run's Great Expectations Data Docs, recorded for `journeys report` and linked from its quality section.
    docs = result["quality"]["data_docs"]
    assert docs == f"data_docs/{result['batch_id']}/index.html" and (report.parent / docs).is_file()
    assert f"href='{docs}'" in report.read_text() and html_report.read_run_record(settings)["data_docs"] == docs
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        comments = con.sql("select comment from duckdb_columns() where table_name = 'stage_funnel'").fetchall()
    assert comments and all(c for (c,) in comments)


def test_the_alerts_are_published_and_posted_as_an_artifact(run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, _, result, settings = run
    alerts = pl.read_parquet(settings.marts_dir / "alerts" / "alerts.parquet")
    # The demo config's goals: the sample misses its consideration conversion goal, on a first run.
    assert "consideration_converts" in alerts["goal_name"].to_list()
    assert alerts["previous_batch_id"].null_count() == alerts.height
    with get_client(sync_client=True) as client:
        posted = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifacts.ALERTS_KEY]))
        )
    text = next(a.data for a in posted if result["batch_id"] in (a.data or ""))
    assert f"## Goals missed: {alerts.height}" in text and "| consideration_converts |" in text
    assert "## Top red points" in text


def test_first_runs_row_counts_match_the_generator_and_the_lake(run):
    from prefect.client.orchestration import get_client

    root, gen, _, settings = run
    first = runs(settings)[0]  # the fixture's run; later tests add runs and landing files
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        con.execute("set file_search_path = ?", [str(settings.warehouse_path.parent)])
        loaded, quarantined = con.execute(
            "select (select count(*) from events where batch_id = $b),"
            " (select count(*) from quarantine where batch_id = $b)",
            {"b": first["batch_id"]},
        ).fetchone()
    # the generator's own counts of what it wrote, and the lake's rows of that batch
    assert (first["landing_files"], first["files_ingested"]) == (len(gen.files), len(gen.files))
    assert first["rows_loaded"] == loaded == first["events_in_lake"] == first["events_checked"]
    assert first["rows_quarantined"] == quarantined == gen.n_malformed
    assert first["rows_duplicate"] == gen.n_duplicates
    # a first run: nothing held back earlier, no earlier file versions; the generator writes no blank rows
    assert (first["rows_held"], first["rows_released"], first["rows_replaced"], first["rows_blank"]) == (0, 0, 0, 0)
    assert first["rows_read"] == loaded + quarantined + gen.n_duplicates
    assert first["event_batches"] == [first["batch_id"]] and first["quality_warnings"] == []
    assert first["quality_report"] == str(root / "reports" / f"quality-{first['batch_id']}.md")
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(first["flow_run_id"])
    assert flow_run.state is not None and flow_run.state.is_completed()
    # wall-clock: published after the run's start, i.e. within this session, not its as_of
    assert SPEC.as_of < first["published_at"] <= datetime.now(UTC)
    assert first["published_at"] > datetime.now(UTC) - timedelta(hours=2)


def test_first_runs_expectations_are_those_of_the_suite_files_and_the_mapping(run):
    root, gen, _, settings = run
    first = runs(settings)[0]
    # The reference for one batch of each suite: the suite files the run synced into the data root, and the
    # sources of journeys.yaml (a source's raw suite is not null on its id and time columns, then raw.json).
    files = {p.stem: json.loads(p.read_text())["expectations"] for p in (root / "gx" / "expectations").glob("*.json")}
    raw = files.pop("raw")
    mapping = yaml.safe_load(Path(CONFIG).read_text())["sources"]
    assert all(isinstance(s["event_id"], str) and "events" not in s for s in mapping)
    per_batch = {name: len(exps) for name, exps in files.items()}
    per_batch |= {f"raw_{s['name']}": len({s["event_id"], s["occurred_at"]}) + len(raw) for s in mapping}
    # Which suites ran: every table suite (their tables are published), the events and grain suites, and the raw
    # suite of every source the generator wrote files for.
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        tables = {t for (t,) in con.sql("select table_name from duckdb_tables()").fetchall()}
    assert {"identity_map", "journeys", "stage_conversion"} <= tables
    assert {p.parent.name for p in gen.files} == {s["name"] for s in mapping}
    # How many batches each ran is the run's own count (DuckDB's Arrow reader decides where the lake's events
    # split), read from its report.
    report = Path(first["quality_report"]).read_text()
    batches = {name: int(n) for name, n in re.findall(r"^- suite `(\w+)`: (\d+) batch", report, re.M)}
    assert batches.keys() == per_batch.keys() and min(batches.values()) >= 1
    assert first["expectations"] == sum(n * per_batch[name] for name, n in batches.items())
    assert f"Expectations evaluated: {first['expectations']}" in report


def test_every_mart_and_the_runs_table_say_which_run_published_them(run):
    _, _, result, settings = run
    last = runs(settings)[-1]
    assert last["batch_id"] == result["batch_id"]
    # Published times are TIMESTAMP WITH TIME ZONE (UTC): the same instant, now marked UTC.
    assert last["as_of"] == SPEC.as_of and last["as_of"].utcoffset() == timedelta(0)
    assert last["rows_loaded"] == result["ingest"]["loaded"] and last["quality"] == "passed"
    assert last["flow_run_id"] and last["quality_report"] == result["quality"]["report"]
    want = {
        b"journeys.batch_id": result["batch_id"].encode(),
        b"journeys.as_of": SPEC.as_of.isoformat().encode(),
        b"journeys.published_at": last["published_at"].isoformat().encode(),
    }
    marts = [publish.mart_path(settings, m.name) for m in models.load_catalog().published()]
    assert marts
    for path in marts:
        meta = pq.read_metadata(path).metadata
        assert {k: meta.get(k) for k in want} == want, path.name


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
    before, history = marts_digest(settings), runs(settings)
    result = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    assert result["ingest"]["loaded"] == 0
    assert result["build"]["mode"] == "incremental", result["build"]
    assert marts_digest(settings) == before
    # The history is carried into the new warehouse file and grows by this run.
    assert runs(settings)[:-1] == history
    assert runs(settings)[-1]["batch_id"] == result["batch_id"]
    assert runs(settings)[-1]["rows_loaded"] == 0
    # Nothing new arrived: no event batch is validated (the lake's rows were checked when they arrived).
    assert result["quality"]["events_checked"] == 0
    assert "canonical_events" not in result["quality"]["suites"]
    # Nor a table suite's: the kept build's tables passed them all in the run before, and no row changed.
    assert not {"identity_map", "journeys", "stage_conversion"} & set(result["quality"]["suites"])
    report = Path(result["quality"]["report"]).read_text()
    assert re.search(r"^- journeys: 0 of the \d+ rows of journeys", report, re.M)


def test_identity_state_lives_in_state_not_in_the_published_marts(run, tmp_path):
    root, _, _, settings = run
    before = marts_digest(settings)
    assert (settings.state_dir / "identity_map.parquet").exists()
    # An analyst (or a BI tool's cache purge) removing the published marts must not change any key.
    # (The published warehouse lives in the marts' set, so it goes too; the run publishes both again.)
    aside = tmp_path / "marts"
    shutil.move(settings.marts_dir, aside)
    try:
        nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    except BaseException:
        shutil.rmtree(settings.marts_dir, ignore_errors=True)
        shutil.move(aside, settings.marts_dir)
        raise
    # The old folder is not put back: that would roll the publication back behind the run history's back.
    assert marts_digest(settings) == before
    assert runs(settings)[-1]["batch_id"] == pq.read_table(build.runs_state_path(settings))["batch_id"][-1].as_py()


def test_failing_quality_suite_keeps_previous_marts(run, tmp_path):
    root, _, _, settings = run
    before, history = marts_digest(settings), runs(settings)
    warehouse_before = settings.warehouse_path.stat().st_mtime_ns
    # A stricter quarantine limit, below the largest quarantined share of a landing file, fails the run: the
    # per-file limit holds every file still in landing, not only new ones. (Lake events are not checked again
    # after a config change: each row is checked once, by the run that publishes it.)
    with duckdb.connect() as con:
        worst = con.sql(
            'select max(quarantined / "read") from read_parquet($p) where quarantined > 1',
            params={"p": str(settings.state_dir / "ingest_manifest.parquet")},
        ).fetchall()[0][0]
    assert worst
    strict = tmp_path / "strict.yaml"
    strict.write_text(Path(CONFIG).read_text() + f"\nquality: {{max_quarantine_share: {worst / 2}}}\n")
    with pytest.raises(Exception, match="max_quarantine_share"):
        nightly(config_path=str(strict), as_of=SPEC.as_of, data_root=str(root))
    assert marts_digest(settings) == before
    assert settings.warehouse_path.stat().st_mtime_ns == warehouse_before
    assert not list(settings.warehouse_path.parent.glob(".build-*"))
    assert runs(settings) == history
    assert pq.read_table(build.runs_state_path(settings)).num_rows == len(history)


WEB_HEADER = (
    "hit_id,hit_time,platform,action,page_type,page_url,client_id,device_id,login_email,customer_no,order_value\n"
)


def web_rows(prefix: str, times: list[str]) -> str:
    """Web landing rows (Berlin time) of one new cookie, one per time; 'bad' gives an unparseable time."""
    return "".join(
        f"{prefix}{i},{'2026-13-45 25:61:00' if t == 'bad' else t},desktop,pageview,home,/,ck-{prefix},,,,\n"
        for i, t in enumerate(times)
    )


def test_lake_events_are_checked_once_by_the_run_that_publishes_them(run):
    root, _, _, settings = run
    web = root / "landing" / "web"
    history = runs(settings)

    # A file with half its rows quarantined fails the run, but its good rows are in the lake already.
    bad = web / "web_ops_bad.csv"
    bad.write_text(WEB_HEADER + web_rows("hx", ["2026-10-10 12:00:00", "2026-10-12 12:00:00", "bad", "bad"]))
    with pytest.raises(Exception, match="max_quarantine_share"):
        nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    assert runs(settings) == history

    # Removing the file is the recovery; the next run, with nothing new, checks the failed run's rows.
    bad.unlink()
    result = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    assert result["ingest"]["loaded"] == 0
    assert result["quality"]["events_checked"] == 2
    assert result["quality"]["event_dates"] == ["2026-10-10", "2026-10-12"]

    # One new file: only its rows, on its dates.
    (web / "web_ops_new.csv").write_text(WEB_HEADER + web_rows("hy", ["2026-10-20 09:00:00", "2026-10-20 10:00:00"]))
    result = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    assert result["ingest"]["loaded"] == 2
    assert result["quality"]["events_checked"] == 2
    assert result["quality"]["event_dates"] == result["ingest"]["affected_dates"] == ["2026-10-20"]
    assert len(runs(settings)) == len(history) + 2
    # The failed run's files, checked since by the run before, were merged into their dates' files first.
    assert result["compaction"]["partitions"] == ["event_date=2026-10-10", "event_date=2026-10-12"]
    assert result["compaction"]["files_after"] == result["compaction"]["files_before"] - 2
    for day in ("2026-10-10", "2026-10-12"):
        assert len(list((settings.events_dir / f"event_date={day}").glob("*.parquet"))) == 1


def test_an_incremental_run_publishes_what_a_full_refresh_does(run):
    root, _, _, settings = run
    web = root / "landing" / "web"
    (web / "web_incremental.csv").write_text(
        WEB_HEADER + web_rows("hinc", ["2026-10-21 09:00:00", "2026-10-21 09:10:00"])
    )
    result = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    assert result["build"]["mode"] == "incremental", result["build"]
    # One new cookie: one customer rebuilt, not the thousand or so of the sample; identity resolved only that cookie.
    assert result["steps"]["build-marts"]["incremental"]["affected_customers"] == 1
    assert (result["identity"]["resolution"], result["identity"]["n_identifiers_resolved"]) == ("incremental", 1)
    incremental_marts = marts_digest(settings)

    full = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root), full_refresh=True)
    assert full["build"]["mode"] == "full"
    assert "incremental" not in full["steps"]["build-marts"]
    assert marts_digest(settings) == incremental_marts
    # The full refresh kept its build: the next run is incremental again.
    again = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    assert again["build"]["mode"] == "incremental"
    assert again["steps"]["build-marts"]["incremental"]["affected_customers"] == 0
    assert (again["identity"]["resolution"], again["identity"]["n_identifiers_resolved"]) == ("incremental", 0)
    assert again["identity"]["n_identifiers"] == full["identity"]["n_identifiers_resolved"]
    assert marts_digest(settings) == incremental_marts


def test_analysts_views_and_tables_survive_the_nightly_publication(run, tmp_path, capfd):
    root, _, _, settings = run
    analysts = tmp_path / "analysts.duckdb"
    base = ["--config", CONFIG, "analyst-db", "--data-root", str(root), "--path", str(analysts)]
    assert cli.main([*base]) == 0
    assert f"ATTACH '{settings.warehouse_path}' AS warehouse (READ_ONLY);" in capfd.readouterr().out
    view = "create view my_runs as select count(*) as n, arg_max(batch_id, published_at) as last from warehouse.runs"
    assert cli.main([*base, "--sql", view, "--sql", "create table my_notes as select 'keep me' as note"]) == 0
    with publish.open_analyst_db(analysts, settings.warehouse_path) as con:
        before = con.sql("select n from my_runs").fetchall()[0][0]
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("create table warehouse.mine (a int)")

    # The next night replaces the warehouse file; the analysts' file is not touched and its view reads the new one.
    result = nightly(config_path=CONFIG, as_of=SPEC.as_of, data_root=str(root))
    assert cli.main([*base, "--sql", "select note from my_notes"]) == 0
    assert "keep me" in capfd.readouterr().out
    with publish.open_analyst_db(analysts, settings.warehouse_path) as con:
        assert con.sql("select n, last from my_runs").fetchall() == [(before + 1, result["batch_id"])]


def ops_config(tmp_path: Path, freshness: str, volume: str) -> str:
    path = tmp_path / f"ops-{freshness}-{volume}.yaml"
    checks = [
        "quality:",
        "  freshness: {max_staleness: 2d, on_fail: " + freshness + "}",
        "  volume: {min_ratio: 0.9, on_fail: " + volume + "}",
    ]
    path.write_text(Path(CONFIG).read_text() + "\n" + "\n".join(checks) + "\n")
    return str(path)


def test_volume_and_freshness_checks_fail_or_warn_as_configured(run, tmp_path):
    root, _, _, settings = run
    history = runs(settings)
    previous = [r for r in history if r["rows_loaded"]][-1]["rows_loaded"]
    assert previous >= 2  # so that one new event is below 0.9 of it

    # Volume: one new event against the last delivery fails the run, naming the numbers and the setting.
    (root / "landing" / "web" / "web_ops_small.csv").write_text(WEB_HEADER + web_rows("hz", ["2026-10-21 09:00:00"]))
    with pytest.raises(Exception, match=r"\[volume\] volume: 1 new events, .* quality.volume.min_ratio is 0.9"):
        nightly(config_path=ops_config(tmp_path, "fail", "fail"), as_of=SPEC.as_of, data_root=str(root))
    assert runs(settings) == history
    report = sorted((root / "reports").glob("quality-*.md"), key=lambda p: p.stat().st_mtime)[-1].read_text()
    assert "## Freshness and volume" in report and "volume: FAILED, 1 new events" in report

    # With on_fail: warn the next run publishes that event (it is still new: no published run took it in).
    result = nightly(config_path=ops_config(tmp_path, "fail", "warn"), as_of=SPEC.as_of, data_root=str(root))
    assert result["ingest"]["loaded"] == 0
    assert [w.split(",")[0] for w in result["quality"]["warnings"]] == ["volume: 1 new events"]
    assert "freshness: ok, 1 new events to publish" in result["quality"]["checks"]
    last = runs(settings)[-1]
    assert (last["batch_id"], last["quality"]) == (result["batch_id"], "warned")
    assert last["quality_warnings"] == result["quality"]["warnings"]
    summary = artifacts.run_summary_markdown(
        batch_id=result["batch_id"],
        as_of=SPEC.as_of,
        ingest=result["ingest"],
        identity=result["identity"],
        quality=result["quality"],
        model=None,
        mode=None,
        funnel=[],
        dropout=[],
        warehouse="w",
    )
    assert "passed with warnings" in summary and "- **warning**: volume: 1 new events" in summary

    # Freshness: nothing new, and the newest load is ~3 days before the run's as_of.
    later = datetime.now(UTC) + timedelta(days=3)
    with pytest.raises(Exception, match=r"\[freshness\] freshness: nothing new for 3\.0 days"):
        nightly(config_path=ops_config(tmp_path, "fail", "fail"), as_of=later, data_root=str(root))
    result = nightly(config_path=ops_config(tmp_path, "warn", "fail"), as_of=later, data_root=str(root))
    assert [w.split(" (")[0] for w in result["quality"]["warnings"]] == ["freshness: nothing new for 3.0 days"]
    assert runs(settings)[-1]["quality"] == "warned"
    # Within the limit the check passes and says so.
    result = nightly(config_path=ops_config(tmp_path, "fail", "fail"), as_of=datetime.now(UTC), data_root=str(root))
    assert result["quality"]["warnings"] == [] and result["quality"]["checks"][0].startswith("freshness: ok")


NEW_MART = """-- model: channel_days
-- grain: {grain}
-- materialized: table
-- partition: none
-- publish: true
-- One row per (channel, day) with the events of resolved customers on it.
-- column channel: Canonical channel of the events.
-- column event_date: UTC day of the events.
-- column events_on_day: Events of resolved customers in that channel on that day.
with

journey_events as (
    select
        je.channel,
        je.event_date
    from journey_events as je
),

final as (
    select
        journey_events.channel,
        journey_events.event_date,
        count(*) as events_on_day
    from journey_events
    group by journey_events.channel, journey_events.event_date
)

select * from final
"""


def test_a_new_mart_is_one_sql_file(harness, tmp_path, monkeypatch):
    root = tmp_path / "root"
    spec = GenerateSpec(events=1_500, seed=11, shared_device_rate=0.0)
    generate_sample(spec, root)
    sql = tmp_path / "sql"
    shutil.copytree(models.shipped_models_dir(), sql)
    config = tmp_path / "journeys.yaml"
    config.write_text(Path(CONFIG).read_text() + f"\nmodels_dir: {sql}\n")
    settings = load_settings(config, data_root=root)
    mart = sql / "marts" / "channel_days.sql"

    # Declared with a grain its rows do not have: the catalog's grain check stops publication.
    mart.write_text(NEW_MART.format(grain="channel"))
    with pytest.raises(Exception, match=r"channel_days \(channel\): \d+ keys repeated"):
        nightly(config_path=str(config), as_of=spec.as_of, data_root=str(root))
    assert not (settings.marts_dir / "channel_days").exists()

    mart.write_text(NEW_MART.format(grain="channel, event_date"))
    # Settings and stage models are read once per run, at its start, whatever the tasks do.
    calls = {"settings": 0, "stage_models": 0}
    real_load_settings, real_load_stage_model = nightly_module.load_settings, stages.load_stage_model

    def counting_settings(*args, **kwargs):
        calls["settings"] += 1
        return real_load_settings(*args, **kwargs)

    def counting_stage_model(*args, **kwargs):
        calls["stage_models"] += 1
        return real_load_stage_model(*args, **kwargs)

    monkeypatch.setattr(nightly_module, "load_settings", counting_settings)
    monkeypatch.setattr(stages, "load_stage_model", counting_stage_model)
    result = nightly(config_path=str(config), as_of=spec.as_of, data_root=str(root))
    assert calls == {"settings": 1, "stage_models": len(settings.stage_models)}
    path = settings.marts_dir / "channel_days" / "channel_days.parquet"
    assert result["outputs"]["channel_days"] == str(path)
    assert result["marts"]["channel_days"] > 0
    parquet = pl.read_parquet(path)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        warehouse = con.sql("select * from channel_days order by channel, event_date").pl()
        total = con.sql("select count(*) from journey_events").fetchall()[0][0]
    assert parquet.equals(warehouse)
    assert parquet["events_on_day"].sum() == total
    # Its data dictionary came in the same file.
    described = models.load_catalog(str(sql)).models["channel_days"].columns
    assert sorted(described) == sorted(parquet.columns)
