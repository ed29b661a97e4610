import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from journeys.config import ConfigError, MappedField, Settings, SourceConfig, load_settings, parse_duration_us

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _test_salt(monkeypatch):
    """Loading refuses a config without a real salt; these tests are about other keys."""
    monkeypatch.setenv("JOURNEYS_PII_SALT", "test-salt")


def test_demo_config_loads_and_resolves_paths_against_its_directory():
    s = load_settings(REPO / "journeys.yaml")
    assert s.root == (REPO / "data" / "demo").resolve()
    assert {src.name for src in s.sources} == {"web", "email", "calls", "pos", "support", "cdp"}
    assert s.warehouse_path == s.root / "warehouse" / "journeys.duckdb"


def test_env_overrides_file_and_overrides_beat_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JOURNEYS_MEMORY_LIMIT", "1GB")
    s = load_settings(REPO / "journeys.yaml")
    assert s.memory_limit == "1GB"
    s = load_settings(REPO / "journeys.yaml", memory_limit="2GB")
    assert s.memory_limit == "2GB"


def test_unknown_key_is_rejected(tmp_path):
    p = tmp_path / "j.yaml"
    p.write_text("data_rot: x\n")
    with pytest.raises(ConfigError, match="data_rot: unknown key") as err:
        load_settings(p)
    assert str(err.value) == f"{p}: data_rot: unknown key; did you mean 'data_root'?"


def test_mapped_field_needs_exactly_one_of_column_or_value():
    with pytest.raises(ValidationError, match="exactly one of"):
        MappedField()
    with pytest.raises(ValidationError, match="exactly one of"):
        MappedField(column="a", value="b")


def test_duplicate_source_names_are_rejected():
    src = SourceConfig(
        name="web",
        path="w/*.csv",
        format="csv",
        occurred_at="t",
        channel=MappedField(value="web"),
        event_type=MappedField(value="page_view"),
    )
    with pytest.raises(ValidationError, match="duplicate source"):
        Settings(sources=[src, src])


def test_mapped_columns_are_unique_and_ordered():
    src = SourceConfig(
        name="calls",
        path="c/*.csv",
        format="csv",
        occurred_at="t",
        event_id="id",
        channel=MappedField(value="call_centre"),
        event_type=MappedField(column="kind"),
        identifiers={"phone": "phone", "id": "customer_id"},
    )
    assert src.mapped_columns() == ["id", "t", "kind", "phone"]


@pytest.mark.parametrize(
    ("text", "us"),
    [
        ("30d", 30 * 86_400_000_000),
        ("36h", 36 * 3_600_000_000),
        ("90m", 5_400_000_000),
        ("45", 45_000_000),
        ("1.5h", 5_400_000_000),
        ("2w", 14 * 86_400_000_000),
        (None, None),
    ],
)
def test_parse_duration(text, us):
    assert parse_duration_us(text) == us


def test_schedule_comes_from_the_config_and_has_a_default():
    s = load_settings(REPO / "journeys.yaml")
    assert (s.schedule.cron, s.schedule.timezone) == ("0 2 * * *", "Europe/Berlin")
    assert s.schedule.run_timeout_s == 6 * 3600
    assert Settings().schedule.cron == "0 2 * * *"


@pytest.mark.parametrize(
    ("schedule", "error"),
    [
        ("{cron: '0 2 * *'}", "schedule.cron: cron must have 5 fields"),
        ("{timezone: Europe/Berlinn}", "schedule.timezone: unknown time zone 'Europe/Berlinn'"),
        ("{cronn: x}", "schedule.cronn: unknown key"),
    ],
)
def test_bad_schedule_is_rejected_naming_the_key(tmp_path, schedule, error):
    p = tmp_path / "j.yaml"
    p.write_text(f"schedule: {schedule}\n")
    assert error in config_error(p)


SOURCE = """
sources:
  - name: calls
    path: calls/*.csv
    format: csv
    timezone: {timezone}
    occurred_at: started
    channel: {channel}
    event_type: {{value: call}}
"""


def write_config(tmp_path, text: str, **fmt) -> Path:
    p = tmp_path / "journeys.yaml"
    p.write_text(text.format(**fmt) if fmt else text)
    return p


def config_error(path, source: str | None = None) -> str:
    # A config error first names where the value came from (the file unless said otherwise); callers check the rest.
    with pytest.raises(ConfigError, match=f"^{re.escape(source or str(path))}: ") as err:
        load_settings(path)
    return str(err.value)


