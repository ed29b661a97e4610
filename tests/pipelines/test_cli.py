"""The `journeys` command: where --config goes, clear errors before Prefect starts, a demo that never deletes."""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
from pathlib import Path

import pytest

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


@pytest.fixture
def no_flow(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the flow must not start")

    monkeypatch.setattr(pipelines.nightly, "nightly", refuse)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def user_project(tmp_path: Path) -> Path:
    (tmp_path / "journeys.yaml").write_text(USER_CONFIG)
    landing = tmp_path / "data" / "landing" / "web"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text("id,t\nw1,2026-01-01 10:00:00\n")
    (tmp_path / "data" / "notes.txt").write_text("the user's own file\n")
    return tmp_path / "data"


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


def test_dask_options_are_checked_with_the_config_before_prefect(tmp_path, capsys, no_flow):
    config = tmp_path / "journeys.yaml"
    config.write_text(USER_CONFIG)
    assert cli.main(["run", "--config", str(config), "--dask-workers", "4"]) == 2
    assert "dask_workers: used only with executor: dask (executor is local)" in capsys.readouterr().err
    argv = [
        "run",
        "--config",
        str(config),
        "--executor",
        "dask",
        "--dask-address",
        "tcp://s:8786",
        "--dask-workers",
        "4",
    ]
    assert cli.main(argv) == 2
    assert "dask_workers: sizes only the local cluster" in capsys.readouterr().err


def test_a_suite_file_gx_cannot_read_exits_2_naming_it_before_prefect(tmp_path, capsys, no_flow):
    (tmp_path / "journeys.yaml").write_text(USER_CONFIG)
    suite = tmp_path / "data" / "gx" / "expectations" / "customers.json"
    suite.parent.mkdir(parents=True)
    typo = {"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "n_events", "max_value": 9}}
    suite.write_text(json.dumps({"name": "customers", "expectations": [typo]}))
    assert cli.main(["run", "--config", str(tmp_path / "journeys.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{suite}: expectations[0] (expect_column_values_to_be_betwen): " in err and "not found" in err


def test_missing_data_root_fails_clearly(tmp_path, capsys, no_flow):
    (tmp_path / "journeys.yaml").write_text(USER_CONFIG)
    config = str(tmp_path / "journeys.yaml")
    assert cli.main(["run", "--config", config]) == 2
    assert f"data_root: {tmp_path / 'data'} does not exist" in capsys.readouterr().err
    assert cli.main(["run", "--config", config, "--data-root", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"--data-root {tmp_path / 'nope'}: no such folder"
    assert not (tmp_path / "data").exists() and not (tmp_path / "nope").exists()


@pytest.mark.slow
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


def test_demo_folder_is_created_marked_and_only_marked_folders_are_rebuilt(tmp_path):
    folder = cli.demo_folder(tmp_path / "demo")
    assert (folder / cli.DEMO_MARKER).is_file()
    (folder / "lake").mkdir()
    assert sorted(p.name for p in cli.demo_folder(folder).iterdir()) == [cli.DEMO_MARKER]  # emptied
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.csv").write_text("x\n")
    with pytest.raises(cli.UsageError, match="was not made by `journeys demo`"):
        cli.demo_folder(foreign)
    assert (foreign / "keep.csv").read_text() == "x\n"
    (tmp_path / "empty").mkdir()
    assert (cli.demo_folder(tmp_path / "empty") / cli.DEMO_MARKER).is_file()


@pytest.mark.parametrize("folder", ["data", "data/demo", "."])
def test_demo_refuses_a_folder_overlapping_the_configured_data_root(tmp_path, monkeypatch, capsys, no_flow, folder):
    root = user_project(tmp_path)
    before = tree_digest(root)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--events", "500", "--folder", folder]) == 2
    assert "overlaps the data root" in capsys.readouterr().err
    assert tree_digest(root) == before


@pytest.mark.slow
def test_demo_next_to_a_config_leaves_its_data_root_byte_identical(tmp_path, monkeypatch, capsys, harness):
    root = user_project(tmp_path)
    (root / "lake").mkdir()
    (root / "lake" / "part.parquet").write_bytes(b"PAR1 not really")
    before = tree_digest(root)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--events", "1500", "--folder", "demo-out"]) == 0
    assert tree_digest(root) == before
    out = tmp_path / "demo-out"
    assert (out / cli.DEMO_MARKER).is_file()
    assert (out / "marts" / "journeys" / "journeys.parquet").is_file()
    assert "stage funnel" in capsys.readouterr().out


RESET_CONFIG = """
data_root: data
pii_salt: s
sources:
  - name: web
    path: web/*.csv
    format: csv
    event_id: id
    occurred_at: t
    channel: {value: web}
    event_type: {column: action, map: {view: VIEW, buy: BUY}}
    identifiers: {email: email}
"""
RESET_ROWS = (
    "id,t,action,email\n"
    "w1,2026-01-01 10:00:00,view,a@example.com\n"
    "w2,2026-01-02 10:00:00,buy,a@example.com\n"
    "w3,2026-01-03 10:00:00,view,b@example.com\n"
    "w4,2026-01-05 10:00:00,view,c@example.com\n"
    "w5,2026-01-06 10:00:00,buy,c@example.com\n"
    "w6,2026-03-01 10:00:00,buy,b@example.com\n"  # later than the runs' as_of: held back
)


def reset_project(root: Path, view: str, buy: str) -> Path:
    root.mkdir()
    (root / "journeys.yaml").write_text(RESET_CONFIG.replace("VIEW", view).replace("BUY", buy))
    (root / "data" / "landing" / "web").mkdir(parents=True)
    (root / "data" / "landing" / "web" / "a.csv").write_text(RESET_ROWS)
    return root / "journeys.yaml"


def mart_rows(data: Path) -> dict[str, list]:
    import duckdb

    out = {}
    with duckdb.connect() as con:
        for p in sorted((data / "marts").glob("*/*.parquet")):
            out[p.parent.name] = con.sql("select * from read_parquet($p) order by all", params={"p": str(p)}).fetchall()
    return out


@pytest.mark.slow
def test_reset_after_a_bad_mapping_then_a_run_gives_the_marts_of_a_first_run(tmp_path, capsys, harness):
    as_of = ["--as-of", "2026-02-01T00:00:00"]
    first = reset_project(tmp_path / "first", "page_view", "purchase")
    assert cli.main(["run", "--config", str(first), *as_of]) == 0

    config = reset_project(tmp_path / "again", "purchase", "page_view")  # view and buy swapped by mistake
    assert cli.main(["run", "--config", str(config), *as_of]) == 0
    data = config.parent / "data"
    assert mart_rows(data) != mart_rows(first.parent / "data")
    config.write_text(RESET_CONFIG.replace("VIEW", "page_view").replace("BUY", "purchase"))  # the fix
    (data / "notes.txt").write_text("the user's own file\n")
    landing = tree_digest(data / "landing")
    capsys.readouterr()
    assert cli.main(["reset", "--config", str(config), *as_of]) == 0
    out = capsys.readouterr().out
    assert "read=6 = loaded 5 + quarantined 0 + duplicates 0 + held back 1" in out
    assert tree_digest(data / "landing") == landing and (data / "notes.txt").is_file()
    assert cli.main(["run", "--config", str(config), *as_of]) == 0
    assert mart_rows(data) == mart_rows(first.parent / "data")
    assert "1 rows later than as_of + max_future wait in state/held/" in capsys.readouterr().out

    # A later run loads the held row; the run history says which run held it back and which loaded it.
    assert cli.main(["run", "--config", str(config), "--as-of", "2026-04-01T00:00:00"]) == 0
    assert "held back: 1 earlier held rows loaded now; 0 rows" in capsys.readouterr().out
    import duckdb

    with duckdb.connect(str(data / "warehouse" / "journeys.duckdb"), read_only=True) as con:
        # A plain client, as README says: the lake views are relative to the warehouse's folder.
        con.execute("set file_search_path = ?", [str(data / "warehouse")])
        history = con.sql("select rows_read, rows_held, rows_released from runs order by published_at").fetchall()
        assert con.sql("select count(*) from events where event_id = 'web:w6'").fetchall() == [(1,)]
    assert history == [(6, 1, 0), (0, 0, 0), (0, 0, 1)]


def test_every_option_has_help_and_every_command_examples_that_parse():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.EXAMPLES)
    for name, command in sub.choices.items():
        silent = [a.dest for a in command._actions if a.option_strings and not a.help]
        assert not silent, f"journeys {name}: options without help: {silent}"
        assert "examples:" in command.format_help()
        for line in cli.EXAMPLES[name]:
            words = shlex.split(line.split("&&")[0].split("#")[0])
            if words[0] != "journeys":
                continue
            assert parser.parse_args(words[1:]).command == name, line
