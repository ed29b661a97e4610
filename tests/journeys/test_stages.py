"""Stage models: the YAML a stage model is written in, and what it refuses."""

from datetime import datetime

import duckdb
import pytest

from journeys import build, db
from journeys.config import StageModelRef
from journeys.stages import (
    load_stage_model,
    shipped_stage_models,
    stage_definitions_table,
    stage_models_for,
    stage_rule_conditions_table,
)

AS_OF = datetime(2026, 12, 31)


def test_every_shipped_model_loads():
    assert {"generic_lifecycle", "cxc_consumer_cycle", "travel", "b2b_lifecycle"} <= set(shipped_stage_models())
    for name in shipped_stage_models():
        model = load_stage_model(name)
        assert model.stages and all(stage.rules for stage in model.stages)


def test_a_stage_without_rules_is_rejected_naming_it(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: m\nversion: 1\nstages:\n"
        "  - name: first\n    rules: [{event_type: [page_view]}]\n"
        "  - name: never_matched\n    rules: []\n"
    )
    expected = r"(?s)stage model .*m\.yaml: .*stages\.1\.rules\s+List should have at least 1"
    with pytest.raises(ValueError, match=expected):
        load_stage_model(str(path))


def _stage_model_file(tmp_path, purchase_rule: str, repeat_rule: str) -> str:
    path = tmp_path / "shop.yaml"
    path.write_text(
        "name: shop\nversion: 1\nstages:\n"
        "  - name: browse\n    rules: [{event_type: [page_view]}]\n"
        f"  - name: purchase\n    rules: [{purchase_rule}]\n"
        f"  - name: repeat_purchase\n    rules: [{repeat_rule}]\n"
    )
    return str(path)


def _events_con(rows: list[tuple[str, str, str, str]]) -> duckdb.DuckDBPyConnection:
    """Inline events (event_id, customer_key, occurred_at, event_type), with what int_journey_events reads."""
    con = db.connect()
    values = ", ".join(f"('{e}', '{c}', timestamp '{t}', '{et}')" for e, c, t, et in rows)
    db.execute(
        con,
        f"""create table events as
           select event_id, occurred_at, occurred_at::date as event_date, 'test' as source, 'web' as channel,
                  event_type, 'web:' || event_type as touchpoint,
                  []::struct(id_type varchar, id_value varchar)[] as identifiers, null::double as sentiment,
                  null::decimal(18, 2) as revenue, '{{}}'::json as attributes, customer_key
           from (values {values}) as v(event_id, customer_key, occurred_at, event_type)""",
    )
    db.execute(con, "create table int_event_customers as select event_id, customer_key from events")
    db.execute(con, "create table customers as select distinct customer_key, 0 as bucket from events")
    return con


_NODES = ["int_journey_events", "stage_tables", "int_event_stages", "int_stage_events", "funnel"]


def _event_stages(con, path, make_settings) -> dict[str, int]:
    settings = make_settings(stage_models=[StageModelRef(path=path)])
    build.build_models(con, build.run_context(settings, AS_OF), _NODES)
    return dict(db.fetch(con, "select event_id, stage_index from int_event_stages"))


def test_a_repeat_purchase_stage_is_reached_at_the_second_purchase_only(make_settings, tmp_path):
    path = _stage_model_file(
        tmp_path, "{event_type: [purchase], occurrence: 1}", "{event_type: [purchase], occurrence: 2+}"
    )
    con = _events_con(
        [
            # A buys once: purchase, never repeat_purchase.
            ("a1", "A", "2026-10-01 10:00", "page_view"),
            ("a2", "A", "2026-10-01 10:05", "purchase"),
            # B buys three times; b3 and b4 share an instant, so event_id orders them.
            ("b1", "B", "2026-10-01 10:00", "page_view"),
            ("b2", "B", "2026-10-01 10:05", "purchase"),
            ("b4", "B", "2026-10-01 11:00", "purchase"),
            ("b3", "B", "2026-10-01 11:00", "purchase"),
        ]
    )
    assert _event_stages(con, path, make_settings) == {"a1": 1, "a2": 2, "b1": 1, "b2": 2, "b3": 3, "b4": 3}
    reached = db.fetch(
        con,
        "select journey_id, stage_index, strftime(reached_at, '%H:%M') from int_journey_stage_reached"
        " where mode = 'ordered' order by 1, 2",
    )
    assert reached == [
        ("A/j0001", 1, "10:00"),
        ("A/j0001", 2, "10:05"),
        ("B/j0001", 1, "10:00"),
        ("B/j0001", 2, "10:05"),
        ("B/j0001", 3, "11:00"),
    ]


