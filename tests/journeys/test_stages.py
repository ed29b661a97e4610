"""Stage models: the YAML a stage model is written in, and what it refuses."""

import pytest

from journeys.stages import load_stage_model, shipped_stage_models


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