def test_config_errors_are_one_line_each_naming_file_key_and_expectation(tmp_path):
    p = write_config(tmp_path, SOURCE, timezone="Europe/Berln", channel="{value: call_centre}")
    assert config_error(p) == (
        f"{p}: sources[0].timezone: expected an IANA time zone such as Europe/Berlin, America/New_York or UTC,"
        " got 'Europe/Berln'"
    )
    p = write_config(tmp_path, "sources:\n  - name: calls\n    format: xlsx\n")
    lines = config_error(p).splitlines()
    assert f"{p}: sources[0].format: Input should be 'csv', 'jsonl' or 'parquet', got 'xlsx'" in lines
    assert f"{p}: sources[0].path: required key missing" in lines
    assert all(line.startswith(f"{p}: sources[0].") for line in lines)


def test_a_config_error_lists_eight_problems_and_counts_the_rest(tmp_path):
    # Exactly at the limit every problem has its line and nothing is said to be left out.
    eight = "".join(f"typo_{i}: 1\n" for i in range(8))
    lines = config_error(write_config(tmp_path, eight)).splitlines()
    assert [line.split(": ")[1] for line in lines] == [f"typo_{i}" for i in range(8)]
    lines = config_error(write_config(tmp_path, eight + "typo_8: 1\n")).splitlines()
    assert len(lines) == 9 and lines[-1] == f"{tmp_path / 'journeys.yaml'}: ... and 1 more"


def test_a_rejected_value_is_quoted_up_to_sixty_characters_of_its_repr(tmp_path):
    shown, too_long = "x" * 58, "x" * 59  # repr adds the two quotes: 60 and 61 characters
    p = tmp_path / "journeys.yaml"
    assert config_error(write_config(tmp_path, f"cohort_period: {shown}\n")) == (
        f"{p}: cohort_period: Input should be 'day', 'week' or 'month', got '{shown}'"
    )
    assert config_error(write_config(tmp_path, f"cohort_period: {too_long}\n")) == (
        f"{p}: cohort_period: Input should be 'day', 'week' or 'month'"
    )


def test_config_error_is_not_a_traceback_of_pydantic(tmp_path):
    p = write_config(tmp_path, "session_timeout: 30 days\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: session_timeout:")) as err:
        load_settings(p)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert "errors.pydantic.dev" not in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = write_config(tmp_path, "data_root: data\nsources: [\n")
    assert config_error(p).startswith(f"{p}: not valid YAML (line 3")


def test_missing_config_file_is_a_config_error(tmp_path):
    assert config_error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: config file not found"


@pytest.mark.parametrize(
    ("key", "yaml_text"),
    [
        ("session_timeout", "session_timeout: 30 days\n"),
        ("journey_timeout", "journey_timeout: -30d\n"),
        ("dropout_timeout", "dropout_timeout: soon\n"),
        ("quality.max_future", "quality: {max_future: 1 day}\n"),
        ("quality.freshness.max_staleness", "quality: {freshness: {max_staleness: 2 days}}\n"),
        ("stage_models[0].conversion_window", "stage_models: [{path: generic_lifecycle, conversion_window: 7 days}]\n"),
    ],
)
def test_durations_are_validated_at_load_time_naming_the_key(tmp_path, key, yaml_text):
    p = write_config(tmp_path, yaml_text)
    msg = config_error(p)
    assert msg.startswith(f"{p}: {key}: expected a duration such as 30d, 36h, 90m, 45s or 2w, got '"), msg


def test_valid_durations_load(tmp_path):
    p = write_config(
        tmp_path,
        "session_timeout: 30m\njourney_timeout: 30d\ndropout_timeout: 2w\n"
        "quality: {max_future: 0s}\nstage_models: [{path: generic_lifecycle, conversion_window: 36h}]\n",
    )
    s = load_settings(p)
    assert (s.session_timeout, s.journey_timeout, s.dropout_timeout) == ("30m", "30d", "2w")


def test_freshness_and_volume_checks_are_off_unless_configured(tmp_path):
    assert load_settings(write_config(tmp_path, "data_root: data\n")).quality.freshness.max_staleness is None
    q = load_settings(
        write_config(tmp_path, "quality: {freshness: {max_staleness: 2d}, volume: {min_ratio: 0.5, on_fail: warn}}\n")
    ).quality
    assert (q.freshness.max_staleness, q.freshness.on_fail, q.volume.min_ratio, q.volume.on_fail) == (
        "2d",
        "fail",
        0.5,
        "warn",
    )
    msg = config_error(write_config(tmp_path, "quality: {volume: {min_ratio: 0.5, on_fail: ignore}}\n"))
    assert msg.startswith(f"{tmp_path / 'journeys.yaml'}: quality.volume.on_fail: "), msg


