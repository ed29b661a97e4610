"""The HTML report: written from a published warehouse, self-contained, and drawn by a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime

import pytest

from journeys import db, report

# The small sample has no red point; the copy gets one (plainly made up, its numbers consistent) so the report
# shows and the browser draws that section too. The red_points SQL is tested against real data elsewhere.
_RED_POINT = (
    "insert into red_points by name select 'generic_lifecycle' as stage_model, 1::bigint as red_rank,"
    " 'touchpoint' as unit_type, 2 as stage_index, 'consideration' as stage_name, 'call_centre:call' as unit,"
    " 'call_centre:call' as touchpoint, 'call_centre' as channel, 'customer_service' as owner,"
    " 'dropout' as metric, 40::bigint as n, 30::bigint as k, 0.75 as share, 0.59 as share_low, 0.86 as share_high,"
    " 0.25 as stage_share, 3.0 as lift, 20.0 as excess_over_norm"
)


@pytest.fixture(scope="module")
def site(published, tmp_path_factory):
    """A copy of the published data root (the CLI test rewrites its report), with one red point added."""
    root = tmp_path_factory.mktemp("report") / "root"
    shutil.copytree(published.settings.root, root)
    settings = published.settings.model_copy(update={"data_root": root})
    with db.connect(settings.warehouse_path) as con:
        db.execute(con, _RED_POINT)
    return settings


@pytest.fixture(scope="module")
def written(published, site):
    record = {
        "batch_id": published.context.batch_id,
        "as_of": published.context.as_of.isoformat(),
        "goals": len(site.goals),
        "quality": {
            "success": True,
            "expectations_run": 3,
            "suites": {"grain": 1},
            "warnings": ["a <b> warning"],
            "identity": ["largest customer by events: ok, c_1 holds 3 events", "identifier-type trap: ok"],
        },
    }
    report.write_run_record(site, record)
    return report.write_report(site)


def _expected_charts(settings) -> int:
    with db.connect(settings.warehouse_path, read_only=True) as con:
        funnels = db.fetch(con, "select count(*) from stage_funnel_modes")[0][0]
        dropouts = db.fetch(con, "select count(distinct (stage_model, mode)) from stage_dropout")[0][0]
        models = db.fetch(con, "select count(distinct stage_model) from stage_channel_matrix")[0][0]
        paths = db.fetch(
            con, "select count(distinct stage_model) from journey_paths where path_type = 'stage' and repeats_collapsed"
        )[0][0]
        red = db.fetch(con, "select count(distinct stage_model) from red_points")[0][0]
    # per funnel a funnel chart and Kaplan-Meier curves; per funnel with dropouts a bar; per model a heatmap, a
    # Sankey of its paths where it has any and a chart of its red points where it has any
    return 2 * funnels + dropouts + models + paths + red


def test_report_is_written_for_the_run_and_at_the_stable_path(published, site, written):
    assert written.path == site.root / "reports" / f"journeys-{published.context.batch_id}.html"
    assert written.latest.read_bytes() == written.path.read_bytes()
    assert written.size_bytes == written.path.stat().st_size
    assert written.charts == _expected_charts(site)
    assert written.charts == 2 * 3 + 3 + 2 + 2 + 1  # the expectation above is not vacuous
    assert not list(written.path.parent.glob(".*.tmp"))


def test_report_is_self_contained_and_escapes_text(written):
    page = written.path.read_text(encoding="utf-8")
    # Opens from disk with no network: nothing is fetched (the plotly.js bundle is inline).
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", page, re.I)
    assert "Plotly.newPlot" in page and page.count("Plotly.newPlot") == written.charts
    assert "a &lt;b&gt; warning" in page and "a <b> warning" not in page
    assert "<h3>Identity</h3>\n<ul><li>largest customer by events: ok, c_1 holds 3 events</li>" in page
    headings = re.findall(r"<h2 id='([a-z-]+)'>", page)
    assert headings == ["alerts", "funnel", "red-points", "dropout", "paths", "channels", "accounting", "quality"]


def test_journeys_report_command_rewrites_the_last_published_run(published, site, written, capsys):
    from pipelines.cli import main

    written.latest.unlink()
    assert (
        main(
            [
                "--config",
                str(published.settings.config_dir / "journeys.yaml"),
                "report",
                "--data-root",
                str(site.root),
            ]
        )
        == 0
    )
    assert written.latest.exists()
    assert str(written.path) in capsys.readouterr().out


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_browser_draws_every_chart(site, written, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine: `make browser` (run by `make test`) installs Debian's as root")
    url = written.path.resolve().as_uri()
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=20000",
        "--window-size=1280,1400",
    ]
    dom = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    # Plotly turns each chart's div into a plot container with its SVG layers once it has drawn.
    assert dom.stdout.count('class="plot-container plotly"') == written.charts, dom.stderr[-2000:]
    assert dom.stdout.count('class="main-svg"') >= written.charts
    assert len(re.findall(r'class="(trace|bars|point|heatmaplayer)', dom.stdout)) >= written.charts
    assert 'data-js-errors="0"' in dom.stdout
    assert "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    # The Sankey of each model's paths drew its nodes and links; the red points drew their Wilson intervals.
    with db.connect(site.warehouse_path, read_only=True) as con:
        sankeys = db.fetch(con, "select count(distinct stage_model) from journey_paths where path_type = 'stage'")[0][0]
    assert dom.stdout.count('class="sankey"') == sankeys == 2
    assert dom.stdout.count('class="sankey-node"') > 2 * sankeys
    assert dom.stdout.count('class="sankey-link"') > 2 * sankeys
    assert dom.stdout.count('class="errorbar"') >= 1
    shot = tmp_path / "report.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=180, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a blank page of this size is a few kB


def test_row_accounting_counts_rows_held_back_for_being_later_than_as_of(tmp_path):
    import duckdb

    from journeys.config import MappedField, Settings, SourceConfig
    from journeys.ingest import ingest_sources

    landing = tmp_path / "landing" / "web"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text("id,t\nw1,2026-01-01 10:00:00\nw2,2026-06-01 10:00:00\n")
    src = SourceConfig(
        name="web",
        path="web/*.csv",
        format="csv",
        event_id="id",
        occurred_at="t",
        channel=MappedField(value="web"),
        event_type=MappedField(value="page_view"),
    )
    settings = Settings(data_root=tmp_path, pii_salt="s", sources=[src], memory_limit="512MB", threads=1)
    ingest_sources(settings, as_of=datetime(2026, 2, 1), batch_id="b1")
    with duckdb.connect() as con:
        html = report._accounting_section(con, settings, "b1")
    assert "held back (later than as_of)" in html
    assert ">yes</td>" in html and ">NO</td>" not in html  # read 2 = loaded 1 + held 1: balanced
    assert "1 rows later than their run's as_of + max_future are held back in state/held/" in html


def test_alerts_come_first_and_say_which_goals_were_missed(written):
    page = written.path.read_text(encoding="utf-8")
    assert page.index("<h2 id='alerts'>") < page.index("<h2 id='funnel'>")
    alerts = page[page.index("<h2 id='alerts'>") : page.index("<h2 id='funnel'>")]
    # The sample misses three of the demo config's five goals (none has a previous run).
    assert "<p class='bad'>3 of 5 goals missed.</p>" in alerts
    for goal in ("consideration_converts", "delivery_leads_on", "surveys_are_positive"):
        assert f">{goal}</td>" in alerts
    assert "store_pays" not in alerts
    assert ">≥ 60.0%</td><td class='txt'>missed</td>" in alerts
    assert ">previous run</th><th>change</th>" in alerts


def test_alerts_tell_no_goal_missed_from_no_goal_configured(published):
    import duckdb

    with duckdb.connect() as con:
        assert "no <code>alerts</code> table" in report._alerts_section(con, set(), 2)
        con.execute(f"attach '{published.settings.warehouse_path}' as pub (read_only)")
        con.execute("create table alerts as select * from pub.alerts where false")
        assert "<p class='ok'>No goal missed: all 2 goals met.</p>" in report._alerts_section(con, {"alerts"}, 2)
        assert "<p class='none'>No goals configured.</p>" in report._alerts_section(con, {"alerts"}, 0)
        con.execute(
            "insert into alerts select * replace (0.5 as metric_value, 0.6 as previous_value,"
            " -0.1 as change_since_previous, true as missed_in_previous) from pub.alerts"
            " where goal_name = 'consideration_converts'"
        )
        html = report._alerts_section(con, {"alerts"}, 2)
    assert "<p class='bad'>1 of 2 goals missed.</p>" in html
    assert ">50.0%</td>" in html and ">60.0%</td>" in html and ">-10.0 pp</td>" in html and ">ongoing</td>" in html


def test_path_links_carry_every_top_path_from_its_first_step_to_its_outcome(site):
    with db.connect(site.warehouse_path, read_only=True) as con:
        links = report._path_links(con)
        paths = db.fetch(
            con,
            "select stage_model, sum(journeys), sum(journeys_converted), count(*) from journey_paths"
            " where path_type = 'stage' and repeats_collapsed and path_rank <= $top group by all order by all",
            {"top": report.TOP_PATHS},
        )
    assert len(paths) == 2
    for model, journeys, converted, n_paths in paths:
        mine = [m for m in links if m["stage_model"] == model]
        assert n_paths == report.TOP_PATHS
        # Every journey of a kept path leaves step 1 once and reaches exactly one outcome.
        assert sum(m["journeys"] for m in mine if m["step"] == 1) == journeys
        assert sum(m["journeys"] for m in mine if m["outcome"]) == journeys
        assert sum(m["journeys"] for m in mine if m["outcome"] == "converted") == converted
        # A link goes to the next step or to an outcome, never both or neither.
        assert all((m["to_name"] is None) == (m["outcome"] is not None) for m in mine)
        assert all(m["journeys"] > 0 for m in mine)


def test_red_points_show_owner_share_norm_lift_and_journeys_lost(written):
    page = written.path.read_text(encoding="utf-8")
    red = page[page.index("<h2 id='red-points'>") : page.index("<h2 id='dropout'>")]
    cells = re.findall(r"<td class='\w+'>([^<]*)</td>", red)
    expected = ["1", "consideration", "touchpoint", "call_centre:call", "call_centre", "customer_service"]
    assert cells[:6] == expected
    assert cells[6:] == ["dropout", "40", "30", "75.0%", "25.0%", "3.00", "20.00"]
    assert "generic_lifecycle-red" in red and "cxc_consumer_cycle-red" not in red
    assert "No red point: no touchpoint or cell is significantly worse than its stage." in red  # the other model


def test_quality_section_links_data_docs_only_when_the_run_recorded_them(tmp_path):
    quality = {"quality": {"success": True, "expectations_run": 1, "suites": {"grain": 1}}}
    assert "Data Docs" not in report._quality_section(quality, tmp_path)
    assert "Data Docs" not in report._quality_section({}, tmp_path)
    html = report._quality_section({**quality, "data_docs": "gx docs/index.html"}, tmp_path)
    assert "Great Expectations Data Docs: <a href='gx%20docs/index.html'>gx docs/index.html</a>" in html
