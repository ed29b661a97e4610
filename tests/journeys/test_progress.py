"""Progress bars: shown on a terminal around a run, absent elsewhere; Prefect's log lines print above them."""

from __future__ import annotations

import io
import logging
import os
import re
import select
import signal
import subprocess
import sys

from rich.console import Console

from journeys import progress


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100), out


def plain(out: io.StringIO) -> str:
    """What a person reads: the terminal output without its colour and cursor codes."""
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())


def test_track_passes_items_through_when_no_bar_is_shown():
    out = io.StringIO()
    with progress.shown(Console(file=out, force_terminal=False)) as on:
        assert not on
        assert list(progress.track(iter([3, 1, 2]), "build")) == [3, 1, 2]
    assert out.getvalue() == ""
    assert list(progress.track(range(3), "build")) == [0, 1, 2]


def test_a_terminal_shows_each_step_and_its_count():
    console, out = terminal()
    with progress.shown(console) as on:
        assert on
        seen = [n for n in progress.track(["ingest", "identity"], "build", label=str)]
        # One bar at a time: a nested `shown` leaves the outer bar in charge.
        with progress.shown(console) as nested:
            assert not nested
    assert seen == ["ingest", "identity"]
    text = plain(out)
    assert "build: identity" in text and "2/2" in text
    assert progress._bar is None


def test_prefect_log_lines_print_through_the_bar_and_get_their_console_back():
    from prefect.logging.handlers import PrefectConsoleHandler

    handler = PrefectConsoleHandler()
    logger = logging.getLogger("journeys-test-progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    own = handler.console
    console, out = terminal()
    try:
        with progress.shown(console):
            assert handler.console is console
            logger.info("ingest: read=3")
        assert handler.console is own
    finally:
        logger.removeHandler(handler)
    assert "ingest: read=3" in plain(out)


def test_the_pause_point_says_where_it_stopped_and_hands_out_nothing_after(tmp_path):
    # The crash test's hook, in a process of its own: it blocks for good, so only a kill ends it.
    r, w = os.pipe()
    # Counted over every track of the description: a build step may build a single model.
    code = (
        "from journeys import progress\n"
        "for step in range(2):\n"
        "    for i in progress.track(range(2), 'build'):\n"
        "        print(step, i, flush=True)\n"
    )
    env = {**os.environ, "TEST_JOURNEYS_PAUSE_AT": "build:3", "TEST_JOURNEYS_PAUSE_FD": str(w)}
    out = tmp_path / "out.txt"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=fh, pass_fds=(w,))
    os.close(w)
    try:
        assert select.select([r], [], [], 60)[0], "the process never reached its pause point"
        assert os.read(r, 100) == b"build:3\n"
        assert proc.poll() is None  # blocked, not finished
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.close(r)
    assert out.read_text() == "0 0\n0 1\n"
