"""Run the test suite as three pytest processes side by side: `python tools/run_tests.py [pytest args]`.

The suite is dominated by end-to-end flows that wait on Prefect servers, cron minutes, DuckDB checkpoints
and subprocesses as much as they compute, so several processes on a 2-core machine finish well before the
serial time. Each gets its own PREFECT_HOME (an ephemeral server's database must not be shared) and a share
of the work: the Prefect flows (tests/pipelines); the long serial tests (LONG: the day-by-day incremental
test alone is a third of the rest); and everything else. Measured on fresh clones on 2026-12-07: with two
processes (flows and the wheel; the rest) the parts took 560 s, the units last; with the day-by-day test in a
third, 391 s warm and 512 s in a fresh clone, the flows last (500 s), hence the crash test, the wheel and the
ClickHouse property tests moved beside it. (Four processes were slower than two in an earlier layout, before
the flows shared one Prefect server.) The slower linters (sqlfluff, mypy: about a
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
FLOWS = ["tests/pipelines"]
# The long serial tests: a month of nightly builds, the SIGKILLed CLI runs, the wheel and its own venv, and
# the two ClickHouse property tests.
LONG = [
    "tests/journeys/test_incremental.py",
    "tests/pipelines/test_crash.py",
    "tests/test_wheel.py",
    "tests/journeys/test_funnel.py",
    "tests/journeys/test_funnel_options.py",
]


def main(argv: list[str]) -> int:
    """Start every part, wait for all, print their outputs; 0 only when all pass."""
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    bin_dir = Path(sys.executable).parent
    parts = {
        "lint": ["sh", "-c", f"{bin_dir / 'sqlfluff'} lint src/journeys/sql && {bin_dir / 'mypy'}"],
        "flows": [*pytest, *FLOWS, *(f"--ignore={p}" for p in LONG), *argv],
        "long": [*pytest, *LONG, *argv],
        "units": [*pytest, "tests", *(f"--ignore={p}" for p in FLOWS + LONG), *argv],
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
