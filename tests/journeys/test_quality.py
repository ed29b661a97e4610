"""Quality gates of the landing layer: the RAW per-source suite and the per-file quarantine-share limit."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from journeys import db
from journeys.config import (
    FreshnessCheck,
    IdentityCheck,
    MappedField,
    QualityConfig,
    Settings,
    SourceConfig,
    VolumeCheck,
)
from journeys.ingest import ingest_sources, manifest_path
from journeys.quality import (
    QualityReport,
    check_freshness_and_volume,
    share_exceeded,
    unchecked_event_files,
    validate_landing,
    write_quality_report,
)
from tests.journeys.conftest import fail_ingest_file_on_call

AS_OF = datetime(2026, 3, 1)
HEADER = "hit_id,hit_time,platform,action,page\n"
WEB = SourceConfig(
    name="web",
    path="web/*.csv",
    format="csv",
    timestamp_format="%Y-%m-%d %H:%M:%S",
    event_id="hit_id",
    occurred_at="hit_time",
    channel=MappedField(column="platform"),
    event_type=MappedField(column="action"),
)
EMAIL = SourceConfig(
    name="email",
    path="email/*.jsonl",
    format="jsonl",
    event_id="id",
    occurred_at="ts",
    channel=MappedField(value="email"),
    event_type=MappedField(column="event"),
)


@pytest.fixture
def settings(make_settings):
    def make(root: Path, max_share: float = 0.05) -> Settings:
        return make_settings(root, sources=[WEB, EMAIL], quality=QualityConfig(max_quarantine_share=max_share))

    return make


def land(root: Path, rel: str, text: str) -> None:
    p = root / "landing" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def rows(n: int, *, bad: int = 0, no_id: int = 0) -> str:
    """n CSV rows; the first `bad` have an impossible time, the next `no_id` no event id."""
    out = []
    for i in range(n):
        when = "2026-13-45 10:00:00" if i < bad else f"2026-01-15 10:{i % 60:02d}:00"
        hit = "" if bad <= i < bad + no_id else f"h{i}"
        out.append(f"{hit},{when},web,page_view,/p{i}\n")
    return HEADER + "".join(out)


@pytest.mark.parametrize(
    ("read", "quarantined", "max_share", "exceeded"),
    [
        (0, 0, 0.05, False),
        (16, 1, 0.05, False),  # one bad row alone never fails a file
        (10, 2, 0.05, True),
        (100, 5, 0.05, False),  # exactly at the limit is within it
        (100, 6, 0.05, True),
        (100, 30, 0.5, False),
    ],
)
def test_share_exceeded(read, quarantined, max_share, exceeded):
    assert share_exceeded(read, quarantined, max_share) is exceeded


def test_clean_batch_passes_and_reports_every_file(tmp_path, settings):
    land(tmp_path, "web/a.csv", rows(20))
    land(tmp_path, "web/b.csv", HEADER)
    land(tmp_path, "email/a.jsonl", '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n')
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    report = validate_landing(s, batch_id="b1")
    assert report.success, report.summary()
    assert report.suites == {"raw_web": 1, "raw_email": 1}  # the header-only file has no rows to expect of
    assert [(f.file, f.read, f.quarantined, f.ok) for f in report.files] == [
        ("email/a.jsonl", 1, 0, True),
        ("web/a.csv", 20, 0, True),
        ("web/b.csv", 0, 0, True),
    ]


def test_file_over_the_quarantine_share_fails_naming_file_and_share(tmp_path, settings):
    land(tmp_path, "web/a.csv", rows(20))
    land(tmp_path, "web/bad.csv", rows(10, bad=3))
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    report = validate_landing(s, batch_id="b1")
    assert not report.success
    [fail] = [f for f in report.failures if f.suite == "quarantine_share"]
    assert (fail.batch, fail.unexpected_count) == ("web/bad.csv", 3)
    assert "30.0% of 10 rows quarantined (limit 5.0%" in fail.sample[0]
    assert "web/bad.csv" in report.summary() and "30.0%" in report.summary()
    # A looser limit lets the same file through.
    assert validate_landing(settings(tmp_path, max_share=0.5), batch_id="b1").success


def test_a_file_mixing_line_breaks_is_checked_as_ingest_read_it_and_its_copy_is_deleted(tmp_path, settings):
    lines = rows(4).splitlines(keepends=True)
    land(
        tmp_path,
        "web/a.csv",
        lines[0] + lines[1].replace("\n", "\r\n") + lines[2].replace("\n", "\r") + "".join(lines[3:]),
    )
    s = settings(tmp_path)
    assert ingest_sources(s, as_of=AS_OF, batch_id="b1").loaded == 4
    report = validate_landing(s, batch_id="b1")
    assert report.success, report.summary()
    assert [(f.file, f.read, f.quarantined) for f in report.files] == [("web/a.csv", 4, 0)]
    assert not (tmp_path / "tmp").exists()  # the LF copy holds raw landing content: scratch only


def test_the_limit_keeps_failing_later_runs_until_the_file_is_fixed(tmp_path, settings):
    land(tmp_path, "web/bad.csv", rows(10, bad=3))
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    ingest_sources(s, as_of=AS_OF, batch_id="b2")  # nothing new: the file is skipped
    assert not validate_landing(s, batch_id="b2").success  # its good rows must not slip out a day later
    land(tmp_path, "web/bad.csv", rows(10))  # the source re-delivers a fixed file
    ingest_sources(s, as_of=AS_OF, batch_id="b3")
    report = validate_landing(s, batch_id="b3")
    assert report.success, report.summary()


def test_raw_suite_flags_missing_ids_per_source_file(tmp_path, settings):
    land(tmp_path, "web/a.csv", rows(10, no_id=4))
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    report = validate_landing(s, batch_id="b1")
    raw = [
        (f.suite, f.batch, f.expectation, f.column, f.unexpected_count) for f in report.failures if f.suite == "raw_web"
    ]
    assert raw == [("raw_web", "web/a.csv#0", "expect_column_values_to_not_be_null", "hit_id", 4)]


def test_raw_suite_runs_in_bounded_batches(tmp_path, settings):
    land(tmp_path, "web/a.csv", rows(5000))
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    report = validate_landing(s, batch_id="b1", batch_rows=2048)
    assert report.success and report.suites["raw_web"] == 3  # 2048 + 2048 + 904 rows


def test_file_of_only_blank_lines_is_like_an_empty_file(tmp_path, settings):
    # Blank lines are counted as blank rows, not rows: such a file holds no rows, like an empty or
    # header-only file, and there is nothing to expect of them.
    land(tmp_path, "email/a.jsonl", "\n\n  \n")
    s = settings(tmp_path)
    assert ingest_sources(s, as_of=AS_OF, batch_id="b1").blank == 3
    report = validate_landing(s, batch_id="b1")
    assert report.success, report.summary()


def test_schema_drift_is_a_warning_in_the_report(tmp_path, settings):
    land(tmp_path, "web/a.csv", rows(3))
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    land(tmp_path, "web/b.csv", "hit_id,hit_time,platform,action,page,utm\nh9,2026-01-15 10:00:00,web,x,/,nl\n")
    ingest_sources(s, as_of=AS_OF, batch_id="b2")
    report = validate_landing(s, batch_id="b2")
    assert report.success
    assert report.warnings == ["schema drift: source 'web', file 'web/b.csv': new column(s) ['utm']"]
    assert "warning: schema drift" in report.summary()


def test_markdown_report_has_failures_warnings_and_shares(tmp_path, settings):
    land(tmp_path, "web/a.csv", rows(3))
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    data = rows(10, bad=4).split("\n", 1)[1].replace("\n", ",v\n")
    land(tmp_path, "web/bad.csv", "hit_id,hit_time,platform,action,page,x|y\n" + data)
    ingest_sources(s, as_of=AS_OF, batch_id="b2")
    report = validate_landing(s, batch_id="b2").merged(QualityReport(suites={"raw_web": 1}, expectations_run=2))
    assert report.suites["raw_web"] == 2
    text = write_quality_report(report, tmp_path / "reports" / "q.md").read_text()
    assert "Result: FAILED" in text
    assert "| quarantine_share | web/bad.csv | max_quarantine_share |" in text
    assert "## Warnings" in text and "x\\|y" in text  # table-breaking characters are escaped
    assert "| web | web/bad.csv | b2 | 10 | 4 | 40.00% | **no** |" in text
    assert not list((tmp_path / "reports").glob("*.tmp"))


def test_unchecked_event_files_are_those_of_batches_no_published_run_checked(tmp_path, settings):
    s = settings(tmp_path)
    names = {
        "2026-01-01": ["20261101T000000-aaaa-0.parquet", "20261101T000000-aaaa-1-2.parquet", "adhoc-3.parquet"],
        "2026-01-02": ["20261102T000000-bbbb-0.parquet", "20261101T000000-aaaa-5.parquet"],
    }
    for day, files in names.items():
        (s.events_dir / f"event_date={day}").mkdir(parents=True)
        for f in files:
            (s.events_dir / f"event_date={day}" / f).write_bytes(b"")
    got = unchecked_event_files(s, ["20261101T000000-aaaa", "adhoc-3"])
    assert [(p.parent.name, p.name) for p in got] == [
        ("event_date=2026-01-01", "adhoc-3.parquet"),  # batch "adhoc", not "adhoc-3"
        ("event_date=2026-01-02", "20261102T000000-bbbb-0.parquet"),
    ]
    assert len(unchecked_event_files(s, [])) == 5


# --- identity: the largest customer and the identifier-type trap --------------------------------------


def resolved(events: list[tuple[str, list[tuple[str, str]]]], settings: Settings):
    """A connection holding `events` (event_id, identifiers) resolved into customers under `settings`."""
    from journeys import db
    from journeys.identity import resolve_identities

    con = db.connect()
    rows = [
        {
            "event_id": e,
            "occurred_at": datetime(2026, 1, 1),
            "identifiers": [{"id_type": t, "id_value": v} for t, v in ids],
        }
        for e, ids in events
    ]
    db.execute(
        con,
        "create table events as select r.event_id, r.occurred_at,"
        " r.identifiers::struct(id_type varchar, id_value varchar)[] as identifiers from (select unnest($rows) as r)",
        {"rows": rows},
    )
    resolve_identities(con, settings, run_at=AS_OF)
    return con


def hub_events(n_visitors: int = 150, n_calls: int = 200) -> list[tuple[str, list[tuple[str, str]]]]:
    """Cookie-only visitors who typed the call centre's number into a web form, and calls carrying only it."""
    visitors = [(f"v{v}", [("cookie_id", f"k{v}"), ("phone", "hub")]) for v in range(n_visitors)]
    return visitors + [(f"call{c}", [("phone", "hub")]) for c in range(n_calls)]


