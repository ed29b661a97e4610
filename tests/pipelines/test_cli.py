"""The `journeys` command: where --config goes, clear errors before Prefect starts, a demo that never deletes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

import pipelines.nightly
from pipelines import cli

USER_CONFIG = """
data_root: data
pii_salt: s
sources:
  - name: web
    path: web/*.csv
    format: csv
    event_id: id
    occurred_at: t
    channel: {value: web}
    event_type: {value: page_view}
"""


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def no_flow(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the flow must not start")

    monkeypatch.setattr(pipelines.nightly, "nightly", refuse)


@pytest.mark.parametrize(
    ("argv", "config"),
    [
        (["run", "--config", "x.yaml"], "x.yaml"),
        (["--config", "x.yaml", "run"], "x.yaml"),
        (["--config", "a.yaml", "run", "--config", "b.yaml"], "b.yaml"),
        (["run"], "journeys.yaml"),
        (["query", "select 1", "--config", "x.yaml"], "x.yaml"),
        (["evaluate-identity", "--config", "x.yaml"], "x.yaml"),
    ],
)
def test_config_is_accepted_before_and_after_the_subcommand(argv, config):
    assert cli.build_parser().parse_args(argv).config == config


def test_config_error_exits_2_with_one_line_per_problem_before_prefect(tmp_path, capsys, no_flow):
    bad = tmp_path / "journeys.yaml"
    bad.write_text("session_timeout: 30 days\nsources: [{name: web, path: w/*, format: xlsx}]\n")
    assert cli.main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{bad}: session_timeout: expected a duration such as 30d, 36h, 90m, 45s or 2w, got '30 days'" in err
    assert f"{bad}: sources[0].format: Input should be 'csv', 'jsonl' or 'parquet', got 'xlsx'" in err
    assert all(line.startswith(f"{bad}: ") for line in err)


def test_missing_data_root_fails_clearly(tmp_path, capsys, no_flow):
    (tmp_path / "journeys.yaml").write_text(USER_CONFIG)
    config = str(tmp_path / "journeys.yaml")
    assert cli.main(["run", "--config", config]) == 2
    assert f"data_root: {tmp_path / 'data'} does not exist" in capsys.readouterr().err
    assert cli.main(["run", "--config", config, "--data-root", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"--data-root {tmp_path / 'nope'}: no such folder"
    assert not (tmp_path / "data").exists() and not (tmp_path / "nope").exists()


def test_run_that_loads_nothing_fails_instead_of_publishing_empty_marts(tmp_path, capsys, harness):
    root = tmp_path / "data"
    (root / "landing" / "web").mkdir(parents=True)
    (root / "landing" / "web" / "a.txt").write_text("not matched by web/*.csv\n")
    (tmp_path / "journeys.yaml").write_text(USER_CONFIG)
    assert cli.main(["run", "--config", str(tmp_path / "journeys.yaml"), "--as-of", "2026-02-01T00:00:00"]) == 1
    err = capsys.readouterr().err
    assert f"journeys run: nothing to publish: the lake of data root {root} holds no events" in err
    assert "web 'web/*.csv': 0 file(s)" in err
    assert not (root / "marts").exists() and not (root / "warehouse" / "journeys.duckdb").exists()