def test_zero_timeout_is_rejected(tmp_path):
    assert "session_timeout: expected a duration above zero, got '0m'" in config_error(
        write_config(tmp_path, "session_timeout: 0m\n")
    )


def test_environment_value_error_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNEYS_JOURNEY_TIMEOUT", "a month")
    source = "JOURNEYS_JOURNEY_TIMEOUT (environment)"
    assert config_error(write_config(tmp_path, "data_root: data\n"), source) == (
        "JOURNEYS_JOURNEY_TIMEOUT (environment): journey_timeout: expected a duration such as 30d, 36h, 90m, 45s"
        " or 2w, got 'a month'"
    )


@pytest.mark.parametrize(
    ("channel", "unknown"),
    [
        ("{value: callcentre}", "callcentre"),
        ("{value: Call-Centre}", None),  # snake-cased like ingest does: call_centre
        ("{column: kind, map: {phone: call_centre, sms: text_message}}", "text_message"),
    ],
)
def test_channel_outside_channels_is_rejected_at_load_naming_channels(tmp_path, channel, unknown):
    p = write_config(tmp_path, SOURCE, timezone="UTC", channel=channel)
    if unknown is None:
        load_settings(p)
        return
    msg = config_error(p)
    assert msg.startswith(f"{p}: channels: sources[0] ('calls') maps channel to ['{unknown}'], not in `channels`;")
    assert "add it to `channels`" in msg
    # Extending `channels` is the fix the message names.
    p.write_text(p.read_text() + f"channels: [call_centre, {unknown}]\n")
    assert load_settings(p).channels == ["call_centre", unknown]


@pytest.mark.parametrize(("given", "region"), [("1", "US"), ("+44", "GB"), ("GB", "GB"), ("de", "DE")])
def test_default_phone_region_accepts_region_or_calling_code(given, region):
    assert Settings(default_phone_region=given).default_phone_region == region


def test_unknown_phone_region_is_rejected(tmp_path):
    assert "default_phone_region: expected an ISO region such as US or GB, or a country calling code, got 'abc'" in (
        config_error(write_config(tmp_path, "default_phone_region: abc\n"))
    )


def test_one_nested_field_from_the_environment_keeps_the_rest_of_its_section(monkeypatch):
    monkeypatch.setenv("JOURNEYS_IDENTITY__PRIORITY", '["email", "customer_id"]')
    monkeypatch.setenv("JOURNEYS_SCHEDULE__CRON", "* * * * *")
    s = load_settings(REPO / "journeys.yaml")
    assert s.identity.priority == ["email", "customer_id"]
    assert s.identity.max_values_per_type["customer_id"] == 1  # the file's other identity fields stay
    assert (s.schedule.cron, s.schedule.timezone) == ("* * * * *", "Europe/Berlin")


@pytest.mark.parametrize("glob", ["../../etc/*.csv", "web/../../*.csv", "/tmp/*.csv"])
def test_a_source_glob_outside_landing_is_rejected_naming_the_key(tmp_path, glob):
    p = write_config(tmp_path, SOURCE, timezone="UTC", channel="{value: call_centre}")
    p.write_text(p.read_text().replace("path: calls/*.csv", f"path: {glob!r}"))
    assert f"sources[0].path: expected a glob relative to <data_root>/landing/ without '..', got {glob!r}" in (
        config_error(p)
    )


@pytest.mark.parametrize("salt", ["change-me", "", "   "])
def test_ingest_refuses_the_placeholder_or_an_empty_salt(tmp_path, make_settings, salt):
    from datetime import datetime

    from journeys.ingest import ingest_sources

    with pytest.raises(ConfigError, match=r"^pii_salt: expected a secret salt \(set JOURNEYS_PII_SALT"):
        ingest_sources(make_settings(tmp_path, pii_salt=salt), as_of=datetime(2026, 11, 1), batch_id="b1")
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(
    ("file_salt", "env_salt", "where", "what"),
    [
        ("pii_salt: change-me\n", None, "file", "the placeholder 'change-me'"),
        ("", None, "file", "the placeholder 'change-me'"),  # no salt anywhere: the default placeholder
        ("pii_salt: ''\n", None, "file", "an empty one"),
        ("pii_salt: real-salt\n", "", "env", "an empty one"),
        ("", "change-me", "env", "the placeholder 'change-me'"),
    ],
)
def test_loading_refuses_the_placeholder_or_an_empty_salt_naming_the_key(
    tmp_path, monkeypatch, file_salt, env_salt, where, what
):
    monkeypatch.delenv("JOURNEYS_PII_SALT")
    if env_salt is not None:
        monkeypatch.setenv("JOURNEYS_PII_SALT", env_salt)
    p = write_config(tmp_path, "data_root: data\n" + file_salt)
    origin = str(p) if where == "file" else "JOURNEYS_PII_SALT (environment)"
    msg = config_error(p, origin)
    assert msg.startswith(f"{origin}: pii_salt: expected a secret salt (set JOURNEYS_PII_SALT"), msg
    assert what in msg