def identity_settings(**identity_check) -> Settings:
    from journeys.config import IdentityCheck, IdentityConfig

    return Settings(
        identity=IdentityConfig(max_links_per_value=None),  # the hub guardrail off: the check must see the fusion
        quality=QualityConfig(identity=IdentityCheck(**identity_check)),
    )


def test_largest_customer_above_the_limit_fails_the_identity_check(tmp_path):
    from journeys.quality import check_identity

    fused = identity_settings(max_identifiers=100, max_events=100, on_fail="fail")
    report = check_identity(resolved(hub_events(), fused), fused)
    assert not report.success
    assert [(f.suite, f.expectation) for f in report.failures] == [
        ("largest customer by events", "quality.identity.max_events")
    ]
    assert report.failures[0].sample[0].startswith("largest customer by events: c_")
    assert "holds 350 events, 1 customer(s) above 100: strangers fused?" in report.failures[0].sample[0]
    assert report.identity[0].startswith("largest customer by identifiers: ok, c_")  # 21 identifiers, under 100
    assert report.identity[1].startswith("largest customer by events: FAILED, c_")
    text = write_quality_report(report, tmp_path / "q.md").read_text()
    assert "## Identity" in text and "- largest customer by events: FAILED" in text

    # Warned, not failed, with on_fail: warn; and the hub guardrail (the default) leaves no customer that large.
    warned = identity_settings(max_events=100)
    report = check_identity(resolved(hub_events(), warned), warned)
    assert report.success and report.warnings[0].startswith("largest customer by events: c_")
    guarded = Settings(quality=QualityConfig(identity=IdentityCheck(max_identifiers=2, max_events=100)))
    report = check_identity(resolved(hub_events(), guarded), guarded)
    assert report.success and report.warnings == []
    # every visitor is one customer of one cookie and one event; the hub is held back
    assert [(line.split(", c_")[0], line.split(" holds ")[1]) for line in report.identity[:2]] == [
        ("largest customer by identifiers: ok", "1 identifiers"),
        ("largest customer by events: ok", "1 events"),
    ]
    assert report.identity[2] == "held back from linking (shared_identifiers): 1 hub (up to 350 events each)"


