"""The model catalog: headers, derived dependencies, build order, subsets and per-bucket builds."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from samples import ingested_sample

from journeys import build, db, models, publish

REPO = Path(__file__).resolve().parents[2]
HEADER = "-- model: {name}\n-- grain: k\n-- materialized: table\n-- publish: true\n"


def write_model(root: Path, layer: str, name: str, body: str, header: str | None = None) -> Path:
    """One SQL model file under `root/layer/`."""
    path = root / layer / f"{name}.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((header if header is not None else HEADER.format(name=name)) + body, encoding="utf-8")
    return path


# --- reading one file -----------------------------------------------------------------------------------


def test_header_fields_are_read_and_dependencies_derived(tmp_path):
    path = write_model(
        tmp_path,
        "marts",
        "m",
        "-- params: n\n-- One row per k.\nwith a as (select k from t1), b as (select * from a join t2 using (k))\n"
        "select * from b where k in (select k from t3) and k < $n\n",
    )
    m = models.parse_model_file(path, "marts")
    assert (m.name, m.layer, m.materialized, m.publish, m.partition) == ("m", "marts", "table", "true", "none")
    assert m.grain == ("k",)
    assert m.params == ("n",)
    assert m.depends_on == {"t1", "t2", "t3"}
    assert m.description == "One row per k."


def test_columns_can_be_described_in_the_file_itself(tmp_path):
    path = write_model(tmp_path, "marts", "m", "-- One row per k.\n-- column k: The key.\nselect 1 as k\n")
    m = models.parse_model_file(path, "marts")
    assert (m.description, m.columns) == ("One row per k.", {"k": "The key."})
    with pytest.raises(models.CatalogError, match=r"columns \['k'\] are described both in the file and in schema"):
        models.parse_model_file(path, "marts", {"columns": {"k": "Again."}})


def test_a_cte_named_like_a_table_reads_that_table():
    # `events as (select ... from events)`: inside its own body the name is still the table.
    reads, _ = models.sql_reads("with events as (select * from events), x as (select * from events) select * from x")
    assert reads == {"events"}


def test_an_input_given_as_sql_is_read_instead_of_its_table(tmp_path):
    # Ingest gives stg_events its mapped rows this way: computed in the model's statement, never stored.
    path = write_model(tmp_path, "marts", "m", "-- params: n\nwith a as (select k from t1) select k + $n as k from a\n")
    m = models.parse_model_file(path, "marts")
    with duckdb.connect() as con:
        con.execute("create table t1 as select 1 as k")
        models.materialize(con, m, {"n": 10, "x": 2}, inputs={"t1": "select k * $x as k from range(3) as r(k)"})
        assert con.sql("select k from m order by k").fetchall() == [(10,), (12,), (14,)]
        models.materialize(con, m, {"n": 10})
        assert con.sql("select k from m").fetchall() == [(11,)]


def test_table_functions_and_parameters_are_not_tables():
    reads, params = models.sql_reads("select * from read_parquet($path) as p join range(3) as r on true")
    assert reads == frozenset()
    assert params == {"path"}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("-- model: other\n-- materialized: table\n", "'model' is 'other'; expected the file's name 'm'"),
        ("-- model: m\n-- materialized: tabel\n", "'materialized' is 'tabel'; expected table | temp | view"),
        ("-- model: m\n-- materialized: table\n-- partition: day\n", "'partition' is 'day'"),
        ("-- model: m\n-- materialized: table\n-- publish: yes\n", "'publish' is 'yes'"),
        ("-- model: m\n-- materialized: table\n-- publish: true\n", "'grain' is None; expected the columns"),
        ("-- model: m\n-- materialized: table\n", "'params' is None; expected exactly the parameters the SQL uses: n"),
        ("-- model: m\n-- model: m\n-- materialized: table\n", "header field 'model' given twice"),
    ],
)
def test_a_bad_header_names_the_file_and_the_field(tmp_path, header, message):
    path = write_model(tmp_path, "marts", "m", "select 1 as k where 1 < $n\n", header=header)
    with pytest.raises(models.CatalogError, match=re.escape(message)) as err:
        models.parse_model_file(path, "marts")
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_a_model_reading_a_table_nobody_builds_fails_at_load(tmp_path):
    shutil.copytree(models.shipped_models_dir(), tmp_path / "sql")
    write_model(tmp_path / "sql", "marts", "orphan", "select k from no_such_table\n")
    with pytest.raises(models.CatalogError, match=r"orphan\.sql: reads \['no_such_table'\], which no model builds"):
        models.load_catalog(str(tmp_path / "sql"))


def test_models_that_read_each_other_are_a_cycle(tmp_path):
    shutil.copytree(models.shipped_models_dir(), tmp_path / "sql")
    write_model(tmp_path / "sql", "marts", "ping", "select k from pong\n")
    write_model(tmp_path / "sql", "marts", "pong", "select k from ping\n")
    with pytest.raises(models.CatalogError, match=r"cycle among \['ping', 'pong'\]"):
        models.load_catalog(str(tmp_path / "sql"))


# --- the shipped catalog ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> models.Catalog:
    return models.load_catalog()


def test_every_shipped_sql_file_is_in_the_catalog(catalog):
    files = {p.stem for p in models.shipped_models_dir().glob("*/*.sql")}
    assert files == {m.name for m in catalog.models.values() if m.sql is not None}
    assert all(m.path and Path(m.path).parent.name == m.layer for m in catalog.models.values() if m.sql)


def test_build_order_puts_every_dependency_first(catalog):
    order = catalog.order()
    assert sorted(order) == sorted(catalog.nodes())
    position = {n: i for i, n in enumerate(order)}
    for node in order:
        assert all(position[d] < position[node] for d in catalog.dependencies(node) if d != "ingest"), node


def test_flow_steps_cover_every_node_once_in_the_tasks_of_the_flow(catalog):
    steps = catalog.steps()
    nodes = [n for s in steps for n in s.nodes]
    assert sorted(nodes) == sorted(n for n in catalog.nodes() if n != "ingest")
    assert [s.name for s in steps][:1] == ["resolve-identity"]
    assert steps[-1].name == "build-marts"
    assert {s.name for s in steps} == {"resolve-identity", "stitch-journeys", "stage-funnels", "build-marts"}


def test_published_and_kept_tables_come_from_headers(catalog):
    published = [m.name for m in catalog.published()]
    assert published == sorted(
        p.stem for p in models.shipped_models_dir().glob("*/*.sql") if "-- publish: true" in p.read_text()
    )
    assert {"journeys", "stage_conversion", "identity_map"} <= set(published)
    kept = {m.name for m in catalog.kept()}
    assert kept - set(published) == {
        "events",
        "links",
        "quarantine",
        "stage_definitions",
        "stage_rule_conditions",
        "stage_touchpoint_owners",
        "stage_funnel_modes",
        "runs",
    }
    assert all(m.grain for m in catalog.published())


def test_one_model_and_what_it_needs(catalog):
    need = catalog.upstream(["stage_dropout"])
    assert {"stage_dropout", "journey_stages", "funnel", "int_journeys", "identity", "lake"} <= need
    assert "stage_survival" not in need and "journey_events" not in need


def test_partitioned_models_are_the_journey_models(catalog):
    part = set(catalog.partitioned())
    assert {"int_journey_events", "int_journeys", "funnel", "journeys", "journey_events", "journey_stages"} <= part
    assert not part & {"identity", "customers", "stage_conversion", "stage_channel_matrix"}


# --- against the tables the models really read ------------------------------------------------------------


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    """Every catalog table of a small generated run (scratch tables kept), the context and each model's params."""
    context = ingested_sample(tmp_path_factory.mktemp("catalog-run"), keep_scratch=True)
    settings = context.settings
    seen: dict[str, dict[str, Any]] = {}
    real_materialize, real_insert = models.materialize, models.insert_into

    def record(fn):
        def wrapped(con, model, params):
            seen[model.name] = dict(params)
            return fn(con, model, params)

        return wrapped

    models.materialize, models.insert_into = record(real_materialize), record(real_insert)
    try:
        con = db.connect()
        build.build_models(con, context)
        # A second resolution reads the first one's map as its previous state (int_identity_previous).
        publish.write_identity_state(con, build.identity_state_path(settings))
        build.build_models(con, context, ["lake", "identity"])
    finally:
        models.materialize, models.insert_into = real_materialize, real_insert
    return con, context, seen


