"""Run the test suite as three pytest processes side by side: `python tools/run_tests.py [pytest args]`.

The suite is dominated by end-to-end flows that wait on Prefect servers, cron minutes, DuckDB checkpoints
and subprocesses as much as they compute, so several processes on a 2-core machine finish well before the
serial time. Each gets its own PREFECT_HOME (an ephemeral server's database must not be shared) and a share
of the work: the Prefect flows (tests/pipelines, the wheel); the day-by-day incremental test (a month of
nightly builds, each compared with a full rebuild: a third of the rest by itself); and everything else.
Measured on a fresh clone on 2026-12-07: with two processes (the day-by-day test among the units) the parts
took 560 s, the units the last to finish; with three, 391 s (four processes were slower than two in an
earlier layout, before the flows shared one Prefect server). The slower linters (sqlfluff, mypy: about a
minute of CPU, mostly while the flows wait) run beside them as a fourth part instead of before them. Exit
status is non-zero when any part fails; each one's output is printed whole, one after the other.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOWS = ["tests/pipelines", "tests/test_wheel.py"]
DAY_BY_DAY = ["tests/journeys/test_incremental.py"]


def main(argv: list[str]) -> int:
    """Start every part, wait for all, print their outputs; 0 only when all pass."""
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    bin_dir = Path(sys.executable).parent
    parts = {
        "lint": ["sh", "-c", f"{bin_dir / 'sqlfluff'} lint src/journeys/sql && {bin_dir / 'mypy'}"],
        "flows": [*pytest, *FLOWS, *argv],
        "day-by-day": [*pytest, *DAY_BY_DAY, *argv],
        "units": [*pytest, "tests", *(f"--ignore={p}" for p in FLOWS + DAY_BY_DAY), *argv],
    }
    procs = {}
    started = time.monotonic()
    status = 0
    with contextlib.ExitStack() as stack:
        for name, cmd in parts.items():
            env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix=f"journeys-prefect-{name}-")}
            log = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
            procs[name] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        for name, (proc, log) in procs.items():
            code = proc.wait()
            log.seek(0)
            print(f"===== {name}: exit {code} =====")
            sys.stdout.write(log.read())
            status = status or code
    print(f"===== all parts done in {time.monotonic() - started:.0f} s: {'passed' if status == 0 else 'FAILED'}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