def test_identifier_type_trap_shows_in_the_identity_section(tmp_path):
    from journeys.quality import LIMIT_TRAP_MIN, check_identity

    # Repeat buyers whose order-level id was mapped as customer_id: each person "has" two customer ids.
    events = [
        (f"o{p}{o}", [("email", f"p{p}@x"), ("customer_id", f"order-{p}-{o}")])
        for p in range(LIMIT_TRAP_MIN)
        for o in "ab"
    ]
    report = check_identity(resolved(events, Settings()), Settings())
    assert report.success and len(report.warnings) == 1
    assert report.identity[-1] == f"identifier-type trap: warning, {report.warnings[0]}"
    assert "10 held-back identifiers" in report.warnings[0] and "map that column to a per-order" in report.warnings[0]
    text = write_quality_report(report, tmp_path / "q.md").read_text()
    identity_section = text.split("## Identity", 1)[1].split("##", 1)[0]
    assert "identifier-type trap: warning, identity: 10 held-back identifiers (e.g. email)" in identity_section
    assert "customer_id = 1 keeps those 20 customers apart" in identity_section


def test_warehouse_suites_pass_on_a_published_sample_and_report_its_identity(published):
    from journeys import db
    from journeys.quality import validate_warehouse

    s = published.settings
    with db.connect(s.warehouse_path, read_only=True) as con:
        report = validate_warehouse(con, s, as_of=published.context.as_of, catalog=published.context.catalog)
    assert report.success, report.summary()
    assert report.suites["identity_map"] >= 1
    assert [line.split(":")[0] for line in report.identity] == [
        "largest customer by identifiers",
        "largest customer by events",
        "held back from linking (shared_identifiers)",
        "identifier-type trap",
    ]
    assert all(": ok, " in line for line in report.identity[:2])
    assert report.outcome()["identity"] == report.identity


def test_the_identity_section_needs_only_customers_and_shared_identifiers():
    from journeys import db
    from journeys.quality import check_identity

    # A warehouse holding exactly these two tables (no events, no identity_map): every check they allow runs.
    con = db.connect()
    db.execute(con, "create table customers as select 'c_1' as customer_key, 3 as n_identifiers, 7 as n_events")
    db.execute(con, "create table shared_identifiers (reason varchar, n_events bigint)")
    report = check_identity(con, Settings())
    assert [line.split(", c_")[0] for line in report.identity] == [
        "largest customer by identifiers: ok",
        "largest customer by events: ok",
        "held back from linking (shared_identifiers): none",
        "identifier-type trap: not checked, int_event_customers is not in this warehouse",
    ]
    assert check_identity(db.connect(), Settings()).identity == []