SECOND_PURCHASE_MODEL = (
    "name: second\nversion: 1\nstages:\n"
    "  - name: browse\n    rules: [{event_type: [page_view]}]\n"
    "  - name: second_purchase\n    rules: [{event_type: [purchase], occurrence: 2}]\n"
    "  - name: other_purchase\n    rules: [{event_type: [purchase]}]\n"
)
"""Only the exact second purchase of a journey is stage 2; every other purchase falls to stage 3."""


def test_occurrence_n_matches_only_the_nth_and_counts_per_journey(make_settings, tmp_path):
    # The purchase stage has no occurrence, so it would take every purchase (first matching stage wins);
    # here the exact-second rule comes first, so only the second purchase of each journey is stage 2.
    path = tmp_path / "second.yaml"
    path.write_text(SECOND_PURCHASE_MODEL)
    con = _events_con(
        [
            ("c1", "C", "2026-10-01 10:00", "purchase"),
            ("c2", "C", "2026-10-01 11:00", "purchase"),
            ("c3", "C", "2026-10-01 12:00", "purchase"),
            # A second journey of C (over a month later): its count starts again.
            ("c4", "C", "2026-12-01 10:00", "purchase"),
            ("c5", "C", "2026-12-01 11:00", "purchase"),
            # Page views meet other rules: they do not count as purchases.
            ("c6", "C", "2026-12-01 10:30", "page_view"),
        ]
    )
    stages = _event_stages(con, str(path), make_settings)
    assert stages == {"c1": 3, "c2": 2, "c3": 3, "c4": 3, "c5": 2, "c6": 1}


def test_the_nth_occurrence_among_same_instant_events_is_taken_in_event_id_order(make_settings, tmp_path):
    path = tmp_path / "second.yaml"
    path.write_text(SECOND_PURCHASE_MODEL)
    # Many journeys, each with its 2nd and 3rd purchase at one instant, listed against event_id order: the
    # second purchase is the smaller event_id, whatever order the rows reach the window in.
    rows = []
    for n in range(200):
        rows += [
            (f"p{n:03}_3", f"P{n:03}", "2026-10-01 11:00", "purchase"),
            (f"p{n:03}_2", f"P{n:03}", "2026-10-01 11:00", "purchase"),
            (f"p{n:03}_1", f"P{n:03}", "2026-10-01 10:00", "purchase"),
        ]
    stages = _event_stages(_events_con(rows), str(path), make_settings)
    assert {eid: s for eid, s in stages.items() if s == 2} == {f"p{n:03}_2": 2 for n in range(200)}


def test_without_occurrence_on_the_purchase_stage_it_takes_every_purchase(make_settings, tmp_path):
    path = _stage_model_file(tmp_path, "{event_type: [purchase]}", "{event_type: [purchase], occurrence: 2+}")
    con = _events_con([("d1", "D", "2026-10-01 10:00", "purchase"), ("d2", "D", "2026-10-01 11:00", "purchase")])
    assert _event_stages(con, path, make_settings) == {"d1": 2, "d2": 2}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("{event_type: [purchase], occurence: 2+}", r"stages\.1\.rules\.0\.occurence\s+Extra inputs"),
        ("{event_type: [purchase], occurrence: 0}", r"occurrence: expected n or n\+ with n >= 1.*got '0'"),
        ("{event_type: [purchase], occurrence: 2-}", r"occurrence: expected n or n\+ with n >= 1.*got '2-'"),
        ("{event_type: [purchase], occurrence: true}", r"occurrence: expected n or n\+ with n >= 1.*got True"),
    ],
)
def test_a_misspelt_or_malformed_occurrence_is_rejected_naming_the_file_and_key(tmp_path, rule, expected):
    path = _stage_model_file(tmp_path, rule, "{event_type: [purchase]}")
    with pytest.raises(ValueError, match=rf"(?s)stage model .*shop\.yaml: .*{expected}"):
        load_stage_model(path)


