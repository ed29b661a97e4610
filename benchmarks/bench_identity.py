"""Identity-resolution benchmark: `python benchmarks/bench_identity.py [--events N --persons P] [--score]`.

Synthesises N events of P persons directly in DuckDB (deterministic: every choice is a hash of the event or
person number), caches them as Parquet under benchmarks/out/identity/, then times `resolve_identities` on a
file database with memory_limit 4GB, threads 2 and a spill directory under benchmarks/out/. Generation runs
in a child process, so the reported peak RSS (getrusage of this process) is resolution's alone.

Persons: 60% have a customer_id, 1-2 e-mails, 70% a phone, 1-3 devices with a cookie per device and
period; 2% of households (three consecutive persons) share a device; ~1% of events carry a junk value
("unknown", "", "0000", "null", "xxxx") as their cookie. Each event carries the identifiers its channel
would see (web: cookie + device, sometimes a login; app: device + customer_id; e-mail: address; call: phone;
store: customer_id or e-mail). With --score it also scores the result against the persons (pairwise precision
and recall), which reads the events again and is not part of the timing. With --rerun it resolves again with
the first map as previous_identity_map and the household devices newly blocked: stable keys plus splits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "identity"
RUN_AT = datetime(2026, 11, 1)

# h(x, salt) = a 64-bit hash of (x, salt); u(x, salt) = h mod 100, a percentile for "x% of ...".
EVENTS_SQL = """
with ev as (
    select
        i,
        cast(hash(i, 'person') % $persons as bigint) as p,
        cast(hash(i, 'channel') % 100 as bigint) as ch,
        cast(hash(i, 'pick') >> 2 as bigint) as pick
    from range($events) as t(i)
),