def test_hubs_do_not_count_as_the_identifier_type_trap():
    from journeys import db
    from journeys.config import IdentityConfig
    from journeys.quality import LIMIT_TRAP_MIN, check_identity

    # Desk phones each on the events of five customers: hubs, not one person's split order ids.
    events = [
        (f"e{h}_{c}", [("phone", f"desk{h}"), ("customer_id", f"C{h}-{c}")])
        for h in range(LIMIT_TRAP_MIN)
        for c in range(5)
    ]
    s = Settings(identity=IdentityConfig(max_links_per_value=4))
    con = resolved(events, s)
    assert db.fetch(con, "select distinct reason from shared_identifiers") == [("hub",)]
    report = check_identity(con, s)
    assert report.warnings == [] and report.identity[-1] == "identifier-type trap: ok"


# --- suites as files: shipped, edited, a user's own; Data Docs ------------------------------------------


def suite_file(settings: Settings, name: str, expectations: list[dict], **extra) -> Path:
    from journeys.quality import suites_dir

    path = suites_dir(settings) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "expectations": expectations, **extra}), encoding="utf-8")
    return path


def test_shipped_suites_are_written_once_and_a_users_edit_is_never_overwritten(tmp_path, make_settings):
    from journeys.quality import SHIPPED_MANIFEST, load_suites, shipped_suites, suites_dir, sync_suites

    s = make_settings(tmp_path)
    assert sync_suites(s) == []
    folder = suites_dir(s)
    shipped = shipped_suites()
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(shipped)
    assert {"canonical_events", "grain", "identity_map", "journeys", "raw", "stage_conversion"} <= set(shipped)
    for name, text in shipped.items():
        assert (folder / f"{name}.json").read_text() == text
        assert json.loads(text)["name"] == name  # GX's own ExpectationSuite JSON
    # A file this project wrote is the project's to update (here: an older shipped version of it) ...
    old = json.loads(shipped["journeys"])
    old["expectations"] = old["expectations"][:1]
    (folder / "journeys.json").write_text(json.dumps(old))
    manifest = s.state_dir / SHIPPED_MANIFEST
    written = json.loads(manifest.read_text())
    written["journeys"] = hashlib.sha256(json.dumps(old).encode()).hexdigest()
    manifest.write_text(json.dumps(written))
    # ... a file the user edited, or added, is theirs for good.
    edited = json.loads(shipped["stage_conversion"])
    edited["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "stage_name"}})
    (folder / "stage_conversion.json").write_text(json.dumps(edited))
    mine = suite_file(s, "customers", [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "bucket"}}])
    before = mine.read_bytes()
    notes = sync_suites(s)
    assert (folder / "journeys.json").read_text() == shipped["journeys"]
    assert json.loads((folder / "stage_conversion.json").read_text()) == edited
    assert mine.read_bytes() == before
    assert len(notes) == 1 and "suite stage_conversion: your edited gx/expectations/stage_conversion.json" in notes[0]
    assert sync_suites(s) == notes  # and so on every run
    suites = load_suites(s)
    assert (suites["journeys"].origin, suites["stage_conversion"].origin, suites["customers"].origin) == (
        "shipped",
        "edited",
        "yours",
    )
    assert suites["stage_conversion"].expectations[-1]["kwargs"] == {"column": "stage_name"}
    assert suites["customers"].table == "customers" and suites["canonical_events"].table is None


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        ({"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "n_events"}}, "not found"),
        ({"type": "expect_column_values_to_be_between", "kwargs": {"colum": "n_events", "min_value": 1}}, "colum"),
        ({"type": "expect_column_values_to_be_between", "kwargs": {"column": "n_events"}}, "cannot both be None"),
        (
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "x", "value_set": {"$PARAMETER": "c"}}},
            "unknown $PARAMETER ['c']",
        ),
        ({"kwargs": {"column": "n_events"}}, "expected an object with `type` and `kwargs`"),
    ],
)
def test_an_invalid_user_expectation_is_rejected_naming_file_and_expectation(
    tmp_path, make_settings, expectation, message
):
    from journeys.config import ConfigError
    from journeys.quality import load_suites

    s = make_settings(tmp_path)
    ok = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_key"}}
    path = suite_file(s, "customers", [ok, expectation])
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_suites(s)
    assert str(err.value).startswith(f"{path}: expectations[1]")
    assert expectation.get("type", "") in str(err.value) and message in str(err.value)


def test_a_suite_file_of_no_table_or_not_json_is_rejected(tmp_path, make_settings):
    from journeys.config import ConfigError
    from journeys.quality import load_suites

    s = make_settings(tmp_path)
    path = suite_file(s, "custmers", [])
    with pytest.raises(ConfigError, match=r"custmers.json: suite 'custmers' validates table 'custmers', which this"):
        load_suites(s)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"custmers.json: not valid JSON"):
        load_suites(s)
    path.unlink()
    # meta.table points a suite at a table of another name: a second suite for one table.
    suite_file(s, "more_customers", [], meta={"table": "customers"})
    assert load_suites(s)["more_customers"].table == "customers"