def test_occurrence_is_read_as_a_number_and_a_flag_in_the_rule_table(tmp_path):
    path = _stage_model_file(
        tmp_path, "{event_type: [purchase], occurrence: 1}", "{event_type: [purchase], occurrence: 3+}"
    )
    model = load_stage_model(path)
    table = stage_rule_conditions_table([(model, StageModelRef(path=path))]).to_pylist()
    assert [(r["stage_index"], r["occurrence"], r["occurrence_and_later"]) for r in table] == [
        (1, None, None),
        (2, 1, False),
        (3, 3, True),
    ]


def _optional_model_file(tmp_path, optional_line: str) -> str:
    path = tmp_path / "shop.yaml"
    path.write_text(
        "name: shop\nversion: 1\npurchase_stage: purchase\nstages:\n"
        "  - name: browse\n    rules: [{event_type: [page_view]}]\n"
        "  - name: compare\n    rules: [{event_type: [compare]}]\n"
        "  - name: purchase\n    rules: [{event_type: [purchase]}]\n"
        "  - name: review\n    rules: [{event_type: [review]}]\n"
    )
    text = path.read_text()
    stage, line = optional_line.split(":", 1)
    path.write_text(text.replace(f"  - name: {stage}\n", f"  - name: {stage}\n    optional:{line}\n"))
    return str(path)


def test_an_optional_stage_loads_and_reaches_the_stage_table_and_the_funnel_spec(tmp_path):
    path = _optional_model_file(tmp_path, "compare: true")
    model = load_stage_model(path)
    assert [s.optional for s in model.stages] == [False, True, False, False]
    assert model.optional_stage_indexes == (2,)
    ref = StageModelRef(path=path)
    assert stage_definitions_table([(model, ref)]).column("optional").to_pylist() == [False, True, False, False]
    assert build.funnel_specs([(model, ref)])[0].optional_stages == (2,)
    # the shipped travel model: many travellers go from booking to the trip without a pre-trip contact
    assert load_stage_model("travel").optional_stage_indexes == (4,)


@pytest.mark.parametrize(
    ("optional_line", "expected"),
    [
        ("browse: true", r"stages\[0\] \('browse'\): optional: not allowed, the first stage"),
        ("review: true", r"stages\[3\] \('review'\): optional: not allowed, journeys convert at the last stage"),
        ("purchase: true", r"stages\[2\] \('purchase'\): optional: not allowed, it is the purchase_stage"),
        ("compare: sometimes", r"stages\.1\.optional\s+Input should be a valid boolean"),
    ],
)
def test_an_optional_stage_where_it_cannot_be_skipped_is_rejected_naming_the_stage_and_key(
    tmp_path, optional_line, expected
):
    with pytest.raises(ValueError, match=rf"(?s)stage model .*shop\.yaml: .*{expected}"):
        load_stage_model(_optional_model_file(tmp_path, optional_line))


# ---------------------------------------------------------------- the stage tables as published (journeys.yaml)


@pytest.fixture(scope="module")
def warehouse(published):
    with db.connect(published.settings.warehouse_path, read_only=True) as con:
        yield con


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    return con.sql(sql).pl().to_dicts()


def test_stage_definitions_row_is_the_yaml_stage(warehouse):
    # generic_lifecycle.yaml's consideration, configured in journeys.yaml without a conversion window
    rows = _rows(warehouse, "select * from stage_definitions where stage_model = 'generic_lifecycle' order by 5")
    assert [r["stage_name"] for r in rows] == ["awareness", "consideration", "purchase", "use_service", "renewal"]
    assert rows[1] == {
        "stage_model": "generic_lifecycle",
        "stage_model_version": 1,
        "n_stages": 5,
        "conversion_window_us": None,
        "stage_index": 2,
        "stage_name": "consideration",
        "owner": "ecommerce",
        "designed_channels": ["web", "app", "email", "chat"],
        "designed_channels_text": "web, app, email, chat",
        "time_budget_us": 14 * 86_400 * 1_000_000,
        "purchase_stage_index": 3,
        "optional": False,
    }


