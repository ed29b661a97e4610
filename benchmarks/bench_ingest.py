"""Ingest throughput for CSV and Parquet: `python benchmarks/bench_ingest.py` (1M rows; `--rows 10000000`).

Writes one synthetic landing file per format once (cached under benchmarks/out/), ingests each into a
fresh data root in a child process, and prints rows/s and the child's peak resident memory (RSS). One
process per format so the peak RSS of one does not hide the other.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
FORMATS = ("csv", "parquet")


def source_config(fmt: str) -> dict:
    """The mapping of the benchmark source: a web-analytics export with identifiers and revenue."""
    return {
        "name": f"bench_{fmt}",
        "path": f"bench_{fmt}/*.{fmt}",
        "format": fmt,
        "timezone": "Europe/Berlin",
        "timestamp_format": "%Y-%m-%d %H:%M:%S",
        "event_id": "hit_id",
        "occurred_at": "hit_time",
        "channel": {
            "column": "platform",
            "map": {"desktop": "web", "ios": "app", "android": "app", "Mobile Web": "web"},
        },
        "event_type": {"column": "action", "map": {"pageview": "page_view", "order": "purchase"}},
        "identifiers": {"client_id": "cookie_id", "email": "email", "phone": "phone"},
        "revenue": "order_value",
    }


def landing_file(fmt: str, rows: int) -> Path:
    """A cached landing file of `rows` rows (0.5% malformed, 1% duplicate ids), written with DuckDB."""
    import duckdb

    path = HERE / "out" / "ingest" / f"landing-v2-{rows}" / f"bench_{fmt}" / f"events.{fmt}"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    select = """
        select
            'h' || (case when i % 100 = 7 then i - 1 else i end) as hit_id,
            case when i % 200 = 3 then '2026-13-45 25:61:00'
                 else strftime(timestamp '2026-01-01' + to_seconds((i * 7919) % 25000000), '%Y-%m-%d %H:%M:%S')
            end as hit_time,
            ['desktop', 'ios', 'android', 'Mobile Web'][1 + i % 4] as platform,
            ['pageview', 'order', 'Add To Cart', 'search'][1 + (i // 7) % 4] as action,
            'c' || (i // 5) as client_id,
            case when i % 3 = 0 then 'User' || (i // 11) || '@Example.com' end as email,
            -- Valid NANP numbers (exchange 200-999): invalid ones are quarantined since phones go through
            -- libphonenumber, and the figures are about throughput, not rejects.
            case when i % 5 = 0 then '+1 (212) ' || (200 + (i // 13) % 800)::varchar || '-'
                || lpad(((i // 10400) % 10000)::varchar, 4, '0') end as phone,
            case when (i // 7) % 4 = 1 then ((i % 9000) / 100.0)::varchar end as order_value,
            '/page/' || (i % 5000) as page,
            'campaign_' || (i % 37) as utm_campaign
        from range($rows) as t(i)
    """
    with duckdb.connect() as con:
        rel = con.sql(select, params={"rows": rows})
        if fmt == "csv":
            rel.write_csv(str(tmp), header=True)
        else:
            rel.write_parquet(str(tmp))
    tmp.rename(path)
    return path


def run_one(fmt: str, rows: int, memory_limit: str, threads: int) -> dict:
    """Ingest one format's file into a fresh data root (runs in the child process)."""
    from journeys.config import Settings
    from journeys.ingest import ingest_sources

    src = landing_file(fmt, rows)
    root = HERE / "out" / "ingest" / f"run-{fmt}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "landing").mkdir(parents=True)
    (root / "landing" / src.parent.name).symlink_to(src.parent)
    settings = Settings(
        data_root=root, pii_salt="bench", sources=[source_config(fmt)], memory_limit=memory_limit, threads=threads
    )
    t0 = time.perf_counter()
    report = ingest_sources(settings, as_of=AS_OF, batch_id="bench")
    seconds = time.perf_counter() - t0
    assert report.accounting_ok()
    return {
        "format": fmt,
        "rows_read": report.read,
        "loaded": report.loaded,
        "quarantined": report.quarantined,
        "duplicates": report.duplicates,
        "file_mb": round(src.stat().st_size / 2**20, 1),
        "seconds": round(seconds, 2),
        "rows_per_s": round(report.read / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "memory_limit": memory_limit,
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per file (default 1M; try 10000000)")
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=FORMATS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(run_one(args.child, args.rows, args.memory_limit, args.threads)))
        return 0
    for fmt in args.formats:
        landing_file(fmt, args.rows)  # generated here, so the child measures ingest alone
        cmd = [
            sys.executable,
            __file__,
            "--child",
            fmt,
            "--rows",
            str(args.rows),
            "--memory-limit",
            args.memory_limit,
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(json.dumps(json.loads(out.strip().splitlines()[-1]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
