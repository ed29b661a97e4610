"""The package runs from a wheel: SQL models, stage models and GX suites ship as package data."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

# End-to-end runs: `make test-fast` leaves them to `make test`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("journeys-*.whl")
    return path


def test_wheel_carries_every_sql_and_stage_model_and_suite(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sql = {f"journeys/sql/{p.parent.name}/{p.name}" for p in (REPO / "src/journeys/sql").glob("*/*.sql")}
    stage_models = {f"journeys/stage_models/{p.name}" for p in (REPO / "src/journeys/stage_models").glob("*.yaml")}
    suites = {f"journeys/expectations/{p.name}" for p in (REPO / "src/journeys/expectations").glob("*.json")}
    assert len(sql) > 40 and len(suites) >= 6
    assert sql <= names
    assert stage_models <= names
    assert suites <= names


def test_flow_runs_from_the_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    # Without PYTHONPATH: a checkout on it makes pip see `journeys` as installed already and skip the wheel.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
        env=clean,
    )
    # The wheel's dependencies come from the project's venv; its editable `journeys` must not: a path
    # added by a .pth file is not a site dir, so the editable finder's own .pth there is never run.
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOURNEYS_", "PYTHONPATH"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    work = tmp_path / "work"
    work.mkdir()
    located = subprocess.run(
        [str(py), "-c", "import journeys.models as m; print(m.shipped_models_dir())"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert located.returncode == 0, located.stderr[-3000:]
    where = located.stdout.strip()
    assert where.startswith(str(venv)), where
    config = work / "journeys.yaml"
    config.write_text((REPO / "journeys.yaml").read_text().replace("data_root: data/demo", "data_root: root"))
    journeys = str(venv / "bin" / "journeys")
    subprocess.run(
        [journeys, "generate", "--events", "1500", "--data-root", "root"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    run = subprocess.run(
        [journeys, "--config", str(config), "run", "--as-of", "2026-11-01T00:00:00"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "stage funnel" in run.stdout
    marts = work / "root" / "marts"
    assert (marts / "journeys" / "journeys.parquet").stat().st_size > 0
    assert (work / "root" / "warehouse" / "journeys.duckdb").exists()