def test_a_real_salt_loads_from_the_file_or_the_environment_and_the_demo_config_has_one(tmp_path, monkeypatch):
    monkeypatch.delenv("JOURNEYS_PII_SALT")
    p = write_config(tmp_path, "pii_salt: s3cret\n")
    assert load_settings(p).pii_salt.get_secret_value() == "s3cret"
    monkeypatch.setenv("JOURNEYS_PII_SALT", "from-env")
    assert load_settings(p).pii_salt.get_secret_value() == "from-env"
    monkeypatch.delenv("JOURNEYS_PII_SALT")
    assert load_settings(REPO / "journeys.yaml").pii_salt.get_secret_value() == "demo-salt-not-secret"


def test_journey_map_settings_parse_and_reject_unknown_keys(tmp_path):
    p = tmp_path / "j.yaml"
    p.write_text("costs: {call_centre: 6.5, chat: 2}\ncustomer_value: 120\nred_points: {min_count: 50}\n")
    s = load_settings(p)
    assert s.costs == {"call_centre": 6.5, "chat": 2.0}
    assert s.customer_value == 120.0
    assert (s.red_points.min_count, s.red_points.z, s.red_points.min_lift) == (50, 1.96, 1.5)
    p.write_text("red_points: {min_cnt: 50}\n")
    assert "red_points.min_cnt: unknown key" in config_error(p)


def test_purchase_stage_must_name_a_stage_and_the_shipped_models_have_one():
    from journeys.stages import StageModel, load_stage_model, shipped_stage_models

    for name in shipped_stage_models():
        model = load_stage_model(name)
        assert model.purchase_stage_index is not None, name
    with pytest.raises(ValidationError, match="purchase_stage"):
        StageModel(name="m", version=1, stages=[{"name": "a", "rules": [{"event_type": ["x"]}]}], purchase_stage="b")


def _sources_yaml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "j.yaml"
    p.write_text("sources:\n" + body)
    return p


LINKS = (
    "  - {name: crm, kind: links, path: crm/*.csv, format: csv, identifiers: {order_id: order_id, pid: customer_id}}\n"
)
WIDE = (
    "  - name: orders\n    path: o/*.csv\n    format: csv\n    channel: {value: web}\n    events:\n"
    "      - {occurred_at: bought, event_type: Purchase}\n"
    "      - {occurred_at: delivered, event_type: delivery, optional: true}\n"
)


