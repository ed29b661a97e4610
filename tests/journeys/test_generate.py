"""The synthetic generator: determinism, row accounting, parseable files and a truth the pipeline can recover."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from journeys.config import SourceConfig, load_settings
from journeys.generate import SOURCES, GenerateResult, GenerateSpec, generate_sample

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "src" / "journeys" / "stage_models" / "generic_lifecycle.yaml"
# Several batches (chunk_events small) and enough shared devices to test them at this size.
SPEC = GenerateSpec(events=6_000, seed=7, chunk_events=2_500, shared_device_rate=0.3)


@pytest.fixture(scope="module")
def sources() -> dict[str, SourceConfig]:
    return {s.name: s for s in load_settings(REPO / "journeys.yaml").sources}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate_sample(SPEC, tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def truth(sample: GenerateResult) -> pl.DataFrame:
    return pl.read_parquet(sample.truth_dir / "events.parquet")


@pytest.fixture(scope="module")
def persons(sample: GenerateResult) -> pl.DataFrame:
    return pl.read_parquet(sample.truth_dir / "persons.parquet")


@pytest.fixture(scope="module")
def malformed(sample: GenerateResult) -> pl.DataFrame:
    return pl.read_parquet(sample.truth_dir / "malformed.parquet")


@pytest.fixture(scope="module")
def landing(sample: GenerateResult, sources: dict[str, SourceConfig]) -> dict[str, pl.DataFrame]:
    """Every parseable landing row per source, all columns as text, with its file name."""
    con = duckdb.connect()
    out = {}
    for name, cfg in sources.items():
        glob = str(sample.landing_dir / cfg.path)
        if cfg.format == "csv":
            sql = "select * from read_csv(?, delim=?, header=true, all_varchar=true, ignore_errors=true, filename=true)"
            df = pl.from_arrow(con.sql(sql, params=[glob, cfg.delimiter]).to_arrow_table())
        elif cfg.format == "jsonl":
            cols = _json_columns(sample.landing_dir / name)
            sql = "select * from read_json(?, format='newline_delimited', columns=?, ignore_errors=true, filename=true)"
            df = pl.from_arrow(con.sql(sql, params=[glob, cols]).to_arrow_table())
            df = df.filter(pl.col(cfg.event_id).is_not_null())  # broken lines come back as all-null rows
        else:
            sql = "select * from read_parquet(?, filename=true)"
            df = pl.from_arrow(con.sql(sql, params=[glob]).to_arrow_table())
        out[name] = df.with_columns(pl.col("filename").map_elements(lambda f: Path(f).name, pl.String))
    return out


def _json_columns(folder: Path) -> dict[str, str]:
    first = next(folder.glob("*.jsonl")).read_text().splitlines()[0]
    keys = re.findall(r'"([a-z_]+)":', first.split('"properties"')[0])
    return {**{k: "VARCHAR" for k in keys}, **({"properties": "JSON"} if "properties" in first else {})}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_spec_gives_byte_identical_files(sample: GenerateResult, tmp_path: Path) -> None:
    again = generate_sample(SPEC, tmp_path / "again")
    assert _hashes(sample.landing_dir.parent) == _hashes(again.landing_dir.parent)
    other = generate_sample(GenerateSpec(events=1_000, seed=8), tmp_path / "other")
    assert _hashes(other.landing_dir) != _hashes(sample.landing_dir)


def test_row_accounting(sample: GenerateResult, truth: pl.DataFrame, malformed: pl.DataFrame) -> None:
    dups = pl.read_parquet(sample.truth_dir / "duplicates.parquet")
    rows = 0
    for f in sample.files:
        if f.suffix == ".parquet":
            rows += duckdb.connect().sql("select count(*) from read_parquet(?)", params=[str(f)]).fetchall()[0][0]
        else:
            rows += len(f.read_text().splitlines()) - (f.suffix == ".csv")
    assert truth.height == sample.n_true_events
    assert 4_500 < truth.height < 7_500
    assert dups.height == sample.n_duplicates > 0 and malformed.height == sample.n_malformed > 0
    assert truth.height == rows - dups.height - malformed.height
    assert truth.select(pl.struct("source", "event_id").is_unique().all()).item()
    assert set(truth["source"].unique()) == set(SOURCES)
    assert persons_count(sample) == sample.n_persons == truth["person_id"].n_unique()
    # A re-delivery is an exact copy of a true row, in another file.
    assert dups.join(truth, on=["source", "event_id"], how="anti").is_empty()


def persons_count(sample: GenerateResult) -> int:
    return pl.read_parquet(sample.truth_dir / "persons.parquet").height


def test_files_parse_and_times_round_trip(
    landing: dict[str, pl.DataFrame],
    truth: pl.DataFrame,
    malformed: pl.DataFrame,
    sources: dict[str, SourceConfig],
    sample: GenerateResult,
) -> None:
    dups = pl.read_parquet(sample.truth_dir / "duplicates.parquet")
    con = duckdb.connect()
    for name, cfg in sources.items():
        df = landing[name].rename({cfg.event_id: "event_id", cfg.occurred_at: "raw_ts"})
        bad = malformed.filter(pl.col("source") == name)
        # Only ragged rows and broken JSON lines fail to parse; every other line is a row.
        unparsed = bad.filter(pl.col("kind").is_in(["ragged_row", "broken_json"])).height
        expected = truth.filter(pl.col("source") == name).height + dups.filter(pl.col("source") == name).height
        assert df.height == expected + bad.height - unparsed, name
        good = df.join(truth.filter(pl.col("source") == name), on="event_id", how="inner")
        assert good.height == expected, name
        if cfg.format == "parquet":
            parsed = good["raw_ts"]
        else:
            con.register("g", good.select("event_id", "raw_ts"))
            if cfg.timestamp_format:
                sql = "select timezone(?, strptime(raw_ts, ?)) from g"
                args = [cfg.timezone, cfg.timestamp_format]
            elif name in ("email", "cdp"):  # offset-aware ISO
                sql, args = "select raw_ts::timestamptz from g", []
            else:
                sql, args = "select timezone(?, raw_ts::timestamp) from g", [cfg.timezone]
            parsed = pl.Series([r[0] for r in con.execute(sql, args).fetchall()])
        assert (parsed.dt.convert_time_zone("UTC") == good["occurred_at"]).all(), name


def test_malformed_rows_are_where_truth_says(sample: GenerateResult, malformed: pl.DataFrame) -> None:
    assert set(malformed["kind"]) >= {"bad_timestamp", "empty_timestamp", "ragged_row", "broken_json"}
    for row in malformed.filter(pl.col("source") != "pos").iter_rows(named=True):
        lines = (sample.landing_dir / row["file"]).read_text().splitlines()
        assert lines[row["line"] - 1] == row["raw"]
    pos = malformed.filter(pl.col("source") == "pos")
    for row in pos.iter_rows(named=True):
        t = pl.read_parquet(sample.landing_dir / row["file"])
        assert t["receipt_id"][row["row_index"]] == row["event_id"]
        ts = t["sold_at"][row["row_index"]]
        assert ts is None or ts.year == 1970


def _norm(kind: str, value: str) -> str:
    if kind == "email":
        return value.strip().lower()
    if kind == "phone":
        digits = re.sub(r"\D", "", value)
        return "+" + (digits if len(digits) == 11 else "1" + digits)
    return value


def _identity_edges(
    landing: dict[str, pl.DataFrame], sources: dict[str, SourceConfig], truth: pl.DataFrame
) -> pl.DataFrame:
    """One row per (true event, identifier): person_id, typed normalised identifier."""
    parts = []
    for name, cfg in sources.items():
        df = (
            landing[name]
            .join(
                truth.filter(pl.col("source") == name).select("event_id", "person_id"),
                left_on=cfg.event_id,
                right_on="event_id",
            )
            .unique(cfg.event_id)
        )
        for col, kind in cfg.identifiers.items():
            parts.append(
                df.select(
                    "person_id",
                    ev=pl.lit(name) + ":" + pl.col(cfg.event_id),
                    ident=pl.lit(kind + ":") + pl.col(col).map_elements(lambda v, k=kind: _norm(k, v), pl.String),
                ).drop_nulls()
            )
    return pl.concat(parts)


def _components(edges: pl.DataFrame) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _ev, ids in edges.group_by("ev").agg("ident").iter_rows():
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    return {i: find(i) for i in edges["ident"].unique()}


def test_identity_is_resolvable_by_construction(
    landing: dict[str, pl.DataFrame],
    sources: dict[str, SourceConfig],
    truth: pl.DataFrame,
    persons: pl.DataFrame,
) -> None:
    edges = _identity_edges(landing, sources, truth)
    shared = {"device_id:" + d for d in persons["shared_device_ids"].explode().drop_nulls()}
    assert shared, "fixture should contain shared devices"
    # No identifier except a shared device is seen with two persons.
    owners = edges.group_by("ident").agg(pl.col("person_id").n_unique().alias("n"))
    assert set(owners.filter(pl.col("n") > 1)["ident"]) == shared
    # Without the shared devices, the identifier graph has exactly one component per person.
    private = edges.filter(~pl.col("ident").is_in(list(shared)))
    comp = _components(private)
    per = (
        private.with_columns(comp=pl.col("ident").replace_strict(comp))
        .group_by("person_id")
        .agg(pl.col("comp").n_unique().alias("n"))
    )
    assert (per["n"] == 1).all()
    assert per.height == truth["person_id"].n_unique()
    # Every true event carries at least one identifier, and every person's ids match persons.parquet.
    assert edges["ev"].n_unique() == truth.height
    p = persons.row(0, named=True)
    mine = set(edges.filter(pl.col("person_id") == p["person_id"])["ident"])
    assert {"device_id:" + d for d in p["device_ids"]} | {"cookie_id:" + c for c in p["cookie_ids"]} <= mine


def test_shared_devices_are_used_by_two_persons_with_customer_ids(
    landing: dict[str, pl.DataFrame], truth: pl.DataFrame, persons: pl.DataFrame
) -> None:
    sharers = persons.filter(pl.col("shared_device_ids").list.len() > 0)
    assert sharers.height >= 4 and sharers["customer_id"].null_count() == 0
    web = landing["web"].join(truth.filter(pl.col("source") == "web"), left_on="hit_id", right_on="event_id")
    users = web.group_by("device_id").agg(pl.col("person_id").unique())
    users = dict(users.iter_rows())
    for dev in sharers["shared_device_ids"].explode().unique():
        assert len(users[dev]) == 2
        same_hh = persons.filter(pl.col("person_id").is_in(users[dev]))["household_id"]
        assert same_hh.n_unique() == 1
        # Each sharer logs in on it with their own customer number.
        logged = web.filter((pl.col("device_id") == dev) & pl.col("customer_no").is_not_null())
        assert logged["person_id"].n_unique() == 2


def test_journey_gaps_and_window(truth: pl.DataFrame, persons: pl.DataFrame) -> None:
    t = (
        truth.sort("person_id", "occurred_at", "event_id")
        .with_columns(
            gap=pl.col("occurred_at").diff().over("person_id"),
            step=pl.col("journey_no").diff().over("person_id"),
        )
        .drop_nulls("gap")
    )
    assert t.filter(pl.col("step") == 0)["gap"].max() < timedelta(days=25)
    assert t.filter(pl.col("step") != 0)["gap"].min() > timedelta(days=40)
    assert set(t["step"].unique()) <= {0, 1}
    as_of = SPEC.as_of
    assert truth["occurred_at"].max() < as_of
    assert truth["occurred_at"].min() >= as_of - timedelta(days=180)
    assert truth.group_by("person_id").agg(pl.col("journey_no").max())["journey_no"].max() == 3
    last = truth.group_by("person_id").agg(pl.col("occurred_at").max())
    recent = (last["occurred_at"] > as_of - timedelta(days=10)).mean()
    assert 0.2 < recent < 0.45
    assert persons["in_progress"].mean() == pytest.approx(0.3, abs=0.06)


def _canonical(field, default: str) -> pl.Expr:
    if field is None:
        return pl.lit(default)
    if field.value is not None:
        return pl.lit(field.value)
    raw = pl.col(field.column)
    # config.MappedField: unmapped raw values are lower-snake-cased as they are.
    return raw.replace_strict(field.map, default=raw.str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "_"))


def _stage_of(event_type: str, attrs: dict, stages: list[dict]) -> int | None:
    for i, stage in enumerate(stages, start=1):
        for rule in stage["rules"]:
            if event_type not in rule.get("event_type", [event_type]):
                continue
            if all(attrs.get(k) in v for k, v in rule.get("attributes", {}).items()):
                return i
    return None


def test_true_stage_follows_the_stage_model(
    landing: dict[str, pl.DataFrame], sources: dict[str, SourceConfig], truth: pl.DataFrame
) -> None:
    stages = yaml.safe_load(MODEL.read_text())["stages"]
    for rule in (r for s in stages for r in s["rules"]):
        assert set(rule) <= {"event_type", "attributes"}, "test re-implements only these predicates"
    seen = Counter()
    for name, cfg in sources.items():
        extra = [c for c in landing[name].columns if c not in [*cfg.mapped_columns(), "filename"]]
        df = (
            landing[name]
            .unique(cfg.event_id)
            .select(
                pl.col(cfg.event_id).alias("event_id"),
                *extra,
                channel=_canonical(cfg.channel, ""),
                event_type=_canonical(cfg.event_type, ""),
            )
            .join(truth.filter(pl.col("source") == name), on="event_id", suffix="_truth")
        )
        assert (df["channel"] == df["channel_truth"]).all(), name
        assert (df["event_type"] == df["event_type_truth"]).all(), name
        for row in df.iter_rows(named=True):
            attrs = {c: row[c] for c in extra}
            assert _stage_of(row["event_type"], attrs, stages) == row["true_stage"], (name, row)
            seen[row["true_stage"]] += 1
    assert set(seen) == {None, 1, 2, 3, 4, 5}
    # Every stage is reached through several channels, awareness only through ads and social.
    by_stage = truth.group_by("true_stage").agg(pl.col("channel").unique())
    channels = {s: set(c) for s, c in by_stage.iter_rows()}
    assert channels[1] == {"ads", "social"}
    assert all(len(channels[s]) >= 3 for s in (2, 3, 4, 5))


def test_raw_identifiers_are_messy(landing: dict[str, pl.DataFrame]) -> None:
    emails = landing["email"]["email"]
    assert (emails != emails.str.strip_chars().str.to_lowercase()).any()
    phones = landing["calls"]["caller"]
    shapes = set(phones.str.replace_all(r"\d", "9"))
    assert shapes == {
        "+9 (999) 999-9999",
        "999.999.9999",
        "99999999999",
        "(999) 999-9999",
        "+99999999999",
        "999-999-9999",
    }
    nps = landing["support"].filter(pl.col("record_type") != "survey")["nps"]
    assert nps.null_count() == nps.len()


def _household_ranks(persons: pl.DataFrame) -> pl.DataFrame:
    # A household's persons are numbered one after the other, the first one giving the household its id.
    return persons.with_columns(
        size=pl.len().over("household_id"),
        rank=pl.col("person_id").rank("ordinal").over("household_id") - 1,
        sharing=(pl.col("shared_device_ids").list.len() > 0).any().over("household_id"),
    )


def test_a_household_of_exactly_two_can_share_a_device(persons: pl.DataFrame) -> None:
    sharers = _household_ranks(persons).filter(pl.col("shared_device_ids").list.len() > 0)
    assert sharers["size"].min() == 2
    assert set(sharers["rank"]) == {0, 1}


def test_only_the_two_sharers_of_a_household_must_hold_a_customer_id(persons: pl.DataFrame) -> None:
    third = _household_ranks(persons).filter(pl.col("sharing") & (pl.col("rank") == 2))
    # A third member is drawn like anyone else: some hold a customer id, some do not.
    assert third.height >= 5
    assert 0 < third["customer_id"].null_count() < third.height


def test_journeys_that_stop_at_stage_two_go_back_to_stage_one_too(truth: pl.DataFrame) -> None:
    staged = truth.filter(pl.col("true_stage").is_not_null()).sort("person_id", "occurred_at", "event_id")
    after_two = (pl.col("true_stage") == 2).cast(pl.Int32).cum_sum() > 0
    journeys = staged.group_by("person_id", "journey_no").agg(
        furthest=pl.col("true_stage").max(),
        went_back=((pl.col("true_stage") == 1) & after_two).any(),
    )
    assert journeys.filter((pl.col("furthest") == 2) & pl.col("went_back")).height >= 5


def test_every_cookie_is_anchored_by_a_logged_in_visit(tmp_path: Path) -> None:
    # Many small batches: each batch numbers its cookies from 0, and cookie 0's anchor is a case of its own.
    sample = generate_sample(GenerateSpec(events=1_500, seed=5, chunk_events=150), tmp_path)
    persons = pl.read_parquet(sample.truth_dir / "persons.parquet")
    con = duckdb.connect()
    web = con.sql(
        "select client_id from read_csv(?, all_varchar=true, ignore_errors=true)"
        " where customer_no is not null or login_email is not null",
        params=[str(sample.landing_dir / "web" / "*.csv")],
    ).fetchall()
    cdp = con.sql(
        "select anonymous_id from read_json(?, format='newline_delimited', ignore_errors=true)"
        " where user_id is not null or email is not null",
        params=[str(sample.landing_dir / "cdp" / "*.jsonl")],
    ).fetchall()
    cookies = set(persons["cookie_ids"].explode().drop_nulls())
    assert len(cookies) > 200 and persons.height > 60
    assert cookies - {c for (c,) in web + cdp} == set()


def _stages_per_journey(sample: GenerateResult) -> pl.DataFrame:
    truth = pl.read_parquet(sample.truth_dir / "events.parquet")
    return truth.group_by("person_id", "journey_no").agg(pl.col("true_stage").drop_nulls().sort())


def test_a_planted_fault_cuts_a_journey_whole_from_purchase_on(tmp_path: Path) -> None:
    spec = GenerateSpec(events=1_500, seed=3)
    plain = _stages_per_journey(generate_sample(spec, tmp_path / "plain"))
    planted = _stages_per_journey(generate_sample(replace(spec, plant_fault=True), tmp_path / "planted"))
    both = plain.join(planted, on=["person_id", "journey_no"], suffix="_planted", validate="1:1")
    assert both.height == plain.height == planted.height
    before_purchase = pl.col("true_stage").list.eval(pl.element().filter(pl.element() < 3))
    both = both.with_columns(
        kept=pl.col("true_stage_planted") == pl.col("true_stage"),
        cut=pl.col("true_stage_planted") == before_purchase,
    )
    # Each journey keeps every stage event, or exactly those before purchase (stage 3).
    assert both.filter(~pl.col("kept") & ~pl.col("cut")).is_empty()
    cut = both.filter(~pl.col("kept"))
    assert cut.height >= 5 and cut.filter(pl.col("true_stage").list.max() >= 4).height >= 1


def test_a_redelivery_goes_to_the_next_months_file_and_for_the_as_of_month_to_the_one_before(tmp_path: Path) -> None:
    # Every event late (delivered with the next month's file) and half of them delivered twice.
    spec = GenerateSpec(events=500, seed=1, late_rate=1.0, duplicate_rate=0.5)
    sample = generate_sample(spec, tmp_path)
    truth = pl.read_parquet(sample.truth_dir / "events.parquet")
    dups = pl.read_parquet(sample.truth_dir / "duplicates.parquet").join(truth, on=["source", "event_id"])
    as_of_month = spec.as_of.year * 12 + spec.as_of.month - 1
    month = pl.col("occurred_at").dt.year().cast(pl.Int64) * 12 + pl.col("occurred_at").dt.month() - 1
    dups = dups.with_columns(
        delivered=month + pl.col("is_late").cast(pl.Int64),
        redelivered=pl.col("file").str.extract(r"_(\d{4}-\d{2})_part", 1),
    ).with_columns(
        expected=pl.when(pl.col("delivered") < as_of_month)
        .then(pl.col("delivered") + 1)
        .otherwise(pl.col("delivered") - 1)
    )
    year, month_no = (pl.col("expected") // 12).cast(pl.String), (pl.col("expected") % 12 + 1).cast(pl.String)
    label = year + "-" + month_no.str.zfill(2)
    assert dups.filter(pl.col("redelivered") != label).is_empty()
    # Both cases occur: rows of an earlier month's file, and rows of the as_of month's own file.
    assert dups.filter(pl.col("delivered") == as_of_month).height >= 5
    assert dups.filter(pl.col("delivered") < as_of_month).height >= 5