def _empty_copy(con: duckdb.DuckDBPyConnection, names: set[str]) -> duckdb.DuckDBPyConnection:
    """A fresh database holding empty tables shaped like `names` in `con`, and nothing else."""
    fresh = duckdb.connect()
    for name in sorted(names):
        arrow = con.sql(f"select * from {db.quote_ident(name)} limit 0").to_arrow_table()
        fresh.register("_shape", arrow)
        fresh.execute(f"create table {db.quote_ident(name)} as select * from _shape")
        fresh.unregister("_shape")
    return fresh


def _binds(fresh: duckdb.DuckDBPyConnection, model: models.Model, params: dict[str, Any]) -> str | None:
    """None when the model's SQL binds in `fresh`, else DuckDB's error."""
    try:
        db.fetch(fresh, f"select count(*) from (\n{model.sql}\n) as probe", params)
    except duckdb.Error as exc:
        return str(exc)
    return None


@pytest.mark.slow
def test_derived_dependencies_are_exactly_the_tables_a_model_reads(full_build, catalog):
    con, context, seen = full_build
    checked = 0
    for model in catalog.models.values():
        if model.sql is None or model.procedure == "ingest":
            continue  # stg_events and stg_links run inside ingest on a file's rows (tests/journeys/test_ingest*.py)
        # Models a small run does not need (no exclusions, no limit broken) bind with the run's parameters.
        params = seen.get(model.name, {**context.params, "stage_rank": 1, "type_limits": [1]})
        deps = set(model.depends_on)
        # A pass that reads its own previous output (int_funnel_chain_ends) needs itself to exist too.
        shape = deps | ({model.name} if model.name in _self_reading(model) else set())
        fresh = _empty_copy(con, shape)
        assert _binds(fresh, model, params) is None, model.name
        for dep in sorted(deps):
            fresh.execute(f"drop table {db.quote_ident(dep)}")
            error = _binds(fresh, model, params)
            assert error is not None and dep in error, f"{model.name} does not really read {dep}"
            shaped = con.sql(f"select * from {db.quote_ident(dep)} limit 0").to_arrow_table()
            fresh.register("_shape", shaped)
            fresh.execute(f"create table {db.quote_ident(dep)} as select * from _shape")
            fresh.unregister("_shape")
        checked += 1
    assert checked >= 45