per_event as (
    select
        ev.i,
        ev.p,
        ev.ch,
        ev.pick,
        hash(ev.p, 'cid') % 100 < 60 as has_cid,
        cast(1 + hash(ev.p, 'nmail') % 2 as bigint) as n_emails,
        hash(ev.p, 'phone') % 100 < 70 as has_phone,
        cast(1 + hash(ev.p, 'ndev') % 3 as bigint) as n_devices,
        hash(ev.p // 3, 'household') % 100 < 2 as in_household,
        hash(ev.i, 'junk') % 100 = 0 as is_junk,
        timestamp '2026-01-01' + to_seconds(hash(ev.i, 'time') % 25000000) as occurred_at
    from ev
),

picked as (
    select
        pe.*,
        'u' || pe.p || '.' || (pe.pick % pe.n_emails) || '@mail.example' as email,
        'd' || pe.p || '_' || ((pe.pick // 7) % pe.n_devices) as device,
        'hh' || (pe.p // 3) as household_device,
        (pe.pick // 131) % 10 < 3 as use_household_device,
        '+49 170 ' || lpad(cast(pe.p as varchar), 7, '0') as phone,
        'C' || lpad(cast(pe.p as varchar), 8, '0') as customer_id,
        ['unknown', '', '0000', 'null', 'xxxx'][1 + pe.pick % 5] as junk
    from per_event as pe
),

identified as (
    select
        pk.*,
        case
            when pk.in_household and pk.use_household_device then pk.household_device else pk.device
        end as dev
    from picked as pk
),

final as (
    select
        'bench:' || id.i as event_id,
        id.occurred_at,
        id.p as person_id,
        list_filter([
            -- web (50%): cookie of the device and period, the device, a login now and then
            case when id.ch < 50 then {'id_type': 'cookie_id', 'id_value':
                case when id.is_junk then id.junk
                     else 'k' || id.dev || '_' || (epoch(id.occurred_at)::bigint // 7776000) end} end,
            case when id.ch < 50 then {'id_type': 'device_id', 'id_value': id.dev} end,
            case when id.ch < 50 and (id.pick // 11) % 100 < 10 then {'id_type': 'email', 'id_value': id.email} end,
            case when id.ch < 50 and id.has_cid and (id.pick // 13) % 100 < 15
                then {'id_type': 'customer_id', 'id_value': id.customer_id} end,
            -- app (15%): device, the customer_id when the person has one, else an e-mail login
            case when id.ch between 50 and 64 then {'id_type': 'device_id', 'id_value': id.dev} end,
            case when id.ch between 50 and 64 and id.has_cid
                then {'id_type': 'customer_id', 'id_value': id.customer_id} end,
            case when id.ch between 50 and 64 and not id.has_cid and (id.pick // 17) % 2 = 0
                then {'id_type': 'email', 'id_value': id.email} end,
            -- e-mail (20%)
            case when id.ch between 65 and 84 then {'id_type': 'email', 'id_value': id.email} end,
            -- call centre (7%): the phone, or the e-mail when there is none; a customer_id half the time
            case when id.ch between 85 and 91 then
                case when id.has_phone then {'id_type': 'phone', 'id_value': id.phone}
                     else {'id_type': 'email', 'id_value': id.email} end end,
            case when id.ch between 85 and 91 and id.has_cid and (id.pick // 19) % 2 = 0
                then {'id_type': 'customer_id', 'id_value': id.customer_id} end,
            -- store (8%): customer_id, else e-mail for the receipt; a phone sometimes
            case when id.ch >= 92 then
                case when id.has_cid then {'id_type': 'customer_id', 'id_value': id.customer_id}
                     else {'id_type': 'email', 'id_value': id.email} end end,
            case when id.ch >= 92 and id.has_phone and (id.pick // 23) % 4 = 0
                then {'id_type': 'phone', 'id_value': id.phone} end
        ], lambda x: x is not null) as identifiers
    from identified as id
)

select * from final
"""


def events_file(events: int, persons: int) -> Path:
    return OUT / f"events_{events}_{persons}.parquet"


def generate(events: int, persons: int) -> Path:
    """Write the synthetic events once (runs in a child process)."""
    from journeys import db

    path = events_file(events, persons)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with db.connect(memory_limit="4GB", threads=2, temp_directory=OUT / "tmp") as con:
        con.sql(EVENTS_SQL, params={"events": events, "persons": persons}).write_parquet(str(tmp))
    tmp.rename(path)
    return path


def _instrument(timings: dict[str, float]) -> None:
    """Sum statement time per table built, by wrapping journeys.db.execute (the benchmark's only hook)."""
    import re

    from journeys import db

    original = db.execute
    target = re.compile(r'create or replace (?:temp )?table "?([A-Za-z0-9_]+)"?', re.IGNORECASE)

    def timed(con, sql, params=None):
        t0 = time.perf_counter()
        original(con, sql, params)
        m = target.match(sql.lstrip())
        timings[m.group(1) if m else "other"] += time.perf_counter() - t0

    db.execute = timed


def resolve(events: int, persons: int, memory_limit: str, threads: int, score: bool, rerun: bool) -> dict[str, Any]:
    from journeys import db
    from journeys.config import IdentityConfig, Settings
    from journeys.identity import resolve_identities, score_identity

    src = events_file(events, persons)
    work = OUT / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    timings: dict[str, float] = defaultdict(float)
    _instrument(timings)
    with db.connect(
        work / "identity.duckdb", memory_limit=memory_limit, threads=threads, temp_directory=work / "tmp"
    ) as con:
        db.execute(con, f"create view events as select * from read_parquet({db.quote_literal(str(src))})")
        t0 = time.perf_counter()
        report = resolve_identities(con, Settings(), run_at=RUN_AT)
        seconds = time.perf_counter() - t0
        peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result: dict[str, Any] = {
            "events": events,
            "persons": persons,
            "seconds": round(seconds, 1),
            "passes": report.passes,
            "peak_rss_mb": peak_rss_mb,
            "customers": report.n_customers,
            "identifiers": report.n_identifiers,
            "events_unresolved": report.n_events_unresolved,
            "shared_identifiers": report.n_shared_identifiers,
            "memory_limit": memory_limit,
            "threads": threads,
            "cpus": os.cpu_count(),
            "slowest_steps_s": {k: round(v, 1) for k, v in sorted(timings.items(), key=lambda kv: -kv[1])[:8]},
        }
        if score:
            truth = OUT / f"truth_{events}_{persons}.parquet"
            if not truth.exists():
                con.sql("select event_id, person_id from read_parquet($p)", params={"p": str(src)}).write_parquet(
                    str(truth)
                )
            s = score_identity(con, str(truth))
            result["score"] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in s.items()}
        if rerun:
            # Second run against the first one's map, with the household devices newly blocked: the
            # customers they had fused split, and every other key must be kept.
            previous = work / "identity_map_1.parquet"
            con.table("identity_map").write_parquet(str(previous))
            stricter = Settings(identity=IdentityConfig(blocked_patterns=[*IdentityConfig().blocked_patterns, "^hh"]))
            t0 = time.perf_counter()
            report2 = resolve_identities(con, stricter, run_at=RUN_AT, previous_identity_map=str(previous))
            result["rerun"] = {
                "seconds": round(time.perf_counter() - t0, 1),
                "passes": report2.passes,
                "customers": report2.n_customers,
                "merges": report2.n_merges,
                "splits": report2.n_splits,
                "previous_keys": db.fetch(
                    con, "select count(distinct customer_key) from read_parquet($p)", {"p": str(previous)}
                )[0][0],
                "previous_keys_kept": db.fetch(
                    con,
                    "select count(distinct im.customer_key) from identity_map as im "
                    "semi join read_parquet($p) as pm on pm.customer_key = im.customer_key",
                    {"p": str(previous)},
                )[0][0],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
    shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score", action="store_true", help="also score against the synthetic persons")
    ap.add_argument(
        "--rerun", action="store_true", help="then rerun on the first map with household devices blocked (splits)"
    )
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.generate_only:
        generate(args.events, args.persons)
        return 0
    if not events_file(args.events, args.persons).exists():
        t0 = time.perf_counter()
        cmd = [
            sys.executable,
            __file__,
            "--generate-only",
            "--events",
            str(args.events),
            "--persons",
            str(args.persons),
        ]
        subprocess.run(cmd, check=True)
        print(f"generated {args.events} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    result = resolve(args.events, args.persons, args.memory_limit, args.threads, args.score, args.rerun)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
