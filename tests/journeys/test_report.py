"""The HTML report: written from a published warehouse, self-contained, and drawn by a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime

import pytest

from journeys import db, report


@pytest.fixture(scope="module")
def written(published):
    record = {
        "batch_id": published.context.batch_id,
        "as_of": published.context.as_of.isoformat(),
        "quality": {
            "success": True,
            "expectations_run": 3,
            "suites": {"grain": 1},
            "warnings": ["a <b> warning"],
            "identity": ["largest customer by events: ok, c_1 holds 3 events", "identifier-type trap: ok"],
        },
    }
    report.write_run_record(published.settings, record)
    return report.write_report(published.settings)


def _expected_charts(settings) -> int:
    with db.connect(settings.warehouse_path, read_only=True) as con:
        funnels = db.fetch(con, "select count(*) from stage_funnel_modes")[0][0]
        dropouts = db.fetch(con, "select count(distinct (stage_model, mode)) from stage_dropout")[0][0]
        models = db.fetch(con, "select count(distinct stage_model) from stage_channel_matrix")[0][0]
    # per funnel a funnel chart and Kaplan-Meier curves; per funnel with dropouts a bar; per model a heatmap
    return 2 * funnels + dropouts + models


def test_report_is_written_for_the_run_and_at_the_stable_path(published, written):
    assert written.path == published.settings.root / "reports" / f"journeys-{published.context.batch_id}.html"
    assert written.latest.read_bytes() == written.path.read_bytes()
    assert written.size_bytes == written.path.stat().st_size
    assert written.charts == _expected_charts(published.settings)
    assert not list(written.path.parent.glob(".*.tmp"))


def test_report_is_self_contained_and_escapes_text(written):
    page = written.path.read_text(encoding="utf-8")
    # Opens from disk with no network: nothing is fetched (the plotly.js bundle is inline).
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", page, re.I)
    assert "Plotly.newPlot" in page and page.count("Plotly.newPlot") == written.charts
    assert "a &lt;b&gt; warning" in page and "a <b> warning" not in page
    assert "<h3>Identity</h3>\n<ul><li>largest customer by events: ok, c_1 holds 3 events</li>" in page
    for heading in ("Stage funnel", "Where customers are lost", "Stage x channel", "Row accounting", "Data quality"):
        assert heading in page


def test_journeys_report_command_rewrites_the_last_published_run(published, written, capsys):
    from pipelines.cli import main

    written.latest.unlink()
    assert (
        main(
            [
                "--config",
                str(published.settings.config_dir / "journeys.yaml"),
                "report",
                "--data-root",
                str(published.settings.root),
            ]
        )
        == 0
    )
    assert written.latest.exists()
    assert str(written.path) in capsys.readouterr().out


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_browser_draws_every_chart(written, tmp_path):
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