def _self_reading(model: models.Model) -> set[str]:
    reads, _ = models.sql_reads(model.sql or "")
    return reads & {model.name}


@pytest.mark.slow
def test_a_bucket_build_gives_the_full_build_rows_of_that_bucket(full_build, catalog):
    con, context, _ = full_build
    full = {
        n: sorted(db.fetch(con, f"select * from {db.quote_ident(n)}"), key=repr)
        for n in ("int_journey_events", "int_journeys", "journey_stages", "journeys", "journey_events")
    }
    bucket = db.fetch(con, "select bucket from customers group by 1 order by count(*) desc limit 1")[0][0]
    built = models.build(con, catalog, context, catalog.partitioned(), params={"bucket": bucket})
    assert built["int_journey_events"] > 0
    for name, rows in full.items():
        cols = [r[0] for r in db.fetch(con, f"describe {db.quote_ident(name)}")]
        got = sorted(db.fetch(con, f"select * from {db.quote_ident(name)}"), key=repr)
        want = [r for r in rows if r[cols.index("bucket")] == bucket]
        assert got == want, name
        assert 0 < len(got) < len(rows), name
    # and back to every customer
    models.build(con, catalog, context, catalog.partitioned())
    assert sorted(db.fetch(con, "select * from journeys"), key=repr) == full["journeys"]


@pytest.mark.slow
def test_a_set_of_customers_builds_only_their_journeys(full_build, catalog):
    con, context, _ = full_build
    keys = [r[0] for r in db.fetch(con, "select customer_key from customers order by customer_key limit 3")]
    models.build(con, catalog, context, catalog.partitioned(), params={"customer_keys": keys})
    assert {r[0] for r in db.fetch(con, "select distinct customer_key from journeys")} <= set(keys)
    assert db.fetch(con, "select count(distinct customer_key) from journey_events")[0][0] == len(
        [
            k
            for k in keys
            if db.fetch(con, "select count(*) from int_event_customers where customer_key = $k", {"k": k})[0][0]
        ]
    )
    models.build(con, catalog, context, catalog.partitioned())


@pytest.mark.slow
def test_the_run_context_is_frozen_and_holds_settings_resolved_once(full_build):
    _, context, _ = full_build
    with pytest.raises(AttributeError, match="cannot assign to field 'as_of'"):
        context.as_of = None  # type: ignore[misc]
    with pytest.raises(TypeError, match="'mappingproxy' object does not support item assignment"):
        context.params["as_of"] = None  # type: ignore[index]
    assert [m.name for m, _ in context.stage_models] == ["generic_lifecycle", "cxc_consumer_cycle"]
    assert [s.stage_model for s in context.funnel_specs] == ["generic_lifecycle", "cxc_consumer_cycle"]


def test_bucket_is_sha256s_first_32_bits_modulo_buckets_for_every_customer_row(published):
    # computed with Python's hashlib, not DuckDB's sha256: the rule is what keeps a customer in one bucket
    with db.connect(published.settings.warehouse_path, read_only=True) as con:
        customers = db.fetch(con, "select customer_key, bucket from customers")
        per_table = {
            table: db.fetch(con, f"select distinct customer_key, bucket from {table} where customer_key is not null")
            for table in ("journeys", "journey_stages", "journey_events")
        }
    n = published.settings.buckets
    want = {k: int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) % n for k, _ in customers}
    assert dict(customers) == want
    assert len(set(want.values())) == n  # a few hundred customers reach every bucket
    for table, rows in per_table.items():
        assert rows and all(want[k] == b for k, b in rows), table
