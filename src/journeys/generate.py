"""Deterministic synthetic multichannel events with ground truth, from 1e3 to 1e8 events in flat memory.

The landing files follow the `sources:` section of the demo `journeys.yaml` exactly; the truth under
`<data_root>/truth/` says which person, household, journey and generic_lifecycle stage every true event
belongs to, which rows are re-deliveries and which lines are deliberate garbage.

Design rules that keep the truth recoverable by the pipeline:
- identifiers never cross persons, except one household device shared on the web by two persons who
  both hold a customer_id (the max-1-customer_id guardrail separates them); each person keeps their own
  cookies on that device, so anonymous hits stay attributable;
- every cookie appears once in a logged-in web hit carrying the person's email and customer_id, every
  phone appears on a call with the account or on a ticket with the email, every loyalty card appears
  once with the customer_id, so each person's identifiers form exactly one connected component;
- within a journey consecutive events are at most 20 days apart, journeys are more than 41 days apart
  (journey timeout 30d);
- times are whole seconds and never fall in a local DST fold of a source with naive local times, so
  converting back to UTC is unambiguous.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

SOURCES = ("web", "email", "calls", "pos", "support", "cdp")
_EXT = {"web": "csv", "email": "jsonl", "calls": "csv", "pos": "parquet", "support": "csv", "cdp": "jsonl"}
_ID_PREFIX = {"web": "h", "email": "em-", "calls": "CALL", "pos": "R-", "support": "SR", "cdp": "msg_"}
_DAY = 86_400
_BATCH_ID_SPAN = 1_000_000_000  # event ids of batch b are b * span + local index: unique across batches

# Behaviour of the synthetic population (values, probabilities).
_HH_SIZE = ([1, 2, 3, 4], [0.35, 0.35, 0.2, 0.1])
_N_DEVICES = ([1, 2, 3], [0.5, 0.35, 0.15])
_N_COOKIES = ([1, 2, 3], [0.6, 0.3, 0.1])
_N_JOURNEYS = ([1, 2, 3], [0.55, 0.3, 0.15])
_PER_STAGE = ([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1])
_CONTINUE = np.array([0.65, 0.55, 0.7, 0.45])  # awareness->consideration, ..., use_service->renewal
_NOISE_MEAN = 1.5
_BACKTRACK = 0.15
_PLATFORMS = (["desktop", "mobile_web", "ios", "android"], [0.45, 0.3, 0.15, 0.1])
_IN_PROGRESS = 0.3
_MAX_GAP = 20 * _DAY
_JOURNEY_GAP = (41 * _DAY, 60 * _DAY)
_SPAN = 165 * _DAY  # whole history of a person fits in the 180-day window with room to place it
_FAULT_KIND = "call_product"  # the planted red point: call_centre:call at consideration
_FAULT_STOP = 0.85  # share of journeys with such a call that stop at consideration when a fault is planted

# name, source, stage (0 = none), raw event/action/kind/record_type, page_type|reason|cdp channel,
# canonical event_type, need (0 none, 1 email, 2 phone+customer_id, 3 store identifiers)
_KINDS = [
    ("ad_impression", "cdp", 1, "ad_impression", "ads", "ad_impression", 0),
    ("ad_click", "cdp", 1, "ad_click", "ads", "ad_click", 0),
    ("social", "cdp", 1, "social_engagement", "social", "social_engagement", 0),
    ("product_view", "web", 2, "pageview", "product", "page_view", 0),
    ("add_to_cart", "web", 2, "add_to_cart", "cart", "add_to_cart", 0),
    ("email_click", "email", 2, "click", "", "email_click", 1),
    ("chat", "cdp", 2, "chat_message", "chat", "chat_message", 0),
    ("call_product", "calls", 2, "", "product_question", "call", 2),
    ("web_order", "web", 3, "order", "checkout", "purchase", 0),
    ("pos_sale", "pos", 3, "sale", "", "purchase", 3),
    ("delivery", "cdp", 4, "delivery_completed", "delivery", "delivery_completed", 0),
    ("ticket_opened", "support", 4, "ticket_opened", "", "ticket_opened", 1),
    ("ticket_closed", "support", 4, "ticket_closed", "", "ticket_closed", 1),
    ("survey", "support", 4, "survey", "", "survey_response", 1),
    ("call_billing", "calls", 4, "", "billing", "call", 2),
    ("call_delivery", "calls", 4, "", "delivery", "call", 2),
    ("call_complaint", "calls", 4, "", "complaint", "call", 2),
    ("web_renewal", "web", 5, "renewal", "account", "renewal_purchase", 0),
    ("pos_renewal", "pos", 5, "renewal", "", "renewal_purchase", 3),
    ("call_renewal", "calls", 5, "", "renewal", "call", 2),
    ("view_home", "web", 0, "pageview", "home", "page_view", 0),
    ("view_account", "web", 0, "pageview", "account", "page_view", 0),
    ("view_cart", "web", 0, "pageview", "cart", "page_view", 0),
    ("view_checkout", "web", 0, "pageview", "checkout", "page_view", 0),
    ("email_sent", "email", 0, "sent", "", "email_sent", 1),
    ("email_open", "email", 0, "open", "", "email_open", 1),
    ("email_unsub", "email", 0, "unsubscribe", "", "email_unsubscribe", 1),
]
_K = {k[0]: i for i, k in enumerate(_KINDS)}
_K_SRC = np.array([SOURCES.index(k[1]) for k in _KINDS], dtype=np.int8)
_K_STAGE = np.array([k[2] for k in _KINDS], dtype=np.int8)
_K_RAW = [k[3] for k in _KINDS]
_K_ATTR = [k[4] for k in _KINDS]
_K_ETYPE = [k[5] for k in _KINDS]
_K_NEED = np.array([k[6] for k in _KINDS], dtype=np.int8)

# Event categories: 1..5 stage events, 6 noise, 7 cookie anchors (logged-in account page view).
_CATEGORY_KINDS = {
    1: ({"ad_impression": 0.5, "ad_click": 0.3, "social": 0.2}, "ad_impression"),
    2: (
        {"product_view": 0.45, "add_to_cart": 0.15, "email_click": 0.15, "chat": 0.1, "call_product": 0.15},
        "product_view",
    ),
    3: ({"web_order": 0.6, "pos_sale": 0.4}, "web_order"),
    4: (
        {
            "delivery": 0.3,
            "ticket_opened": 0.2,
            "ticket_closed": 0.1,
            "survey": 0.15,
            "call_billing": 0.1,
            "call_delivery": 0.08,
            "call_complaint": 0.07,
        },
        "delivery",
    ),
    5: ({"web_renewal": 0.45, "pos_renewal": 0.25, "call_renewal": 0.3}, "web_renewal"),
    6: (
        {
            "view_home": 0.35,
            "view_account": 0.1,
            "view_cart": 0.1,
            "view_checkout": 0.05,
            "email_sent": 0.25,
            "email_open": 0.13,
            "email_unsub": 0.02,
        },
        "view_home",
    ),
    7: ({"view_account": 1.0}, "view_account"),
}

_FIRST = [
    "ann",
    "ben",
    "carla",
    "dev",
    "emma",
    "finn",
    "grace",
    "hugo",
    "ines",
    "jon",
    "kira",
    "liam",
    "mia",
    "noah",
    "olga",
    "paul",
    "quinn",
    "rosa",
    "sam",
    "tara",
    "umar",
    "vera",
    "will",
    "yara",
    "zoe",
]
_LAST = [
    "smith",
    "jones",
    "miller",
    "garcia",
    "chen",
    "kumar",
    "novak",
    "schmidt",
    "rossi",
    "dubois",
    "okafor",
    "silva",
    "kim",
    "nguyen",
    "larsen",
    "murphy",
    "weber",
    "lopez",
    "khan",
    "berg",
]
_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
_AREA_CODES = [
    "212",
    "312",
    "415",
    "617",
    "202",
    "303",
    "404",
    "512",
    "646",
    "718",
    "206",
    "305",
    "702",
    "213",
    "720",
    "503",
]
_CAMPAIGNS = [
    "welcome",
    "spring_sale",
    "summer_sale",
    "back_to_school",
    "autumn_deals",
    "loyalty_news",
    "renewal_reminder",
    "product_launch",
]
_TOPICS = ["order", "billing", "delivery", "account", "product"]
_PLACEMENTS = ["search", "display", "video", "feed", "stories"]
_CDP_OFFSETS = [("+00:00", 0), ("+01:00", 60), ("+02:00", 120), ("-04:00", -240), ("-05:00", -300), ("+05:30", 330)]

# Malformed-row kinds per source; all are extra rows, never a damaged true event.
_MALFORMED_KINDS = {
    "web": ["bad_timestamp", "empty_timestamp", "non_numeric", "ragged_row"],
    "email": ["bad_timestamp", "empty_timestamp", "broken_json"],
    "calls": ["bad_timestamp", "empty_timestamp", "non_numeric", "ragged_row"],
    "pos": ["empty_timestamp", "implausible_timestamp"],
    "support": ["bad_timestamp", "empty_timestamp", "non_numeric", "ragged_row"],
    "cdp": ["bad_timestamp", "empty_timestamp", "broken_json"],
}
_NUMERIC_COL = {"web": "order_value", "calls": "csat", "support": "nps"}
_NON_NUMERIC = {"web": "twelve", "calls": "great", "support": "ten"}
_TS_COL = {
    "web": "hit_time",
    "email": "ts",
    "calls": "started",
    "pos": "sold_at",
    "support": "created_at",
    "cdp": "timestamp",
}
_ID_COL = {
    "web": "hit_id",
    "email": "id",
    "calls": "call_id",
    "pos": "receipt_id",
    "support": "record_id",
    "cdp": "message_id",
}
_BAD_TS = {
    "web": "2026-13-45 25:61:00",
    "email": "2026-13-45T25:61:00Z",
    "calls": "2026-13-45T25:61:00",
    "support": "2026-13-45T25:61:00",
    "cdp": "2026-13-45T25:61:00+02:00",
}
_LOCAL_TZ = {"web": "Europe/Berlin", "calls": "America/New_York", "support": "Europe/London"}


@dataclass(frozen=True)
class GenerateSpec:
    """What to generate; the same spec always gives byte-identical files."""

    events: int = 20_000
    seed: int = 42
    as_of: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    shared_device_rate: float = 0.03
    duplicate_rate: float = 0.01
    malformed_rate: float = 0.005
    late_rate: float = 0.02
    chunk_events: int = 500_000
    plant_fault: bool = False
    """Plant a red point: call-centre calls at consideration (touchpoint `call_centre:call`, generic_lifecycle
    stage 2) end most journeys that have one (no purchase or later stage events follow) and get CSAT 1-2 mostly."""


@dataclass(frozen=True)
class GenerateResult:
    """Where the sample went and how many rows of each kind it holds."""

    landing_dir: Path
    truth_dir: Path
    n_true_events: int
    n_duplicates: int
    n_malformed: int
    n_persons: int
    files: list[Path]


def mean_events_per_person() -> float:
    """Expected true events of one person under the built-in behaviour model (used to size batches)."""
    reach = np.concatenate([[1.0], np.cumprod(_CONTINUE)])
    mean_len = float(reach.sum())
    per_stage = float(np.dot(*_PER_STAGE))
    per_journey = mean_len * per_stage + _NOISE_MEAN + reach[1] * _BACKTRACK
    cookies = float(np.dot(*_N_DEVICES)) * float(np.dot(*_N_COOKIES))
    return float(np.dot(*_N_JOURNEYS)) * per_journey + cookies


def generate_sample(spec: GenerateSpec, data_root: Path) -> GenerateResult:
    """Write landing files for the demo sources and their ground truth under `data_root`."""
    data_root = Path(data_root)
    landing, truth = data_root / "landing", data_root / "truth"
    for src in SOURCES:
        (landing / src).mkdir(parents=True, exist_ok=True)
        # Parts of an earlier, larger run would otherwise be ingested with this one.
        for old in (landing / src).glob(f"{src}_*_part*.{_EXT[src]}*"):
            old.unlink()
    truth.mkdir(parents=True, exist_ok=True)

    mean = mean_events_per_person()
    n_persons = max(1, round(spec.events / mean))
    per_batch = max(1, round(spec.chunk_events / mean))
    n_batches = math.ceil(n_persons / per_batch)
    as_of = spec.as_of if spec.as_of.tzinfo else spec.as_of.replace(tzinfo=UTC)  # naive means UTC
    as_of_s = int(as_of.timestamp())

    sinks = {name: _ParquetSink(truth / f"{name}.parquet", schema) for name, schema in _TRUTH_SCHEMAS.items()}
    files: list[Path] = []
    n_true = n_dup = n_mal = 0
    try:
        for b in range(n_batches):
            p0 = b * per_batch
            batch = _Batch(spec, b, p0, min(per_batch, n_persons - p0), as_of_s)
            out = batch.write(landing)
            files += out.files
            n_true += out.n_true
            n_dup += out.duplicates.num_rows
            n_mal += out.malformed.num_rows
            sinks["events"].write(out.truth)
            sinks["persons"].write(out.persons)
            sinks["duplicates"].write(out.duplicates)
            sinks["malformed"].write(out.malformed)
        for s in sinks.values():
            s.commit()
    finally:
        for s in sinks.values():
            s.abort()
    return GenerateResult(
        landing_dir=landing,
        truth_dir=truth,
        n_true_events=n_true,
        n_duplicates=n_dup,
        n_malformed=n_mal,
        n_persons=n_persons,
        files=sorted(files),
    )


# --------------------------------------------------------------------------------------------- output

_TS = pa.timestamp("us", tz="UTC")
_TRUTH_SCHEMAS = {
    "events": pa.schema(
        [
            ("source", pa.string()),
            ("event_id", pa.string()),
            ("person_id", pa.string()),
            ("household_id", pa.string()),
            ("true_stage", pa.int8()),
            ("journey_no", pa.int16()),
            ("occurred_at", _TS),
            ("channel", pa.string()),
            ("event_type", pa.string()),
            ("is_late", pa.bool_()),
        ]
    ),
    "persons": pa.schema(
        [
            ("person_id", pa.string()),
            ("household_id", pa.string()),
            ("customer_id", pa.string()),
            ("email", pa.string()),
            ("phone", pa.string()),
            ("loyalty_id", pa.string()),
            ("device_ids", pa.list_(pa.string())),
            ("cookie_ids", pa.list_(pa.string())),
            ("shared_device_ids", pa.list_(pa.string())),
            ("is_store_shopper", pa.bool_()),
            ("n_journeys", pa.int16()),
            ("in_progress", pa.bool_()),
        ]
    ),
    "duplicates": pa.schema([("source", pa.string()), ("event_id", pa.string()), ("file", pa.string())]),
    "malformed": pa.schema(
        [
            ("source", pa.string()),
            ("file", pa.string()),
            ("line", pa.int64()),
            ("row_index", pa.int64()),
            ("kind", pa.string()),
            ("event_id", pa.string()),
            ("raw", pa.string()),
        ]
    ),
}


class _ParquetSink:
    """One truth table appended batch by batch to a temp file, renamed into place on commit."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.writer: pq.ParquetWriter | None = pq.ParquetWriter(self.tmp, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        assert self.writer is not None
        self.writer.write_table(table.select(self.schema.names).cast(self.schema))

    def commit(self) -> None:
        assert self.writer is not None
        self.writer.close()
        self.writer = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.tmp.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class _BatchOutput:
    files: list[Path]
    n_true: int
    truth: pa.Table
    persons: pa.Table
    duplicates: pa.Table
    malformed: pa.Table


