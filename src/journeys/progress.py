"""Progress of long steps: a rich bar when a person watches a terminal, nothing anywhere else.

The flow's steps are already Prefect task runs with their own log lines; what a person at a terminal lacks
is the progress inside a step (landing files read, models built, marts written). Code that loops over such
items wraps the loop in `track`; the command line turns the bar on with `shown` around a run. In the flow
under a scheduler, in tests and in pipes there is no bar and `track` only passes the items through.

Because every long step passes through `track`, it also holds the one test-only pause point: with
`TEST_JOURNEYS_PAUSE_AT=<description>:<n>` (e.g. `publish:2`) and `TEST_JOURNEYS_PAUSE_FD` (a pipe's write
end the process inherited), the `track` that is about to hand out the process's n-th item of that description
(counted over all its `track` calls: a build step may build a single model) writes the point to the pipe and
then blocks for good, so a crash test kills the run at a known step without polling. The names
stay outside `JOURNEYS_*`, which is the config's namespace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")

_bar: Progress | None = None
"""The bar of the command being run, or None: one per process, whichever thread a Prefect task runs in."""


def _console_handlers() -> list[Any]:
    """Logging handlers that print through a rich Console of their own (Prefect's console handler)."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict))]
    found: dict[int, Any] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(getattr(handler, "console", None), Console):
                found[id(handler)] = handler
    return list(found.values())


@contextlib.contextmanager
def shown(console: Console | None = None) -> Iterator[bool]:
    """Show a progress bar on `console` (default: stderr) while the block runs, if it is a terminal."""
    global _bar
    console = console or Console(stderr=True)
    if not console.is_terminal or _bar is not None:
        yield False
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        # Prefect's log lines would cut through the bar; printed through the bar's console they go above it.
        handlers = _console_handlers()
        saved = [h.console for h in handlers]
        for h in handlers:
            h.console = console
        _bar = bar
        try:
            yield True
        finally:
            _bar = None
            for h, c in zip(handlers, saved, strict=True):
                h.console = c


def track(items: Iterable[T], description: str, label: Callable[[T], str] | None = None) -> Iterator[T]:
    """Yield `items`, advancing a bar named `description` (each item's `label` shown beside it) when one is shown."""
    out = _tracked(items, description, label)
    point = os.environ.get("TEST_JOURNEYS_PAUSE_AT", "").rpartition(":")
    return _pausing(out, description, int(point[2])) if point[0] == description else out


def pause_point(description: str) -> None:
    """A moment outside any loop where a crash test may stop the process: `<description>:<n>`, as in `track`."""
    point = os.environ.get("TEST_JOURNEYS_PAUSE_AT", "").rpartition(":")
    if point[0] == description:
        for _ in _pausing([None], description, int(point[2])):
            pass


def _tracked(items: Iterable[T], description: str, label: Callable[[T], str] | None) -> Iterator[T]:
    bar = _bar
    if bar is None:
        yield from items
        return
    todo = list(items)
    task = bar.add_task(description, total=len(todo))
    try:
        for item in todo:
            if label is not None:
                bar.update(task, description=f"{description}: {label(item)}")
            yield item
            bar.advance(task)
            # Drawn now, not at the next tick: steps shorter than a tick would never show.
            bar.refresh()
    finally:
        bar.remove_task(task)


_handed_out: dict[str, int] = {}
_handed_out_lock = threading.Lock()


def _pausing(items: Iterable[T], description: str, n: int) -> Iterator[T]:
    """Yield `items`; before the process's n-th of `description`, say so on the pause pipe and block until killed."""
    for item in items:
        with _handed_out_lock:  # build steps run in threads of one process
            i = _handed_out[description] = _handed_out.get(description, 0) + 1
        if i == n:
            os.write(int(os.environ["TEST_JOURNEYS_PAUSE_FD"]), f"{description}:{n}\n".encode())
            threading.Event().wait()  # until the test's SIGKILL
        yield item