def test_stage_rule_conditions_rows_are_the_yaml_rules(warehouse):
    rows = warehouse.sql(
        "select * from stage_rule_conditions where stage_model = 'generic_lifecycle' and stage_index = 2"
        " order by rule_id, condition_no"
    ).fetchall()
    # attribute keys of all configured models, sorted: page_type 1, reason 2
    assert rows == [
        ("generic_lifecycle", 2, 1, 1, 2, "event_type", None, ["page_view"], "page_view", None, None),
        ("generic_lifecycle", 2, 1, 2, 2, "attribute", 1, ["product"], "product", None, None),
        (
            "generic_lifecycle",
            2,
            2,
            1,
            1,
            "event_type",
            None,
            ["email_click", "chat_message", "add_to_cart"],
            "email_click, chat_message, add_to_cart",
            None,
            None,
        ),
        ("generic_lifecycle", 2, 3, 1, 2, "event_type", None, ["call"], "call", None, None),
        ("generic_lifecycle", 2, 3, 2, 2, "attribute", 2, ["product_question"], "product_question", None, None),
    ]
    cols = [c for (c,) in db.fetch(warehouse, "select column_name from (describe stage_rule_conditions)")]
    assert cols == [
        "stage_model",
        "stage_index",
        "rule_id",
        "condition_no",
        "n_conditions",
        "field",
        "attribute_pos",
        "accepted",
        "accepted_text",
        "occurrence",
        "occurrence_and_later",
    ]


def test_stage_funnel_modes_are_the_configured_modes(warehouse):
    # journeys.yaml: generic_lifecycle in ordered and any_order, cxc_consumer_cycle in ordered
    assert db.fetch(warehouse, "select stage_model, mode from stage_funnel_modes order by all") == [
        ("cxc_consumer_cycle", "ordered"),
        ("generic_lifecycle", "any_order"),
        ("generic_lifecycle", "ordered"),
    ]


def test_stage_touchpoint_owners_are_the_yaml_exceptions(warehouse):
    rows = db.fetch(
        warehouse,
        "select stage_model, touchpoint, owner from stage_touchpoint_owners"
        " where stage_model = 'generic_lifecycle' order by touchpoint",
    )
    assert rows == [
        ("generic_lifecycle", "app:purchase", "ecommerce"),
        ("generic_lifecycle", "call_centre:call", "customer_service"),
        ("generic_lifecycle", "chat:chat_message", "sales"),
        ("generic_lifecycle", "delivery:delivery_completed", "logistics"),
        ("generic_lifecycle", "survey:survey_response", "cx_research"),
        ("generic_lifecycle", "web:purchase", "ecommerce"),
    ]


# Each column naming a stage, and the column holding that stage's index (next_stage_name: the stage after).
STAGE_NAME_INDEX = {
    "stage_name": "stage_index",
    "furthest_stage_name": "furthest_stage",
    "neighbour_stage_name": "neighbour_stage_index",
    "next_stage_name": "stage_index + 1",
}


def test_every_stage_name_column_is_the_yaml_name_of_its_index(published, warehouse):
    # Listed from the catalog: a new `*stage_name` column is checked here, or fails until its index is named.
    columns = [
        (m.name, c, set(m.columns))
        for m in published.context.catalog.kept()
        for c in m.columns
        if c.endswith("stage_name")
    ]
    assert {c for _, c, _ in columns} <= set(STAGE_NAME_INDEX), "a stage name column whose index is unknown"
    names = {
        (model.name, i): stage.name
        for model, _ in stage_models_for(published.settings)
        for i, stage in enumerate(model.stages, start=1)
    }
    primary = stage_models_for(published.settings)[0][0].name
    checked = 0
    for table, column, present in columns:
        # journey_events is the primary stage model's only (it has no stage_model column)
        model = "stage_model" if "stage_model" in present else f"'{primary}'"
        rows = db.fetch(
            warehouse,
            f"select distinct {model}, {STAGE_NAME_INDEX[column]}, {db.quote_ident(column)}"
            f" from {db.quote_ident(table)}",
        )
        wrong = [r for r in rows if names.get((r[0], r[1])) != r[2]]
        assert not wrong, (table, column, wrong[:5])
        checked += len([r for r in rows if r[2] is not None])
    assert checked > 50