def test_new_source_keys_load_from_yaml(tmp_path):
    keep = "    keep_rows: [{column: status, one_of: [delivered]}, {column: bought, not_empty: true}]\n"
    s = load_settings(_sources_yaml(tmp_path, LINKS + WIDE + keep))
    crm, orders = s.sources
    assert (crm.kind, crm.occurred_at, crm.channel, crm.required_time_columns) == ("links", None, None, [])
    assert [e.canonical_type for e in orders.events or []] == ["purchase", "delivery"]
    assert orders.required_time_columns == ["bought"]
    assert orders.mapped_columns() == ["bought", "delivered", "status"]
    assert [(r.column, r.one_of, r.not_empty) for r in orders.keep_rows] == [
        ("status", ["delivered"], False),
        ("bought", None, True),
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            LINKS.replace("format: csv,", "format: csv, occurred_at: t,"),
            "sources[0]: a source of kind 'links' only links identifiers; remove ['occurred_at']",
        ),
        (
            LINKS.replace(", pid: customer_id", ""),
            "sources[0]: a source of kind 'links' needs at least two `identifiers` columns",
        ),
        (WIDE + "    occurred_at: bought\n", "sources[0]: give either `events` or ['occurred_at'], not both"),
        (WIDE.replace("optional: true", "optional: true, colour: red"), "sources[0].events[1].colour: unknown key"),
        (WIDE.replace("event_type: Purchase}", "event_type: purchase, optional: true}"), "at least one event"),
        (WIDE.replace("Purchase", "delivery"), "events: expected distinct, non-empty event types"),
        (WIDE.replace("    channel: {value: web}\n", ""), "sources[0]: channel: required key missing"),
        (
            WIDE + "    keep_rows: [{column: s, one_of: [a], not_empty: true}]\n",
            "sources[0].keep_rows[0]: give exactly one of 'one_of' (a list of values) or 'not_empty: true'",
        ),
        (WIDE + "    keep_rows: [{column: s, in: [a]}]\n", "sources[0].keep_rows[0].in: unknown key"),
        (WIDE + "    kind: lookups\n", "sources[0].kind: Input should be 'events' or 'links'"),
        (
            WIDE.replace("optional: true", "optional: false").replace("Purchase}", "purchase, optional: true}")
            + "    revenue: price\n",
            "sources[0]: events[0]: carries the row's revenue, so it must not be optional",
        ),
        (
            WIDE + "    event_id: [order_id, tel]\n    identifiers: {tel: phone, mail: email, order_id: order_id}\n",
            "sources[0]: event_id: column(s) ['tel'] hold phone identifiers, and an event id is stored in the lake",
        ),
    ],
    ids=[
        "links-time",
        "links-one-id",
        "events-and-time",
        "event-key",
        "all-optional",
        "same-type",
        "no-channel",
        "filter-two-tests",
        "filter-key",
        "kind",
        "revenue-on-optional",
        "personal-event-id",
    ],
)
def test_new_source_keys_are_checked_at_load_naming_the_key(tmp_path, body, error):
    assert error in config_error(_sources_yaml(tmp_path, body))


def test_an_environment_variable_that_names_no_setting_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("JOURNEYS_MEMORY_LIMT", "1GB")
    with pytest.raises(ConfigError, match=r"JOURNEYS_MEMORY_LIMT \(environment\): not a setting"):
        load_settings(pii_salt="s")
    monkeypatch.delenv("JOURNEYS_MEMORY_LIMT")
    monkeypatch.setenv("JOURNEYS_MEMORY_LIMIT", "1GB")
    assert load_settings(pii_salt="s").memory_limit == "1GB"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("dask_address: tcp://scheduler:8786\n", "dask_address: used only with executor: dask (executor is local)"),
        ("dask_workers: 4\n", "dask_workers: used only with executor: dask (executor is local)"),
        (
            "executor: dask\ndask_address: tcp://scheduler:8786\ndask_workers: 4\n",
            "dask_workers: sizes only the local cluster; the cluster at dask_address has its own workers",
        ),
        ("executor: dask\ndask_address: scheduler\n", "dask_address: expected a scheduler address such as tcp://"),
        ("executor: dask\ndask_workers: 0\n", "dask_workers"),
        ("executor: spark\n", "executor"),
    ],
)
def test_dask_settings_are_checked_at_load_naming_the_key(tmp_path, body, error):
    assert error in config_error(write_config(tmp_path, body))


def test_dask_settings_load_and_the_local_executor_is_the_default(tmp_path):
    assert load_settings(write_config(tmp_path, "buckets: 8\n")).executor == "local"
    s = load_settings(write_config(tmp_path, "executor: dask\n"))
    assert (s.executor, s.dask_address, s.dask_workers) == ("dask", None, 2)
    s = load_settings(write_config(tmp_path, "executor: dask\ndask_address: tcp://10.0.0.5:8786\n"))
    assert s.dask_address == "tcp://10.0.0.5:8786"
    # A flow parameter or CLI option overrides the file like any keyword.
    s = load_settings(write_config(tmp_path, "buckets: 8\n"), executor="dask", dask_workers=3)
    assert (s.executor, s.dask_workers) == ("dask", 3)


def test_a_funnel_exclusion_without_a_condition_is_rejected_at_load(tmp_path):
    text = "stage_models:\n  - path: generic_lifecycle\n    exclusions:\n      - between: [1, 2]\n"
    p = write_config(tmp_path, text)
    assert config_error(p) == (
        f"{p}: stage_models[0].exclusions[0]: an exclusion needs at least one of event_type, channel, touchpoint"
    )
    p = write_config(tmp_path, text + "        channel: [call_centre]\n")
    ex = load_settings(p).stage_models[0].exclusions[0]
    assert (ex.event_type, ex.channel, ex.touchpoint) == ([], ["call_centre"], [])
