from pathlib import Path

import pytest
from pydantic import ValidationError

from journeys.config import MappedField, Settings, SourceConfig, load_settings, parse_duration_us

REPO = Path(__file__).resolve().parents[2]


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
    with pytest.raises(ValidationError, match="data_rot"):
        load_settings(p)


def test_mapped_field_needs_exactly_one_of_column_or_value():
    with pytest.raises(ValidationError):
        MappedField()
    with pytest.raises(ValidationError):
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
        (None, None),
    ],
)
def test_parse_duration(text, us):
    assert parse_duration_us(text) == us


def test_journey_map_settings_parse_and_reject_unknown_keys(tmp_path):
    p = tmp_path / "j.yaml"
    p.write_text("costs: {call_centre: 6.5, chat: 2}\ncustomer_value: 120\nred_points: {min_count: 50}\n")
    s = load_settings(p)
    assert s.costs == {"call_centre": 6.5, "chat": 2.0}
    assert s.customer_value == 120.0
    assert (s.red_points.min_count, s.red_points.z, s.red_points.min_lift) == (50, 1.96, 1.5)
    p.write_text("red_points: {min_cnt: 50}\n")
    with pytest.raises(ValidationError, match="min_cnt"):
        load_settings(p)


def test_purchase_stage_must_name_a_stage_and_the_shipped_models_have_one():
    from journeys.stages import StageModel, load_stage_model, shipped_stage_models

    for name in shipped_stage_models():
        model = load_stage_model(name)
        assert model.purchase_stage_index is not None, name
    with pytest.raises(ValidationError, match="purchase_stage"):
        StageModel(name="m", version=1, stages=[{"name": "a", "rules": [{"event_type": ["x"]}]}], purchase_stage="b")
