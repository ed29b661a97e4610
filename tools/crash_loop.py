"""Randomised crash loop: SIGKILL `journeys run` at random moments, then check what is published and a rerun.

Not part of `make test` (it takes minutes): `make crash-loop` or `python tools/crash_loop.py [--runs N]
[--seed S] [--events E]`. README "Crash safety: the randomised loop" has the last result.

A sample of `--events` events arrives in two deliveries (half each, generated apart). The baseline root has
taken in and published the first one; every kill starts from a copy of it with the second delivery added, so
there is always an earlier complete set that a kill must leave intact. The reference root is the same copy,
run once without interruption; that run also counts the items of each step (`ingest`, `build`, `publish`),
so each kill draws an item that the run really reaches. Each kill is followed by two checks: the published set
is one run's complete output, and a clean rerun's marts equal the reference's row for row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `pipelines` is imported from the repository
    sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from journeys import db  # noqa: E402
from journeys.config import Settings, load_settings  # noqa: E402

CONFIG = str(REPO / "journeys.yaml")
AS_OF = "2026-11-01T00:00:00+00:00"
STEPS = ("ingest", "build", "publish")
KINDS = ("ingest", "identity", "build", "publish", "switch")
"""What a kill is drawn among, evenly: identity resolution is one item of `build` (the model `identity`), drawn
on its own, or one kill in 90 would land there; `switch` is the publication's switch of `.current` (its two
pause points: just before it, and just after it, before the set's pending state is moved into place)."""
SWITCH_POINTS = (("switch", 1, "before the switch"), ("switch", 2, "after the switch"))
RUN_TIMEOUT_S = 900
SERVER_TIMEOUT_S = 180

RUN_COLUMNS = frozenset({"batch_id"})
"""Mart columns that name the run itself (the audit marts' rows of this run): the only ones two runs of the same
inputs may differ in. Their times (`merged_at`, `split_at`) are the run's as_of, the same in both; `alerts`'
`previous_batch_id` names the baseline's run in both."""


def settings_of(root: Path) -> Settings:
    """The demo config's settings on data root `root`."""
    return load_settings(CONFIG, data_root=root)


# --- the published-set check (pure: a smoke test builds a marts folder by hand) ---------------------------


def published_batch(marts_dir: Path, expected_tables: Iterable[str]) -> str | None:
    """The batch whose complete set `marts_dir` publishes, None if nothing is; raise if the set is broken.

    Broken: a mart link that points outside `.current`'s set, a table of the set missing or unreadable, a file
    whose key-value `journeys.batch_id` names another batch.
    """
    current = marts_dir / ".current"
    links = sorted(p for p in marts_dir.glob("*/*.parquet") if not p.parent.name.startswith("."))
    if not current.is_symlink() and not current.exists():
        if links:
            raise AssertionError(f"mart files but no .current: {[str(p) for p in links]}")
        return None
    target = os.readlink(current) if current.is_symlink() else ""
    if not target.startswith(".runs/") or "/" in target.removeprefix(".runs/"):
        raise AssertionError(f".current points at {target!r}, not at a set under .runs/")
    batch = target.removeprefix(".runs/")
    set_dir = (marts_dir / ".runs" / batch).resolve()
    if not set_dir.is_dir():
        raise AssertionError(f".current points at a missing set {batch}")
    files = {p.stem for p in set_dir.glob("*.parquet")}
    missing = sorted(set(expected_tables) - files)
    if missing:
        raise AssertionError(f"set {batch} lacks {missing}")
    for link in links:
        if link.resolve().parent != set_dir:
            raise AssertionError(f"{link.parent.name} points at {link.resolve()}, outside the current set {batch}")
    unlinked = sorted(files - {p.stem for p in links})
    if unlinked:
        raise AssertionError(f"set {batch} has no link for {unlinked}")
    for table in sorted(files):
        path = set_dir / f"{table}.parquet"
        meta = pq.read_metadata(path)  # raises on a truncated file
        kv = {k.decode(): v.decode() for k, v in (meta.metadata or {}).items()}
        if kv.get("journeys.batch_id") != batch:
            raise AssertionError(f"{table} says batch {kv.get('journeys.batch_id')!r}, the set is {batch}")
        pq.read_table(path)  # every page decodes
    return batch


def warehouse_batch(s: Settings) -> str | None:
    """The last run recorded in the published warehouse's `runs` table, None if there is no warehouse."""
    if not s.warehouse_path.exists():
        return None
    with db.connect(s.warehouse_path, read_only=True) as con:
        rows = con.sql("select batch_id from runs order by published_at desc, batch_id desc limit 1").fetchall()
        # The lake views must resolve too: a warehouse whose views fail is not a usable output.
        con.sql("select count(*) from events").fetchall()
    return str(rows[0][0]) if rows else None


def check_published(s: Settings, expected_tables: Iterable[str]) -> str | None:
    """Check the published outputs are one run's complete set and its warehouse; return that run's batch."""
    batch = published_batch(s.marts_dir, expected_tables)
    wh = warehouse_batch(s)
    if wh != batch:
        raise AssertionError(f"marts are batch {batch}, the warehouse's last run is {wh}")
    return batch