def test_a_users_suite_fails_the_quality_step_like_a_shipped_one_and_shows_in_data_docs(tmp_path, published):
    from journeys import db
    from journeys.quality import load_suites, validate_warehouse, write_data_docs

    # The user's suites live in their own data root here: the session's warehouse is only read.
    s = published.settings
    mine = s.model_copy(update={"data_root": tmp_path})
    suite_file(
        mine,
        "customers",
        [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_key"}},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n_events", "max_value": 1}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "n_identifiers", "max_value": 1},
                "severity": "warning",
            },
        ],
    )
    suites = load_suites(mine, published.context.catalog)
    with db.connect(s.warehouse_path, read_only=True) as con:
        report = validate_warehouse(
            con, s, as_of=published.context.as_of, catalog=published.context.catalog, suites=suites, run_name="b1"
        )
    assert not report.success
    assert [(f.suite, f.batch, f.expectation, f.column) for f in report.failures] == [
        ("customers", "customers#0", "expect_column_values_to_be_between", "n_events")
    ]
    assert report.failures[0].unexpected_count > 0 and report.failures[0].sample
    # `severity: warning` warns and still publishes; the shipped suites ran as before.
    assert [w.split(":")[0] for w in report.warnings] == [
        "[customers / customers#0] expect_column_values_to_be_between(n_identifiers)"
    ]
    assert {"canonical_events", "grain", "identity_map", "journeys", "stage_conversion", "customers"} <= set(
        report.suites
    )

    index = write_data_docs(report, tmp_path / "reports", "b1")
    assert index == tmp_path / "reports" / "data_docs" / "b1" / "index.html"
    pages = sorted(p.relative_to(index.parent).as_posix() for p in index.parent.rglob("*.html"))
    assert "expectations/customers.html" in pages and "expectations/canonical_events.html" in pages
    [failed] = [p for p in pages if p.startswith("validations/customers/b1/")]
    assert "n_events" in (index.parent / failed).read_text()
    assert "b1/index.html" in (tmp_path / "reports" / "data_docs" / "index.html").read_text()
    # Only the pages' own assets are kept: a site is well under GX's 4 MB of images and fonts.
    assert sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file()) < 1_500_000


def _with(exp: dict, kwargs: dict | None = None, **top) -> dict:
    return {**exp, **top, "kwargs": {**exp["kwargs"], **(kwargs or {})}}


NOT_NULL = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "n_events"}}


