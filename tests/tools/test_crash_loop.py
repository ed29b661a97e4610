"""tools/crash_loop.py's checks on hand-made marts folders: a mixed or partial set is caught, a complete one is not.

The loop itself (kills of real runs, minutes) is `make crash-loop`, not part of the suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tools import crash_loop


def write_set(marts: Path, batch: str, tables: dict[str, list[int]], says: str | None = None) -> None:
    """Write the set `.runs/<batch>/`: one Parquet file per table, its key-value batch id `says` (default: batch)."""
    d = marts / ".runs" / batch
    d.mkdir(parents=True)
    for t, values in tables.items():
        table = pa.table({"v": values, "batch_id": [batch] * len(values)})
        pq.write_table(table.replace_schema_metadata({"journeys.batch_id": says or batch}), d / f"{t}.parquet")


def publish(marts: Path, batch: str, tables: list[str]) -> None:
    """Point `.current` at `batch` and each `<table>/<table>.parquet` through it, as publish_marts does."""
    (marts / ".current").unlink(missing_ok=True)
    (marts / ".current").symlink_to(f".runs/{batch}")
    for t in tables:
        (marts / t).mkdir(exist_ok=True)
        (marts / t / f"{t}.parquet").unlink(missing_ok=True)
        (marts / t / f"{t}.parquet").symlink_to(f"../.current/{t}.parquet")


@pytest.fixture
def marts(tmp_path: Path) -> Path:
    """A marts folder with two sets, b1 published (tables a and b), b0 the earlier one."""
    m = tmp_path / "marts"
    write_set(m, "b0", {"a": [1], "b": [2]})
    write_set(m, "b1", {"a": [1, 3], "b": [2]})
    publish(m, "b1", ["a", "b"])
    return m


def test_a_complete_set_names_its_batch(marts: Path, tmp_path: Path) -> None:
    assert crash_loop.published_batch(marts, ["a", "b"]) == "b1"
    assert crash_loop.published_batch(tmp_path / "nothing", ["a", "b"]) is None


def test_a_link_into_another_set_is_a_mixed_set(marts: Path) -> None:
    (marts / "b" / "b.parquet").unlink()
    (marts / "b" / "b.parquet").symlink_to("../.runs/b0/b.parquet")
    with pytest.raises(AssertionError, match=r"b points at .*outside the current set b1"):
        crash_loop.published_batch(marts, ["a", "b"])


def test_a_missing_table_or_a_file_of_another_run_is_caught(marts: Path) -> None:
    with pytest.raises(AssertionError, match=r"set b1 lacks \['c'\]"):
        crash_loop.published_batch(marts, ["a", "b", "c"])
    write_set(marts, "b2", {"a": [1], "b": [2]}, says="b0")
    publish(marts, "b2", ["a", "b"])
    with pytest.raises(AssertionError, match="a says batch 'b0', the set is b2"):
        crash_loop.published_batch(marts, ["a", "b"])


def test_a_truncated_file_is_caught(marts: Path) -> None:
    f = marts / ".runs" / "b1" / "a.parquet"
    os.truncate(f, f.stat().st_size // 2)
    with pytest.raises(pa.ArrowInvalid, match="Parquet"):
        crash_loop.published_batch(marts, ["a", "b"])


def test_differences_ignore_the_run_id_and_count_every_other_row(marts: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_set(other, "b9", {"a": [1, 3], "b": [2, 2]})
    publish(other, "b9", ["a", "b"])
    # a: the same rows under another batch id; b: one row more (a duplicate counts)
    assert crash_loop.mart_differences(other, marts, ["a", "b"]) == {"b": (1, 0)}
