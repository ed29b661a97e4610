"""Progress bars: shown on a terminal around a run, absent elsewhere; Prefect's log lines print above them."""

from __future__ import annotations

import io
import logging
import re

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