@pytest.mark.parametrize(
    ("expectations", "narrow"),
    [
        ([NOT_NULL, {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": 1}}], True),
        ([NOT_NULL, _with(NOT_NULL, kwargs={"mostly": 1.0}, severity="critical")], True),
        ([NOT_NULL, {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "x"}}], False),
        ([NOT_NULL, {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}], False),
        ([_with(NOT_NULL, kwargs={"mostly": 0.99})], False),
        ([_with(NOT_NULL, severity="warning")], False),
        ([], False),
    ],
)
def test_a_suite_is_narrowable_only_when_each_expectation_judges_a_row_by_itself_and_fails_the_run(
    expectations, narrow
):
    from journeys.quality import Suite, narrowable

    # Uniqueness and row counts need the whole table, `mostly` is a share of the rows checked, and a warning
    # is reported again every night while its rows remain.
    assert narrowable(Suite("t", "t", tuple(expectations), "yours", "t.json")) is narrow


def test_a_table_suite_is_checked_again_only_on_rows_the_last_checked_build_does_not_hold(tmp_path, published):
    import dataclasses
    import shutil

    from journeys.quality import load_suites, record_checked_suites, validate_warehouse, write_quality_report

    s, context = published.settings, published.context
    kept, working = tmp_path / "kept.duckdb", tmp_path / "working.duckdb"
    shutil.copyfile(s.warehouse_path, kept)
    args = {"as_of": context.as_of, "catalog": context.catalog, "event_files": []}
    with db.connect(kept) as con:
        first = validate_warehouse(con, s, **args)
        record_checked_suites(con, first)  # what a run's quality step leaves in the build it publishes
    assert first.success and first.scopes == []
    assert {"identity_map", "journeys", "stage_conversion"} <= set(first.checked)
    shutil.copyfile(kept, working)
    suites = load_suites(s, context.catalog)
    edited = dict(suites)
    journeys = suites["journeys"]
    edited["journeys"] = dataclasses.replace(journeys, expectations=(*journeys.expectations, NOT_NULL))
    with db.connect(working) as con:
        n = db.fetch(con, "select count(*) from journeys")[0][0]
        db.execute(
            con,
            "update journeys set n_events = 0"
            " where journey_id in (select journey_id from journeys order by journey_id limit 3)",
        )
        narrowed = validate_warehouse(con, s, checked_build=kept, **args)
        whole = validate_warehouse(con, s, **args)
        changed_suite = validate_warehouse(con, s, checked_build=kept, suites=edited, **args)

    def failed(report):
        return [(f.suite, f.expectation, f.column, f.unexpected_count, sorted(f.sample)) for f in report.failures]

    # The kept rows passed: the three changed journeys are all there is to check, and the failure is the one a
    # check of the whole table finds, to the count and the sample.
    assert failed(narrowed) == failed(whole)
    assert failed(narrowed)[0][:4] == ("journeys", "expect_column_values_to_be_between", "n_events", 3)
    assert narrowed.failures[0].batch == "journeys (new or changed rows)#0"
    [result] = [r for suite, _, r in narrowed.results if suite == "journeys"]
    assert result.results[0].result["element_count"] == 3
    # Tables with no changed row run no batch; every narrowed suite says so in the report.
    assert not {"identity_map", "stage_conversion"} & set(narrowed.suites)
    others = "(the others passed it in the last published run)"
    assert narrowed.scopes[1] == f"journeys: 3 of the {n} rows of journeys {others}"
    assert narrowed.scopes[0].startswith("identity_map: 0 of the ")
    text = write_quality_report(narrowed, tmp_path / "q.md").read_text()
    assert "Table suites checked on new or changed rows only:" in text and f"- journeys: 3 of the {n} rows" in text
    # An edited suite is not the one the kept rows passed: its whole table is checked again.
    [result] = [r for suite, _, r in changed_suite.results if suite == "journeys"]
    assert result.results[0].result["element_count"] == n
    assert not any(line.startswith("journeys:") for line in changed_suite.scopes)


def test_a_suite_on_a_view_is_checked_whole_whatever_the_last_checked_build_says(tmp_path, make_settings):
    import shutil

    from journeys.quality import Suite, load_suites, record_checked_suites, validate_warehouse

    # A view is no snapshot: the kept build's copy of a view over files reads the files as they are now.
    s = make_settings(tmp_path)
    lake, kept, working = tmp_path / "x.parquet", tmp_path / "kept.duckdb", tmp_path / "working.duckdb"
    not_null_x = _with(NOT_NULL, {"column": "x"})
    suites = {**load_suites(s), "lake_like": Suite("lake_like", "lake_like", (not_null_x,), "yours", "x.json")}
    args = {"as_of": AS_OF, "event_files": [], "suites": suites}
    with db.connect(working) as con:
        db.execute(con, "copy (select unnest([1, 2]) as x) to $p (format parquet)", {"p": str(lake)})
        db.execute(con, "create table stage_definitions as select 'm' as stage_model, 1 as stage_index, 1 as n_stages")
        db.execute(con, f"create view lake_like as select * from read_parquet({db.quote_literal(str(lake))})")
        first = validate_warehouse(con, s, **args)
        record_checked_suites(con, first)
        assert first.success and "lake_like" in first.checked
    shutil.copyfile(working, kept)
    with db.connect(working) as con:
        db.execute(con, "copy (select unnest([1, null]) as x) to $p (format parquet)", {"p": str(lake)})
        report = validate_warehouse(con, s, checked_build=kept, **args)
    assert [(f.suite, f.column, f.unexpected_count) for f in report.failures] == [("lake_like", "x", 1)]
    assert report.scopes == []


def test_data_docs_keep_the_newest_sites_and_the_published_ones(tmp_path):
    import os

    from journeys.quality import KEEP_DATA_DOCS, _prune_data_docs

    root = tmp_path / "data_docs"
    for i in range(KEEP_DATA_DOCS + 2):
        (root / f"run{i}").mkdir(parents=True)
        os.utime(root / f"run{i}", ns=(i * 10**9, i * 10**9))
    (root / ".run9.123.tmp").mkdir()  # a dead run's partial site
    _prune_data_docs(root, keep={"run0"})
    assert sorted(p.name for p in root.iterdir()) == ["run0", *[f"run{i}" for i in range(2, KEEP_DATA_DOCS + 2)]]


def test_no_raw_email_or_phone_reaches_the_report_or_data_docs(tmp_path):
    import pandas as pd

    from journeys.quality import _Validator, write_data_docs

    frame = pd.DataFrame({"v": ["ok", "ana.lopez@example.com", "call +1 (415) 555-0100", "fine"]})
    only_ok = [{"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "v", "value_set": ["ok", "fine"]}}]
    v = _Validator(run_name="b1")
    v.validate("mart", "mart#0", frame, only_ok)
    v.validate("raw_web", "web/a.csv#0", frame, only_ok, raw=True)
    mart, raw = v.report.failures
    assert mart.sample == ["<redacted-email>", "call <redacted-phone>"]
    assert raw.sample == ["xxx.xxxxx@xxxxxxx.xxx", "xxxx +9 (999) 999-9999"]  # raw text keeps its shape only
    index = write_data_docs(v.report, tmp_path / "reports", "b1")
    text = " ".join(p.read_text(errors="replace") for p in index.parent.rglob("*.html"))
    assert "<redacted-email>" in text or "&lt;redacted-email&gt;" in text
    # The phone's parts with their punctuation: a bare "415" also turns up in the pages' own timestamps
    # (microseconds), which made this check fail on some runs.
    leaked = [n for n in ("ana.lopez", "example.com", "555-0100", "(415)", "415) 555") if n in text]
    assert not leaked, leaked


def _history(tmp_path: Path, manifest: list[tuple[str, int, str]], runs: list[tuple[str, int]]):
    """A working database whose `runs` holds published batches, and an ingest manifest of (batch, loaded, at)."""
    s = Settings(
        data_root=tmp_path,
        quality=QualityConfig(freshness=FreshnessCheck(max_staleness="2d"), volume=VolumeCheck(min_ratio=0.5)),
    )
    con = db.connect()
    db.execute(
        con, "create table runs (batch_id varchar, rows_loaded bigint, published_at timestamp, event_batches varchar[])"
    )
    for i, (batch, loaded) in enumerate(runs):
        db.execute(
            con,
            "insert into runs values ($b, $n, timestamp '2026-01-01' + to_hours($i), null)",
            {"b": batch, "n": loaded, "i": i},
        )
    manifest_path(s).parent.mkdir(parents=True, exist_ok=True)
    db.execute(
        con,
        "copy (select unnest($b) as batch_id, unnest($n)::bigint as loaded, unnest($t)::timestamp as ingested_at)"
        f" to {db.quote_literal(str(manifest_path(s)))} (format parquet)",
        {"b": [m[0] for m in manifest], "n": [m[1] for m in manifest], "t": [m[2] for m in manifest]},
    )
    return con, s


def test_freshness_and_volume_hold_at_exactly_their_limits(tmp_path):
    # Nothing new, the last rows loaded exactly max_staleness (2 days) before as_of: still fresh.
    con, s = _history(tmp_path / "a", [("b0", 100, "2026-01-01 00:00")], [("b0", 100)])
    report = check_freshness_and_volume(con, s, as_of=datetime(2026, 1, 3))
    assert report.failures == [] and any(c.startswith("freshness: ok") for c in report.checks)
    # 50 new events after a run that loaded 100: exactly min_ratio (0.5), accepted.
    con, s = _history(tmp_path / "b", [("b0", 100, "2026-01-01 00:00"), ("b1", 50, "2026-01-02 00:00")], [("b0", 100)])
    report = check_freshness_and_volume(con, s, as_of=datetime(2026, 1, 2))
    assert report.failures == [] and any(c.startswith("volume: ok") for c in report.checks)


def land_mixed_batch(root: Path) -> None:
    """Web files (one missing ids), an e-mail file missing a time, and one of blank lines only."""
    land(root, "web/a.csv", rows(10, no_id=4))
    land(root, "web/b.csv", rows(3))
    land(root, "web/c.csv", rows(2))
    land(
        root,
        "email/a.jsonl",
        '{"id": "e1", "ts": "2026-01-10T10:00:00Z", "event": "open"}\n{"id": "e2", "event": "x"}\n',
    )
    land(root, "email/blank.jsonl", "\n\n")


MIXED_RAW_FAILURES = [
    ("raw_web", "3 files web/a.csv .. web/c.csv#0", "hit_id", 4),
    ("raw_email", "2 files email/a.jsonl .. email/blank.jsonl#0", "ts", 1),
]


def raw_failures(report: QualityReport) -> list[tuple]:
    return [(f.suite, f.batch, f.column, f.unexpected_count) for f in report.failures if f.suite.startswith("raw_")]


def test_the_raw_suites_check_what_ingest_handed_over_without_reading_landing_again(tmp_path, settings, monkeypatch):
    import journeys.ingest as ingest_module

    land_mixed_batch(tmp_path)
    s = settings(tmp_path)
    # The first attempt dies on its third file; the retry (same batch) skips the two it finished: each attempt
    # hands over its own files.
    fail_ingest_file_on_call(monkeypatch, 3)
    with pytest.raises(OSError, match="share"):
        ingest_sources(s, as_of=AS_OF, batch_id="b1")
    monkeypatch.undo()
    assert sum(f.skipped for f in ingest_sources(s, as_of=AS_OF, batch_id="b1").files) == 2
    assert len(list((s.handoff_dir / "b1").glob("*.files.parquet"))) == 2

    def read_again(*args, **kw):
        raise AssertionError("a landing file was read again")

    monkeypatch.setattr(ingest_module, "read_source_rows", read_again)
    report = validate_landing(s, batch_id="b1")
    assert raw_failures(report) == MIXED_RAW_FAILURES
    assert report.suites == {"raw_web": 1, "raw_email": 1}
    assert not s.handoff_dir.exists()  # read once, then removed


def test_files_the_handoff_lacks_are_read_from_landing_and_still_checked(tmp_path, settings):
    land_mixed_batch(tmp_path)
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    # As a data root ingested before the handoff existed, or a run killed between its manifest and handoff.
    [index] = (s.handoff_dir / "b1").glob("*.files.parquet")
    with duckdb.connect() as con:
        con.execute(
            "copy (select * from read_parquet($p) where file <> 'web/a.csv') to $p2 (format parquet)",
            {"p": str(index), "p2": str(index) + ".part"},
        )
    Path(str(index) + ".part").replace(index)
    assert raw_failures(validate_landing(s, batch_id="b1")) == MIXED_RAW_FAILURES
    assert not s.handoff_dir.exists()
    # No handoff at all: every file is read from landing.
    assert raw_failures(validate_landing(s, batch_id="b1")) == MIXED_RAW_FAILURES


def test_landing_files_of_a_run_that_died_before_its_checks_are_checked_by_the_next_run(tmp_path, settings):
    from journeys.publish import clear_stale_run_files

    s = settings(tmp_path)
    land(tmp_path, "web/a.csv", rows(10, no_id=4))
    ingest_sources(s, as_of=AS_OF, batch_id="b1")  # then the run dies: no quality step, nothing published
    clear_stale_run_files(s)  # the next run's start removes b1's handoff: its files are read from landing
    assert not (s.handoff_dir / "b1").exists()
    land(tmp_path, "web/b.csv", rows(3))
    ingest_sources(s, as_of=AS_OF, batch_id="b2")  # b1's file is skipped, already ingested
    report = validate_landing(s, batch_id="b2")
    assert raw_failures(report) == [("raw_web", "2 files web/a.csv .. web/b.csv#0", "hit_id", 4)]
    assert report.landing_batches == ["b1", "b2"]
    out = write_quality_report(report, tmp_path / "q.md").read_text()
    assert "Raw landing suites checked the files of batches: b1, b2" in out


def test_landing_files_a_published_run_checked_are_not_checked_again(tmp_path, settings):
    from journeys import build, publish

    s = settings(tmp_path)
    land(tmp_path, "web/a.csv", rows(4))
    ingest_sources(s, as_of=AS_OF, batch_id="b1")  # dies before its checks
    land(tmp_path, "web/b.csv", rows(3))
    ingest_sources(s, as_of=AS_OF, batch_id="b2")
    checked = validate_landing(s, batch_id="b2")
    assert checked.success and checked.landing_batches == ["b1", "b2"]
    # b2 publishes, recording the batches it checked as the flow does (runs.event_batches).
    with duckdb.connect() as con:
        con.execute(f"create table runs ({', '.join(f'{c} {t}' for c, t in build.RUNS_SCHEMA.items())})")
        publish.record_run(con, build.runs_state_path(s), {"batch_id": "b2", "event_batches": ["b1", "b2"]})
    land(tmp_path, "web/a.csv", rows(10, no_id=4))  # b1's file replaced: its new version is b3's
    land(tmp_path, "web/c.csv", rows(2))
    ingest_sources(s, as_of=AS_OF, batch_id="b3")
    report = validate_landing(s, batch_id="b3")
    assert report.landing_batches == ["b3"]
    assert raw_failures(report) == [("raw_web", "2 files web/a.csv .. web/c.csv#0", "hit_id", 4)]
    land(tmp_path, "web/d.csv", rows(2))
    ingest_sources(s, as_of=AS_OF, batch_id="b4")
    # b3 failed its checks and published nothing: its files are checked again (a bad file keeps failing).
    assert validate_landing(s, batch_id="b4").landing_batches == ["b3", "b4"]
    land(tmp_path, "web/a.csv", rows(2))
    ingest_sources(s, as_of=AS_OF, batch_id="b5")
    assert validate_landing(s, batch_id="b5").success


def test_only_landing_files_changed_since_ingest_are_hashed_again(tmp_path, settings, monkeypatch):
    import journeys.ingest as ingest_module

    land_mixed_batch(tmp_path)
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    land(tmp_path, "web/b.csv", rows(4))  # rewritten after ingest: no longer the version this batch read
    real, hashed = ingest_module.file_fingerprint, []

    def fingerprint(path):
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(ingest_module, "file_fingerprint", fingerprint)
    report = validate_landing(s, batch_id="b1")
    assert hashed == ["b.csv"]
    assert [f.file for f in report.files] == ["email/a.jsonl", "email/blank.jsonl", "web/a.csv", "web/c.csv"]
    assert raw_failures(report) == [("raw_web", "2 files web/a.csv .. web/c.csv#0", "hit_id", 4), MIXED_RAW_FAILURES[1]]


def test_handed_rows_give_the_same_results_as_landing_for_links_and_filtered_sources(
    tmp_path, make_settings, monkeypatch
):
    import journeys.ingest as ingest_module
    from journeys.config import RowFilter

    web = WEB.model_copy(update={"keep_rows": [RowFilter(column="action", one_of=["page_view"])]})
    crm = SourceConfig(
        name="crm", kind="links", path="crm/*.csv", format="csv", identifiers={"email": "email", "id": "customer_id"}
    )
    land(tmp_path, "web/a.csv", rows(6, no_id=2) + ",2026-01-15 11:00:00,web,other,/x\n")  # the last one filtered
    land(tmp_path, "web/b.csv", HEADER + "h9,2026-01-15 10:00:00,web,other,/\n")  # every row filtered
    land(tmp_path, "crm/a.csv", "email,id\na@example.com,c1\n\nb@example.com,c2\n")
    s = make_settings(tmp_path, sources=[web, crm], quality=QualityConfig(max_quarantine_share=0.0))
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    volatile = {"id", "validation_id", "ge_load_time", "run_time", "validation_time"}

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in volatile}
        return [strip(v) for v in o] if isinstance(o, list) else o

    def outcome(report):
        return report.suites, raw_failures(report), [(a, b, strip(r.to_json_dict())) for a, b, r in report.results]

    with monkeypatch.context() as m:
        m.setattr(ingest_module, "read_source_rows", lambda *a, **kw: pytest.fail("a landing file was read again"))
        handed = outcome(validate_landing(s, batch_id="b1", batch_rows=3))
    assert handed == outcome(validate_landing(s, batch_id="b1", batch_rows=3))  # no handoff left: landing
    assert handed[0] == {"raw_web": 2, "raw_crm": 1}
    assert handed[1] == [("raw_web", "2 files web/a.csv .. web/b.csv#0", "hit_id", 2)]


@pytest.mark.parametrize("batch_id", ["..", ".", ""])
def test_a_batch_id_naming_no_folder_of_its_own_is_refused_before_anything_is_removed(tmp_path, settings, batch_id):
    land(tmp_path, "web/a.csv", rows(3))
    s = settings(tmp_path)
    ingest_sources(s, as_of=AS_OF, batch_id="b1")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in s.state_dir.rglob("*"))
    # The handoff folder is state/raw-handoff/<batch>: '..' would be the state folder (manifest, held rows).
    with pytest.raises(ValueError, match="batch_id"):
        validate_landing(s, batch_id=batch_id)
    with pytest.raises(ValueError, match="batch_id"):
        ingest_sources(s, as_of=AS_OF, batch_id=batch_id)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in s.state_dir.rglob("*")) == before