def mart_differences(got: Path, want: Path, tables: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Per mart whose rows differ: (rows only in `got`, rows only in `want`), run columns left out."""
    out = {}
    with duckdb.connect() as con:
        for t in tables:
            a, b = str(got / t / f"{t}.parquet"), str(want / t / f"{t}.parquet")
            cols = [c for c in con.sql("select * from read_parquet($p)", params={"p": b}).columns]
            keep = ", ".join(db.quote_ident(c) for c in cols if c not in RUN_COLUMNS)
            diff = "select count(*) from (select {k} from read_parquet($x) except all select {k} from read_parquet($y))"
            only_a = con.sql(diff.format(k=keep), params={"x": a, "y": b}).fetchall()[0][0]
            only_b = con.sql(diff.format(k=keep), params={"x": b, "y": a}).fetchall()[0][0]
            n = (int(only_a), int(only_b))
            if n != (0, 0):
                out[t] = n
    return out


# --- running `journeys run` -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One Prefect server for every run: a killed client leaves no temporary server, none pays its start-up."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    def stop(self) -> None:
        """Stop the server and its children."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def client_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of a `journeys run` (or a server) with its Prefect home in `home`, none of the caller's
    PREFECT_/JOURNEYS_ variables, and `api_url` as its server when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "JOURNEYS_", "TEST_JOURNEYS_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        DO_NOT_TRACK="1",
        GX_ANALYTICS_ENABLED="False",
    )
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


def start_server(home: Path) -> Server:
    """Start `prefect server start` with its home in `home`; return it once healthy."""
    port = _free_port()
    env = client_env(home)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-ui", "--no-services", "--analytics-off"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    # Polled: a separate server process cannot signal that it is up.
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return Server(proc, {**env, "PREFECT_API_URL": url})
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise SystemExit(f"prefect server did not start within {SERVER_TIMEOUT_S} s")
        time.sleep(0.5)


def run_cmd(root: Path) -> list[str]:
    """The command line of the nightly run on `root`."""
    return ["run", "--data-root", str(root), "--as-of", AS_OF]


def run(
    root: Path,
    env: dict[str, str],
    kill_at: str | None = None,
    count_into: Path | None = None,
    timeout_s: float = RUN_TIMEOUT_S,
) -> str:
    """Run `journeys run` on `root`: "completed", "killed" (SIGKILLed at pause point `kill_at`) or "not reached".

    With `count_into`, the run also writes the items each step handed out (see `_counted`). A run that fails
    on its own raises with the end of its log.
    """
    if count_into is not None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_counted", str(count_into), "--config", CONFIG]
    else:
        cmd = [sys.executable, "-m", "pipelines.cli", "--config", CONFIG]
    cmd += run_cmd(root)
    log = root.parent / f"{root.name}-{time.monotonic_ns()}.log"
    r, w = os.pipe()
    if kill_at is not None:
        env = {**env, "TEST_JOURNEYS_PAUSE_AT": kill_at, "TEST_JOURNEYS_PAUSE_FD": str(w)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(w,)
        )
    os.close(w)  # the run holds the only write end: the read ends when it writes or exits
    try:
        if kill_at is not None:
            if not select.select([r], [], [], timeout_s)[0]:
                raise RuntimeError(f"run did not reach {kill_at} within {timeout_s} s; log: {log}")
            reached = os.read(r, 100).decode()
            if reached == f"{kill_at}\n":
                # The whole group: the run and any child it started.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed"
        proc.wait(timeout=timeout_s)
    finally:
        os.close(r)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({proc.returncode}): {log.read_text(errors='replace')[-3000:]}")
    return "completed" if kill_at is None else "not reached"


def _counted(out: Path, argv: list[str]) -> int:
    """Run the CLI with `argv`, writing to `out` the labels of the items each `progress.track` step handed out."""
    from journeys import progress
    from pipelines import cli

    seen: dict[str, list[str]] = {}
    lock = threading.Lock()
    tracked = progress.track

    def counting(items: Any, description: str, label: Any = None) -> Iterator[Any]:
        for item in tracked(items, description, label):
            with lock:  # build steps run in threads of one process
                seen.setdefault(description, []).append(label(item) if label else str(item))
            yield item

    progress.track = counting
    code = cli.main(argv)
    out.write_text(json.dumps(seen, indent=1))
    sys.stdout.flush()
    # As `journeys` does: skip the interpreter's module teardown (DuckDB's bindings report false leaks).
    os._exit(code)


def copy_root(src: Path, dst: Path, delivery: Path | None) -> Path:
    """Copy data root `src` (links kept as links) to `dst`, with `delivery`'s landing files added, if given."""
    shutil.copytree(src, dst, symlinks=True)
    if delivery is not None:
        for p in sorted((delivery / "landing").rglob("*.*")):
            shutil.copy2(p, dst / "landing" / p.parent.name / f"second_{p.name}")
    return dst


