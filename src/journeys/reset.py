"""`journeys reset`: re-ingest every landing file from scratch into a new lake, then swap it in atomically.

The new lake, quarantine, manifest and held-back rows are built in `<root>/.reset-build/` (its `landing`
is a link to the real landing folder, which is only read). Renaming that folder to `.reset-ready/` is the
commit point: a reset killed before it leaves the old lake as it was (the next reset or run removes the
leftover); one killed after it is completed by the next reset or ingest, which moves the old items aside
and the new ones in, one rename each, before reading anything. Only the items in RESET_ITEMS are replaced:
landing files, user files, the published marts and warehouse, the identity state and the run history stay.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from journeys import ingest, publish
from journeys.config import Settings

RESET_ITEMS: tuple[str, ...] = (
    "lake/events",
    "lake/quarantine",
    "state/ingest_manifest.parquet",
    "state/landing_pending.json",
    "state/held",
)
"""What ingest writes and a reset replaces, relative to the data root; nothing else is deleted."""

_ITEMS_FILE = ".reset-items.json"


class ResetRefusedError(RuntimeError):
    """A reset that would replace the lake with nothing (no landing file, or no row kept): nothing was changed."""


def _build_dir(settings: Settings) -> Path:
    return settings.root / ".reset-build"


def _ready_dir(settings: Settings) -> Path:
    return settings.root / ".reset-ready"


def _old_dir(settings: Settings) -> Path:
    return settings.root / ".reset-old"


def _done_dir(settings: Settings) -> Path:
    return settings.root / ".reset-done"


def finish_reset(settings: Settings) -> bool:
    """Complete a reset that was killed after its new lake was ready (idempotent); True when one was completed."""
    root, ready, old, done = settings.root, _ready_dir(settings), _old_dir(settings), _done_dir(settings)
    completed = False
    if ready.is_dir():
        # Items the new build has: one missing from ready/ was already moved in by the killed attempt.
        new_items = set(json.loads((ready / _ITEMS_FILE).read_text(encoding="utf-8")))
        for item in RESET_ITEMS:
            new, live, aside = ready / item, root / item, old / item
            if item in new_items and not new.exists():
                continue
            if live.exists():
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.replace(live, aside)
            if item in new_items:
                live.parent.mkdir(parents=True, exist_ok=True)
                os.replace(new, live)
        # One rename marks the swap finished; only then is anything deleted.
        os.replace(ready, done)
        completed = True
    for leftover in (done, old, _build_dir(settings)):
        shutil.rmtree(leftover, ignore_errors=True)
    return completed


def reset_lake(
    settings: Settings, *, as_of: datetime, batch_id: str, lock_wait_s: float = 3600.0
) -> ingest.IngestReport:
    """Re-ingest every landing file into a new lake beside the old one and swap it in, under the run lock."""
    with publish.run_lock(settings, wait_s=lock_wait_s):
        finish_reset(settings)
        files = ingest.landing_files(settings)
        if not files:
            raise ResetRefusedError(
                f"reset refused: no landing file under {settings.landing_dir} matches a source's path glob;"
                " the lake was left as it was"
            )
        build = _build_dir(settings)
        build.mkdir(parents=True)
        (build / "landing").symlink_to(settings.landing_dir, target_is_directory=True)
        fresh = settings.model_copy(update={"data_root": build})
        try:
            report = ingest.ingest_sources(fresh, as_of=as_of, batch_id=batch_id)
            if not any(fresh.events_dir.glob("event_date=*/*.parquet")) and not report.still_held:
                raise ResetRefusedError(
                    f"reset refused: re-ingesting {len(files)} landing file(s) kept no row (read {report.read},"
                    f" quarantined {report.quarantined}); check the mapping; the lake was left as it was"
                )
            (build / "landing").unlink()
            have = [item for item in RESET_ITEMS if (build / item).exists()]
            (build / _ITEMS_FILE).write_text(json.dumps(have), encoding="utf-8")
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        # The commit point: from here on the new lake is the data root's, even if the process dies.
        os.replace(build, _ready_dir(settings))
        finish_reset(settings)
    return report