# ------------------------------------------------------------------------------------------ helpers


def _mix64(x: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser: a bijection on uint64, so distinct numbers give distinct random-looking ids.
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _choice(rng: np.random.Generator, spec: tuple[list, list], size: int | tuple[int, ...]) -> np.ndarray:
    values, probs = spec
    return np.asarray(values)[rng.choice(len(values), size=size, p=probs)]


def _zfill(num: np.ndarray, width: int, prefix: str) -> pl.Series:
    s = pl.Series(num.astype(np.int64)).cast(pl.String).str.zfill(width)
    return (prefix + s) if prefix else s


def _pick(values: list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(idx.astype(np.int64))


def _first_in_group(keys: np.ndarray) -> np.ndarray:
    return np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)


def _month_label(m: int) -> str:
    return f"{1970 + m // 12:04d}-{m % 12 + 1:02d}"


def _messy_email(e: pl.Expr, variant: pl.Expr) -> pl.Expr:
    # Raw exports keep whatever case and padding the user typed; normalising is ingest's job.
    return (
        pl.when(variant == 1)
        .then(pl.concat_str([pl.lit("  "), e.str.to_titlecase(), pl.lit(" ")]))
        .when(variant == 2)
        .then(e.str.to_uppercase())
        .when(variant == 3)
        .then(pl.concat_str([pl.lit(" "), e]))
        .otherwise(e)
    )


def _raw_phone(a: pl.Expr, x: pl.Expr, n: pl.Expr, fmt: pl.Expr) -> pl.Expr:
    # All formats normalise to +1AAAXXXNNNN with default region 1.
    return (
        pl.when(fmt == 0)
        .then(pl.concat_str([pl.lit("+1 ("), a, pl.lit(") "), x, pl.lit("-"), n]))
        .when(fmt == 1)
        .then(pl.concat_str([a, pl.lit("."), x, pl.lit("."), n]))
        .when(fmt == 2)
        .then(pl.concat_str([pl.lit("1"), a, x, n]))
        .when(fmt == 3)
        .then(pl.concat_str([pl.lit("("), a, pl.lit(") "), x, pl.lit("-"), n]))
        .when(fmt == 4)
        .then(pl.concat_str([pl.lit("+1"), a, x, n]))
        .otherwise(pl.concat_str([a, pl.lit("-"), x, pl.lit("-"), n]))
    )


def _utc_series(t: np.ndarray) -> pl.Series:
    return pl.Series(t.astype(np.int64) * 1_000_000).cast(pl.Datetime("us", "UTC"))


def _local_naive(t: np.ndarray, tz: str, fmt: str) -> pl.Series:
    return _utc_series(t).dt.convert_time_zone(tz).dt.strftime(fmt)


def _ambiguous_local(t: np.ndarray, tz: str) -> np.ndarray:
    local = _utc_series(t).dt.convert_time_zone(tz).dt.replace_time_zone(None)
    back = local.dt.replace_time_zone(tz, ambiguous="null", non_existent="null")
    return back.is_null().to_numpy()


# --------------------------------------------------------------------------------------------- batch


class _Batch:
    """One batch of whole persons (households never straddle batches) with all their events."""

    def __init__(self, spec: GenerateSpec, b: int, p0: int, n_persons: int, as_of_s: int) -> None:
        self.spec, self.b, self.p0, self.P, self.as_of_s = spec, b, p0, n_persons, as_of_s
        self.rng = np.random.default_rng([spec.seed, b])
        self._persons()
        self._journeys()
        self._kinds()
        self._times()
        self._identifiers()
        if spec.plant_fault:
            self._plant_fault()

    # ----------------------------------------------------------------- population
    def _persons(self) -> None:
        rng, P = self.rng, self.P
        sizes = _choice(rng, _HH_SIZE, P)
        ends = np.cumsum(sizes)
        nh = int(np.searchsorted(ends, P)) + 1
        sizes = sizes[:nh].copy()
        sizes[-1] -= ends[nh - 1] - P
        hh_start = np.r_[0, np.cumsum(sizes)[:-1]]
        hh_of = np.repeat(np.arange(nh), sizes)
        rank = np.arange(P) - hh_start[hh_of]
        self.hh_first = hh_start[hh_of]

        has_email = rng.random(P) < 0.9
        # 0.4 before the forcing below, about 0.6 after it.
        has_cid = rng.random(P) < 0.4
        has_phone = rng.random(P) < 0.7
        is_store = rng.random(P) < 0.35
        has_loyalty = is_store & (rng.random(P) < 0.7)
        shares = (rng.random(nh) < self.spec.shared_device_rate) & (sizes >= 2)
        sharer = shares[hh_of] & (rank < 2)
        # A loyalty card is an account; a person needs one strong id; sharers need their own customer_id.
        has_cid |= has_loyalty | ~has_email | sharer
        self.has_email, self.has_cid, self.has_phone = has_email, has_cid, has_phone
        self.is_store, self.has_loyalty = is_store, has_loyalty
        self.store_ok = has_loyalty | (is_store & has_cid)

        n_dev = _choice(rng, _N_DEVICES, P)
        D = int(n_dev.sum())
        self.dev_start = np.cumsum(n_dev) - n_dev
        self.dev_count = n_dev
        self.dev_person = np.repeat(np.arange(P), n_dev)
        dev_rank = np.arange(D) - self.dev_start[self.dev_person]
        self.dev_num = (self.p0 + self.dev_person).astype(np.int64) * 4 + dev_rank
        self.dev_plat = rng.choice(len(_PLATFORMS[0]), size=D, p=_PLATFORMS[1])
        b_pers = np.flatnonzero(sharer & (rank == 1))
        a_pers = self.hh_first[b_pers]
        a_dev, b_dev = self.dev_start[a_pers], self.dev_start[b_pers]
        self.dev_num[b_dev] = self.dev_num[a_dev]
        self.dev_plat[a_dev] = self.dev_plat[b_dev] = 0  # the family desktop
        self.dev_shared = np.zeros(D, bool)
        self.dev_shared[a_dev] = self.dev_shared[b_dev] = True

        n_ck = _choice(rng, _N_COOKIES, D)
        C = int(n_ck.sum())
        self.ck_dev = np.repeat(np.arange(D), n_ck)
        self.ck_person = self.dev_person[self.ck_dev]
        self.ck_count = np.bincount(self.ck_person, minlength=P)
        self.ck_start = np.cumsum(self.ck_count) - self.ck_count
        ck_rank = np.arange(C) - self.ck_start[self.ck_person]
        self.ck_num = (self.p0 + self.ck_person).astype(np.int64) * 16 + ck_rank

    def _journeys(self) -> None:
        rng, P = self.rng, self.P
        nj = _choice(rng, _N_JOURNEYS, P)
        J = int(nj.sum())
        self.nj = nj
        self.j_person = np.repeat(np.arange(P), nj)
        self.j_start = np.cumsum(nj) - nj
        self.jno = (np.arange(J) - self.j_start[self.j_person] + 1).astype(np.int16)
        cont = rng.random((J, 4)) < _CONTINUE
        L = 1 + np.cumprod(cont, axis=1).sum(axis=1)
        self.L = L
        cnt = _choice(rng, _PER_STAGE, (J, 5)) * (np.arange(1, 6)[None, :] <= L[:, None])
        s_j = np.repeat(np.arange(J), cnt.sum(axis=1))
        s_stage = np.repeat(np.tile(np.arange(1, 6), J), cnt.ravel())
        # Position keys order a journey: stage s events sit in (s, s+1); others anywhere after them.
        s_pos = s_stage + rng.random(len(s_j))

        bt = np.flatnonzero((L >= 2) & (rng.random(J) < _BACKTRACK))
        bt_stage = 1 + np.floor(rng.random(len(bt)) * (L[bt] - 1)).astype(np.int64)
        bt_pos = bt_stage + 1 + rng.random(len(bt)) * (L[bt] - bt_stage)

        n_noise = rng.poisson(_NOISE_MEAN, J)
        nz_j = np.repeat(np.arange(J), n_noise)
        nz_pos = 0.5 + rng.random(len(nz_j)) * (L[nz_j] + 0.5)

        C = len(self.ck_num)
        an_j = self.j_start[self.ck_person] + np.floor(rng.random(C) * nj[self.ck_person]).astype(np.int64)
        an_pos = 0.5 + rng.random(C) * (L[an_j] + 0.5)

        j = np.concatenate([s_j, bt, nz_j, an_j])
        pos = np.concatenate([s_pos, bt_pos, nz_pos, an_pos])
        cat = np.concatenate([s_stage, bt_stage, np.full(len(nz_j), 6), np.full(C, 7)]).astype(np.int8)
        ck = np.concatenate([np.full(len(s_j) + len(bt) + len(nz_j), -1), np.arange(C)])
        order = np.lexsort((pos, j))
        self.j, self.cat, self.ck = j[order], cat[order], ck[order]
        self.person = self.j_person[self.j]
        self.n = len(self.j)

    def _kinds(self) -> None:
        rng, n = self.rng, self.n
        kind = np.zeros(n, np.int16)
        u = rng.random(n)
        fallback = np.zeros(n, np.int16)
        for c, (weights, fb) in _CATEGORY_KINDS.items():
            m = self.cat == c
            names = list(weights)
            cdf = np.cumsum([weights[k] for k in names])
            idx = np.minimum(np.searchsorted(cdf / cdf[-1], u[m], side="right"), len(names) - 1)
            kind[m] = np.array([_K[k] for k in names], np.int16)[idx]
            fallback[m] = _K[fb]
        need = _K_NEED[kind]
        p = self.person
        ok = (
            (need == 0)
            | ((need == 1) & self.has_email[p])
            | ((need == 2) & self.has_phone[p] & self.has_cid[p])
            | ((need == 3) & self.store_ok[p])
        )
        self.kind = np.where(ok, kind, fallback)
        self.src = _K_SRC[self.kind]
        self.stage = _K_STAGE[self.kind]

    def _times(self) -> None:
        rng, n, P = self.rng, self.n, self.P
        J = len(self.j_person)
        first = _first_in_group(self.j)
        in_session = rng.random(n) < 0.35
        g = np.where(in_session, rng.uniform(20, 1200, n), rng.exponential(1.8 * _DAY, n))
        g = np.clip(g, 20, _MAX_GAP)
        g[first] = 0
        G = np.where(self.jno > 1, rng.uniform(*_JOURNEY_GAP, J), 0).round().astype(np.int64)
        sum_d = np.bincount(self.j_person, np.bincount(self.j, g, minlength=J), minlength=P)
        sum_g = np.bincount(self.j_person, G, minlength=P).astype(np.int64)
        scale = np.minimum(1.0, (_SPAN - sum_g) / np.maximum(sum_d, 1.0))
        gi = np.maximum(np.round(g * scale[self.person]), 1).astype(np.int64)
        gi[first] = 0
        cs = np.cumsum(gi)
        j_first_idx = np.flatnonzero(first)  # journeys are contiguous and all non-empty (stage 1 always)
        within = cs - cs[j_first_idx[self.j]]
        D = np.bincount(self.j, gi, minlength=J).astype(np.int64)
        cd = np.cumsum(D) - D
        cg = np.cumsum(G)
        pj0 = self.j_start[self.j_person]
        j_off = (cd - cd[pj0]) + (cg - cg[pj0])
        T = np.bincount(self.j_person, D, minlength=P).astype(np.int64) + sum_g
        self.in_progress = rng.random(P) < _IN_PROGRESS
        back = np.where(
            self.in_progress,
            rng.uniform(3600, 10 * _DAY, P),
            10 * _DAY + rng.random(P) * np.maximum(170 * _DAY - T, 0),
        ).astype(np.int64)
        start = self.as_of_s - back - T
        self.t = start[self.person] + j_off[self.j] + within
        self._avoid_folds()

    def _avoid_folds(self) -> None:
        # Naive local times inside a DST fold map back to two instants; move such events out of it.
        t = self.t
        for src, tz in _LOCAL_TZ.items():
            idx = np.flatnonzero(self.src == SOURCES.index(src))
            for _ in range(3):
                amb = _ambiguous_local(t[idx], tz)
                if not amb.any():
                    break
                t[idx[amb]] -= 7200

    def _identifiers(self) -> None:
        rng, n, p = self.rng, self.n, self.person
        web_or_cdp = np.isin(self.src, [SOURCES.index("web"), SOURCES.index("cdp")])
        rand_ck = self.ck_start[p] + np.floor(rng.random(n) * self.ck_count[p]).astype(np.int64)
        self.ck = np.where(self.ck >= 0, self.ck, np.where(web_or_cdp, rand_ck, -1))
        self.u = rng.random((n, 4))  # per-event draws shared by the source builders
        self.email_variant = _choice(rng, ([0, 1, 2, 3], [0.85, 0.05, 0.05, 0.05]), n)
        self.phone_fmt = rng.integers(0, 6, n)

    def _plant_fault(self) -> None:
        """Cut the stage >= 3 events of most journeys that have a product-question call (see GenerateSpec)."""
        # Its own stream: the draws of the population and the events stay those of the unplanted sample.
        rng = np.random.default_rng([self.spec.seed, self.b, 0xFA17])
        J = len(self.j_person)
        has_call = np.zeros(J, bool)
        has_call[self.j[self.kind == _K[_FAULT_KIND]]] = True
        stop = has_call & (rng.random(J) < _FAULT_STOP)
        drop = stop[self.j] & (self.stage >= 3)
        keep = ~drop
        for name in ("j", "cat", "ck", "person", "kind", "src", "stage", "t", "u", "email_variant", "phone_fmt"):
            setattr(self, name, getattr(self, name)[keep])
        self.n = int(keep.sum())
        self.L = np.where(stop, np.minimum(self.L, 2), self.L)
        # The cut may leave a gap longer than the journey timeout: close it up to _MAX_GAP, so the journey
        # stays one journey (later journeys only move further away), then keep times out of DST folds again.
        first = _first_in_group(self.j)
        gap = np.diff(self.t, prepend=self.t[:1])
        gap[first] = 0
        shift = np.cumsum(np.maximum(gap - _MAX_GAP, 0) * stop[self.j])
        self.t = self.t - (shift - shift[np.flatnonzero(first)[np.cumsum(first) - 1]])
        self._avoid_folds()

    # ----------------------------------------------------------------- per-person strings
    def _person_frame(self) -> pl.DataFrame:
        gp = (self.p0 + np.arange(self.P)).astype(np.int64)
        h = _mix64(gp.astype(np.uint64))
        fi = (h % np.uint64(len(_FIRST))).astype(np.int64)
        la = ((h >> np.uint64(16)) % np.uint64(len(_LAST))).astype(np.int64)
        do = ((h >> np.uint64(32)) % np.uint64(len(_DOMAINS))).astype(np.int64)
        line = gp % 10_000
        k = (gp // 10_000) % 640
        exch = (2 + k % 8) * 100 + 20 + (k // 8) % 80  # never N11, never 555
        area = (gp // 6_400_000) % len(_AREA_CODES)
        return (
            pl.DataFrame(
                {
                    "person_id": _zfill(gp, 9, "P"),
                    "household_id": _zfill(self.p0 + self.hh_first, 9, "H"),
                    "customer_id": _zfill(gp + 1, 9, "C"),
                    "loyalty_id": _zfill(gp + 1, 10, "LY"),
                    "_f": _pick(_FIRST, fi),
                    "_l": _pick(_LAST, la),
                    "_n": _zfill(gp, 1, ""),
                    "_d": _pick(_DOMAINS, do),
                    "ph_a": _pick(_AREA_CODES, area),
                    "ph_x": _zfill(exch, 3, ""),
                    "ph_n": _zfill(line, 4, ""),
                }
            )
            .with_columns(
                # The person number makes every address unique; names only make it look real.
                email=pl.concat_str(["_f", pl.lit("."), "_l", "_n", pl.lit("@"), "_d"]),
            )
            .drop("_f", "_l", "_n", "_d")
        )

    # ----------------------------------------------------------------- writing
    def write(self, landing: Path) -> _BatchOutput:
        """Write this batch's landing files and return its truth tables."""
        rng = self.rng
        pf = self._person_frame()
        cookies = "GA1.2." + pl.Series(_mix64(self.ck_num.astype(np.uint64))).cast(pl.String)
        devices = "dev-" + pl.Series(_mix64(self.dev_num.astype(np.uint64) ^ np.uint64(0xD1CE))).cast(pl.String)
        eid_num = self.b * _BATCH_ID_SPAN + np.arange(self.n, dtype=np.int64)
        months = self.t.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
        late = rng.random(self.n) < self.spec.late_rate
        # A late event is delivered with the next month's file (the as_of month at the latest).
        period = months + late
        last_period = int(np.datetime64(self.as_of_s, "s").astype("datetime64[M]").astype(np.int64))

        files: list[Path] = []
        dups: list[pa.Table] = []
        mals: list[pa.Table] = []
        parts: list[tuple[np.ndarray, pl.Series, pl.Series]] = []
        for si, src in enumerate(SOURCES):
            idx = np.flatnonzero(self.src == si)
            ids = _zfill(eid_num[idx], 13, _ID_PREFIX[src])
            frame, channel = getattr(self, f"_frame_{src}")(idx, ids, pf, cookies, devices)
            parts.append((idx, ids, channel))
            f, d, m = self._write_source(src, frame, period[idx], last_period, landing)
            files += f
            dups.append(d)
            mals.append(m)
        back = np.argsort(np.concatenate([i for i, _, _ in parts]), kind="stable")
        stage = pl.Series(self.stage.astype(np.int8))
        truth = pl.DataFrame(
            {
                "source": pl.Series(list(SOURCES)).gather(self.src.astype(np.int64)),
                "event_id": pl.concat([s for _, s, _ in parts]).gather(back),
                "person_id": pf["person_id"].gather(self.person),
                "household_id": pf["household_id"].gather(self.person),
                "true_stage": stage.set(stage == 0, None),
                "journey_no": pl.Series(self.jno[self.j]),
                "occurred_at": _utc_series(self.t),
                "channel": pl.concat([c for _, _, c in parts]).gather(back),
                "event_type": pl.Series(_K_ETYPE, dtype=pl.String).gather(self.kind.astype(np.int64)),
                "is_late": pl.Series(late),
            }
        )
        return _BatchOutput(
            files=files,
            n_true=self.n,
            truth=truth.to_arrow(),
            persons=self._persons_table(pf, devices, cookies),
            duplicates=pa.concat_tables(dups),
            malformed=pa.concat_tables(mals),
        )

    def _persons_table(self, pf: pl.DataFrame, devices: pl.Series, cookies: pl.Series) -> pa.Table:
        def lists(count: np.ndarray, values: pl.Series) -> pa.ListArray:
            offsets = np.r_[0, np.cumsum(count)].astype(np.int32)
            return pa.ListArray.from_arrays(pa.array(offsets), values.to_arrow().cast(pa.string()))

        shared = self.dev_shared
        return pa.table(
            {
                "person_id": pf["person_id"].to_arrow(),
                "household_id": pf["household_id"].to_arrow(),
                "customer_id": pf["customer_id"].set(pl.Series(~self.has_cid), None).to_arrow(),
                "email": pf["email"].set(pl.Series(~self.has_email), None).to_arrow(),
                "phone": pf.select(pl.concat_str([pl.lit("+1"), "ph_a", "ph_x", "ph_n"]))
                .to_series()
                .set(pl.Series(~self.has_phone), None)
                .to_arrow(),
                "loyalty_id": pf["loyalty_id"].set(pl.Series(~self.has_loyalty), None).to_arrow(),
                "device_ids": lists(self.dev_count, devices),
                "cookie_ids": lists(self.ck_count, cookies),
                "shared_device_ids": lists(
                    np.bincount(self.dev_person[shared], minlength=self.P), devices.filter(pl.Series(shared))
                ),
                "is_store_shopper": pa.array(self.is_store),
                "n_journeys": pa.array(self.nj.astype(np.int16)),
                "in_progress": pa.array(self.in_progress),
            }
        )

    # ----------------------------------------------------------------- per-source rows
    def _common(self, idx: np.ndarray, pf: pl.DataFrame) -> tuple[np.ndarray, pl.DataFrame]:
        p = self.person[idx]
        people = pf.select(pl.all().gather(p)).with_columns(
            _ev=pl.Series(self.email_variant[idx]), _pf=pl.Series(self.phone_fmt[idx])
        )
        return p, people

    def _frame_web(self, idx, ids, pf, cookies, devices) -> tuple[pl.DataFrame, pl.Series]:
        rng, k, u = self.rng, self.kind[idx], self.u[idx]
        p, people = self._common(idx, pf)
        ck = self.ck[idx]
        dev = self.ck_dev[ck]
        buys = np.isin(k, [_K["web_order"], _K["web_renewal"]])
        # Every anchor is a login; purchases need one; browsing is mostly anonymous.
        logged = (self.cat[idx] == 7) | buys | (u[:, 0] < 0.3)
        value = np.where(
            k == _K["web_order"],
            rng.lognormal(np.log(60), 0.6, len(idx)),
            np.where(k == _K["web_renewal"], rng.lognormal(np.log(120), 0.4, len(idx)), np.nan),
        ).round(2)
        sku = rng.integers(1, 5000, len(idx))
        plat = self.dev_plat[dev]
        page_type = pl.Series(_K_ATTR).gather(k.astype(np.int64))
        frame = people.select(
            hit_id=ids,
            hit_time=_local_naive(self.t[idx], "Europe/Berlin", "%Y-%m-%d %H:%M:%S"),
            platform=_pick(_PLATFORMS[0], plat),
            action=pl.Series(_K_RAW).gather(k.astype(np.int64)),
            page_type=page_type,
            page_url=pl.when(page_type == "product")
            .then(pl.concat_str([pl.lit("/products/sku-"), _zfill(sku, 5, "")]))
            .when(page_type == "home")
            .then(pl.lit("/"))
            .otherwise(pl.concat_str([pl.lit("/"), page_type])),
            client_id=cookies.gather(ck),
            device_id=devices.gather(dev),
            login_email=pl.when(pl.Series(logged & self.has_email[p])).then(
                _messy_email(pl.col("email"), pl.col("_ev"))
            ),
            customer_no=pl.when(pl.Series(logged & self.has_cid[p])).then(pl.col("customer_id")),
            order_value=pl.Series(value).fill_nan(None),
            _t=pl.Series(self.t[idx]),
        )
        channel = pl.Series(np.where(plat <= 1, "web", "app"), dtype=pl.String)
        return frame, channel

    def _frame_email(self, idx, ids, pf, cookies, devices) -> tuple[pl.DataFrame, pl.Series]:
        k = self.kind[idx]
        _, people = self._common(idx, pf)
        frame = people.select(
            id=ids,
            ts=_utc_series(self.t[idx]).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            event=pl.Series(_K_RAW).gather(k.astype(np.int64)),
            campaign=_pick(_CAMPAIGNS, self.rng.integers(0, len(_CAMPAIGNS), len(idx))),
            email=_messy_email(pl.col("email"), pl.col("_ev")),
            _t=pl.Series(self.t[idx]),
        )
        return frame, pl.Series(["email"] * len(idx), dtype=pl.String)

    def _frame_calls(self, idx, ids, pf, cookies, devices) -> tuple[pl.DataFrame, pl.Series]:
        rng, k, u = self.rng, self.kind[idx], self.u[idx]
        p, people = self._common(idx, pf)
        n = len(idx)
        # The first call of a person links the phone to the account; later callers often skip the IVR.
        account = _first_in_group(p) | (u[:, 0] < 0.5)
        complaint = k == _K["call_complaint"]
        if self.spec.plant_fault:
            complaint = complaint | (k == _K[_FAULT_KIND])  # the planted fault: unhappy product calls
        csat = (
            np.where(
                complaint,
                rng.choice(5, n, p=[0.35, 0.3, 0.2, 0.1, 0.05]),
                rng.choice(5, n, p=[0.05, 0.1, 0.2, 0.35, 0.3]),
            )
            + 1
        )
        frame = people.select(
            call_id=ids,
            started=_local_naive(self.t[idx], "America/New_York", "%Y-%m-%dT%H:%M:%S"),
            caller=_raw_phone(pl.col("ph_a"), pl.col("ph_x"), pl.col("ph_n"), pl.col("_pf")),
            account=pl.when(pl.Series(account)).then(pl.col("customer_id")),
            reason=pl.Series(_K_ATTR).gather(k.astype(np.int64)),
            duration_s=pl.Series(rng.lognormal(np.log(300), 0.7, n).astype(np.int64) + 15),
            csat=pl.Series(csat).set(pl.Series(u[:, 1] >= 0.6), None),
            agent_id=_zfill(rng.integers(1, 250, n), 3, "A"),
            _t=pl.Series(self.t[idx]),
        )
        return frame, pl.Series(["call_centre"] * n, dtype=pl.String)

    def _frame_pos(self, idx, ids, pf, cookies, devices) -> tuple[pl.DataFrame, pl.Series]:
        rng, k, u = self.rng, self.kind[idx], self.u[idx]
        p, people = self._common(idx, pf)
        n = len(idx)
        loyalty = self.has_loyalty[p]
        cid = _first_in_group(p) | ~loyalty | (u[:, 0] < 0.4)
        home = (_mix64((self.p0 + p).astype(np.uint64)) >> np.uint64(40)) % np.uint64(120)
        store = np.where(u[:, 1] < 0.8, home.astype(np.int64), rng.integers(0, 120, n)) + 1
        amount = np.where(
            k == _K["pos_sale"], rng.lognormal(np.log(45), 0.7, n), rng.lognormal(np.log(110), 0.4, n)
        ).round(2)
        frame = people.select(
            receipt_id=ids,
            sold_at=_utc_series(self.t[idx]),
            kind=pl.Series(_K_RAW).gather(k.astype(np.int64)),
            store_id=_zfill(store, 3, "S"),
            loyalty_card=pl.when(pl.Series(loyalty)).then(pl.col("loyalty_id")),
            customer_id=pl.when(pl.Series(cid)).then(pl.col("customer_id")),
            amount=pl.Series(amount),
            items=pl.Series(rng.integers(1, 6, n)),
            _t=pl.Series(self.t[idx]),
        )
        return frame, pl.Series(["store"] * n, dtype=pl.String)

    def _frame_support(self, idx, ids, pf, cookies, devices) -> tuple[pl.DataFrame, pl.Series]:
        rng, k, u = self.rng, self.kind[idx], self.u[idx]
        p, people = self._common(idx, pf)
        n = len(idx)
        survey = k == _K["survey"]
        # Journeys that go on to renew are the happy ones.
        happy = self.L[self.j[idx]] == 5
        nps = np.clip(np.round(rng.normal(np.where(happy, 8.3, 5.5), np.where(happy, 1.6, 2.6))), 0, 10)
        frame = people.select(
            record_id=ids,
            created_at=_local_naive(self.t[idx], "Europe/London", "%Y-%m-%dT%H:%M:%S"),
            record_type=pl.Series(_K_RAW).gather(k.astype(np.int64)),
            email=_messy_email(pl.col("email"), pl.col("_ev")),
            phone=pl.when(pl.Series(self.has_phone[p] & (u[:, 0] < 0.4))).then(
                _raw_phone(pl.col("ph_a"), pl.col("ph_x"), pl.col("ph_n"), pl.col("_pf"))
            ),
            nps=pl.Series(nps.astype(np.int64)).set(pl.Series(~survey), None),
            topic=_pick(_TOPICS, rng.integers(0, len(_TOPICS), n)),
            _t=pl.Series(self.t[idx]),
        )
        channel = pl.Series(np.where(survey, "survey", "support"), dtype=pl.String)
        return frame, channel

    def _frame_cdp(self, idx, ids, pf, cookies, devices) -> tuple[pl.DataFrame, pl.Series]:
        rng, k, u = self.rng, self.kind[idx], self.u[idx]
        p, people = self._common(idx, pf)
        n = len(idx)
        delivery, chat = k == _K["delivery"], k == _K["chat"]
        user = self.has_cid[p] & (u[:, 0] < np.where(delivery, 0.7, 0.3))
        mail = self.has_email[p] & (u[:, 1] < np.where(chat, 0.4, 0.15))
        off = rng.integers(0, len(_CDP_OFFSETS), n)
        minutes = np.array([m for _, m in _CDP_OFFSETS])[off]
        local = _utc_series(self.t[idx] + minutes * 60).dt.strftime("%Y-%m-%dT%H:%M:%S")
        channel = pl.Series(_K_ATTR).gather(k.astype(np.int64))
        ads = channel.is_in(["ads", "social"])
        has_props = pl.Series(~delivery & (u[:, 2] < 0.8))
        frame = people.select(
            message_id=ids,
            timestamp=local + _pick([s for s, _ in _CDP_OFFSETS], off),
            channel=channel,
            event=pl.Series(_K_RAW).gather(k.astype(np.int64)),
            anonymous_id=cookies.gather(self.ck[idx]),
            user_id=pl.when(pl.Series(user)).then(pl.col("customer_id")),
            email=pl.when(pl.Series(mail)).then(_messy_email(pl.col("email"), pl.col("_ev"))),
            properties=pl.when(has_props).then(
                pl.struct(
                    campaign=pl.when(ads).then(_pick(_CAMPAIGNS, rng.integers(0, len(_CAMPAIGNS), n))),
                    placement=pl.when(ads).then(_pick(_PLACEMENTS, rng.integers(0, len(_PLACEMENTS), n))),
                    topic=pl.when(~ads).then(_pick(_TOPICS, rng.integers(0, len(_TOPICS), n))),
                )
            ),
            _t=pl.Series(self.t[idx]),
        )
        return frame, channel

    # ----------------------------------------------------------------- files
    def _write_source(
        self, src: str, frame: pl.DataFrame, period: np.ndarray, last_period: int, landing: Path
    ) -> tuple[list[Path], pa.Table, pa.Table]:
        rng, spec = self.rng, self.spec
        fmt, id_col, ts_col = _EXT[src], _ID_COL[src], _TS_COL[src]
        n = frame.height
        if fmt == "csv":
            # Text exports hold text; garbage like "twelve" must fit in any column.
            frame = frame.with_columns(pl.exclude("_t").cast(pl.String))
        frame = frame.with_columns(_period=pl.Series(period, dtype=pl.Int64))

        dup = np.flatnonzero(rng.random(n) < spec.duplicate_rate)
        dup_period = np.where(period[dup] < last_period, period[dup] + 1, period[dup] - 1)
        dup_rows = frame[dup].with_columns(_period=pl.Series(dup_period, dtype=pl.Int64))

        n_mal = int(rng.binomial(n, spec.malformed_rate)) if n else 0
        kinds_all = _MALFORMED_KINDS[src]
        mal_kind = np.array(kinds_all, dtype=object)[rng.integers(0, len(kinds_all), n_mal)]
        mal = frame[rng.integers(0, max(n, 1), n_mal)].with_columns(
            pl.Series(id_col, _zfill(self.b * _BATCH_ID_SPAN + np.arange(n_mal), 13, _ID_PREFIX[src] + "X")),
            _kind=pl.Series(mal_kind.tolist(), dtype=pl.String),
        )
        kind = pl.col("_kind")
        if fmt == "parquet":
            ts = (
                pl.when(kind == "empty_timestamp")
                .then(None)
                .when(kind == "implausible_timestamp")
                .then(pl.lit(datetime(1970, 1, 1, tzinfo=UTC)).cast(pl.Datetime("us", "UTC")))
                .otherwise(pl.col(ts_col))
            )
        else:
            ts = (
                pl.when(kind == "bad_timestamp")
                .then(pl.lit(_BAD_TS[src]))
                .when(kind == "empty_timestamp")
                .then(pl.lit("" if fmt == "csv" else None, dtype=pl.String))
                .otherwise(pl.col(ts_col))
            )
        mal = mal.with_columns(ts.alias(ts_col))
        if src in _NUMERIC_COL:
            col = _NUMERIC_COL[src]
            mal = mal.with_columns(
                pl.when(kind == "non_numeric").then(pl.lit(_NON_NUMERIC[src])).otherwise(pl.col(col)).alias(col)
            )

        rows = pl.concat([frame, dup_rows])
        is_dup = np.r_[np.zeros(n, bool), np.ones(len(dup), bool)]
        rows = rows.with_columns(_dup=pl.Series(is_dup))
        files: list[Path] = []
        dup_out: list[pa.Table] = []
        mal_out: list[pa.Table] = []
        # One sort, then contiguous slices per delivery month (a filter per month is many times slower).
        rows = rows.sort(["_period", "_t", id_col])
        mal = mal.sort(["_period", "_t", id_col])
        rp, mp = rows["_period"].to_numpy(), mal["_period"].to_numpy()
        for per in np.unique(np.r_[rp, mp]).tolist():
            name = f"{src}_{_month_label(per)}_part{self.b:05d}.{fmt}"
            rel = f"{src}/{name}"
            r0, r1 = np.searchsorted(rp, [per, per + 1])
            m0, m1 = np.searchsorted(mp, [per, per + 1])
            body, bad = rows[int(r0) : int(r1)], mal[int(m0) : int(m1)]
            nb, nm = body.height, bad.height
            at = np.sort(rng.choice(nb + nm, nm, replace=False)) if nm else np.zeros(0, np.int64)
            is_bad = np.zeros(nb + nm, bool)
            is_bad[at] = True
            order = np.empty(nb + nm, np.int64)
            order[~is_bad] = np.arange(nb)
            order[is_bad] = nb + np.arange(nm)
            drop = ["_t", "_period", "_dup", "_kind"]
            good_part = body.drop(drop, strict=False)
            bad_part = bad.drop(drop, strict=False)
            path = landing / src / name
            if fmt == "parquet":
                table = pl.concat([good_part, bad_part])[order].to_arrow()
                buf = pa.BufferOutputStream()
                pq.write_table(table, buf, compression="zstd")
                _atomic_write(path, buf.getvalue().to_pybytes())
                raw = bad_part.write_ndjson().splitlines() if nm else []
                first_line = 1
            else:
                good_lines, header = self._lines(good_part, src)
                raw = self._lines(bad_part, src)[0] if nm else []
                bad_kinds = bad["_kind"].to_list()
                sep = "," if src != "calls" else ";"
                raw = [
                    sep.join(r.split(sep)[:3]) if kd == "ragged_row" else r[: len(r) // 2] if kd == "broken_json" else r
                    for r, kd in zip(raw, bad_kinds, strict=True)
                ]
                text = np.empty(nb + nm, dtype=object)
                text[~is_bad] = good_lines
                text[is_bad] = raw
                head = [header] if header is not None else []
                _atomic_write(path, ("\n".join([*head, *text.tolist()]) + "\n").encode())
                first_line = 2 if header is not None else 1
            files.append(path)
            d = body.filter(pl.col("_dup"))
            dup_out.append(
                pa.table(
                    {
                        "source": pa.array([src] * d.height, pa.string()),
                        "event_id": d[id_col].to_arrow().cast(pa.string()),
                        "file": pa.array([rel] * d.height, pa.string()),
                    }
                )
            )
            mal_out.append(
                pa.table(
                    {
                        "source": pa.array([src] * nm, pa.string()),
                        "file": pa.array([rel] * nm, pa.string()),
                        "line": pa.array(at + first_line, pa.int64()),
                        "row_index": pa.array(at, pa.int64()),
                        "kind": bad["_kind"].to_arrow().cast(pa.string()),
                        "event_id": bad[id_col].to_arrow().cast(pa.string()),
                        "raw": pa.array(raw, pa.string()),
                    }
                )
            )
        empty = {k: pa.table({f.name: pa.array([], f.type) for f in s}) for k, s in _TRUTH_SCHEMAS.items()}
        return (
            files,
            pa.concat_tables(dup_out) if dup_out else empty["duplicates"],
            pa.concat_tables(mal_out) if mal_out else empty["malformed"],
        )

    @staticmethod
    def _lines(frame: pl.DataFrame, src: str) -> tuple[list[str], str | None]:
        if _EXT[src] == "csv":
            text = frame.write_csv(separator=";" if src == "calls" else ",", null_value="")
            lines = text.split("\n")
            return lines[1:-1], lines[0]
        return frame.write_ndjson().split("\n")[:-1], None