# --- the loop ---------------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One iteration: where it was killed, what was published after, and the verdict."""

    kind: str
    step: str
    item: int
    label: str
    published: str = ""
    result: str = ""
    seconds: float = 0.0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the loop, print the table; exit status 1 on any failed check."""
    if argv is None and sys.argv[1:2] == ["_counted"]:
        return _counted(Path(sys.argv[2]), sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="kills (default: 20)")
    p.add_argument("--seed", type=int, default=None, help="seed of the kill points (default: random, printed)")
    p.add_argument("--events", type=int, default=50_000, help="events in the sample, both deliveries (default: 50000)")
    p.add_argument("--workdir", help="folder for the sample and the data roots (default: a temporary one, removed)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    print(f"crash loop: --runs {args.runs} --seed {seed} --events {args.events}", flush=True)
    rng = random.Random(seed)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="journeys-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    server = start_server(work / "prefect")
    try:
        return _loop(work, server.env, rng, args.runs, args.events)
    finally:
        server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _loop(work: Path, env: dict[str, str], rng: random.Random, runs: int, events: int) -> int:
    from journeys.generate import GenerateSpec, generate_sample

    t0 = time.monotonic()
    baseline, second = work / "baseline", work / "second"
    for d in (baseline, second, work / "reference"):
        shutil.rmtree(d, ignore_errors=True)
    generate_sample(GenerateSpec(events=events // 2, seed=5), baseline)
    generate_sample(GenerateSpec(events=events - events // 2, seed=6), second)
    run(baseline, env)
    base_batch = check_published(settings_of(baseline), ())
    t1 = time.monotonic()
    reference = copy_root(baseline, work / "reference", second)
    counts_file = work / "counts.json"
    run(reference, env, count_into=counts_file)
    t2 = time.monotonic()
    labels: dict[str, list[str]] = json.loads(counts_file.read_text())
    ref = settings_of(reference)
    tables = sorted(p.stem for p in (ref.marts_dir / ".current").glob("*.parquet"))
    ref_batch = check_published(ref, tables)
    print(
        f"baseline {base_batch} in {t1 - t0:.0f} s (with generation); reference {ref_batch} in {t2 - t1:.0f} s; "
        f"items per step: {', '.join(f'{s} {len(labels.get(s, []))}' for s in STEPS)}; marts: {len(tables)}",
        flush=True,
    )

    points: dict[str, list[tuple[str, int, str]]] = {c: [] for c in KINDS}
    for step in STEPS:
        for n, label in enumerate(labels.get(step, []), 1):
            kind = "identity" if (step, label) == ("build", "identity") else step
            points[kind].append((step, n, label))
    points["switch"] = list(SWITCH_POINTS)  # not a loop: `progress.pause_point`, not counted by `_counted`
    kills: list[Kill] = []
    failures = 0
    for i in range(runs):
        kind = rng.choice([c for c in KINDS if points[c]])
        step, n, label = rng.choice(points[kind])
        k = Kill(kind, step, n, label)
        root = work / f"kill-{i:02d}"
        shutil.rmtree(root, ignore_errors=True)
        copy_root(baseline, root, second)
        s = settings_of(root)
        start = time.monotonic()
        try:
            outcome = run(root, env, kill_at=f"{step}:{n}")
            if outcome != "killed":
                raise AssertionError(f"the run {outcome}: its pause point was never handed out")
            batch = check_published(s, tables)
            k.published = {None: "nothing", base_batch: "earlier run"}.get(batch, f"new run {batch}")
            run(root, env)
            after = check_published(s, tables)
            if after in (None, base_batch):
                raise AssertionError("the clean rerun published nothing new")
            diff = mart_differences(s.marts_dir, ref.marts_dir, tables)
            if diff:
                raise AssertionError(
                    f"rerun differs from the reference (rows only in rerun, only in reference): {diff}"
                )
            k.result = "ok"
        except (AssertionError, RuntimeError, duckdb.Error, OSError, pa.ArrowException) as exc:
            failures += 1
            k.result = f"FAIL: {exc}"
            print(f"  kill {i}: kept {root} for inspection", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
        k.seconds = time.monotonic() - start
        kills.append(k)
        print(
            f"{i:>3}  {k.step}:{k.item} ({k.label})  published: {k.published}  {k.seconds:.0f} s  {k.result}",
            flush=True,
        )

    print()
    print(f"{'#':>3}  {'kill point':<34} {'published after the kill':<26} result")
    for i, k in enumerate(kills):
        print(f"{i:>3}  {f'{k.step}:{k.item} ({k.label})':<34} {k.published or '-':<26} {k.result}")
    per_step = {c: sum(k.kind == c for k in kills) for c in KINDS}
    print(
        f"{len(kills) - failures}/{len(kills)} ok ({', '.join(f'{s} {c}' for s, c in per_step.items())}); "
        f"{time.monotonic() - t0:.0f} s in all",
        flush=True,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
