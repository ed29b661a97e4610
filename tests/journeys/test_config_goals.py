"""`goals` in the config: typed, unknown keys rejected, and what they name checked at load time."""

import re
from pathlib import Path

import pytest

from journeys.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
HEAD = "pii_salt: test-salt-goals\nstage_models: [{path: generic_lifecycle, modes: [ordered, any_order]}]\ngoals:\n"
FLOW = "  - {name: g, stage_model: generic_lifecycle, stage: consideration, threshold: 0.5, direction: min, "


def _error(tmp_path: Path, goals: str, head: str = HEAD) -> str:
    p = tmp_path / "j.yaml"
    p.write_text(head + goals)
    # Every config error starts with the file's path; the callers check the rest.
    with pytest.raises(ConfigError, match=f"^{re.escape(str(p))}: ") as err:
        load_settings(p)
    return str(err.value).removeprefix(f"{p}: ")


def test_goals_load_typed_with_their_defaults(tmp_path):
    p = tmp_path / "j.yaml"
    p.write_text(
        HEAD
        + FLOW
        + "metric: conversion_rate}\n"
        + "  - {name: h, stage_model: generic_lifecycle, stage: purchase, metric: monetised_value, channel: store,"
        " threshold: -20, direction: max}\n"
    )
    g, h = load_settings(p).goals
    assert (g.metric, g.stage, g.mode, g.channel, g.touchpoint, g.threshold, g.direction) == (
        "conversion_rate",
        "consideration",
        None,
        None,
        None,
        0.5,
        "min",
    )
    assert (h.metric, h.channel, h.threshold, h.direction) == ("monetised_value", "store", -20.0, "max")


def test_the_demo_config_has_goals_that_load():
    goals = load_settings(REPO / "journeys.yaml").goals
    assert goals and len({g.name for g in goals}) == len(goals)


@pytest.mark.parametrize(
    ("goals", "error"),
    [
        (FLOW + "metric: conversion_rate, thresold: 1}\n", "goals[0].thresold: unknown key"),
        (
            FLOW.replace("threshold: 0.5, ", "") + "metric: conversion_rate}\n",
            "goals[0].threshold: required key missing",
        ),
        (FLOW + "metric: conversion_rate, direction: above}\n", "goals[0].direction: Input should be 'min' or 'max'"),
        (FLOW + "metric: churn}\n", "goals[0].metric: Input should be 'conversion_rate', 'flow_rate',"),
        (FLOW + "metric: flow_rate}\n", "goals[0]: channel: required for metric flow_rate"),
        (FLOW + "metric: conversion_rate, channel: web}\n", "goals[0]: channel: not used for metric conversion_rate"),
        (FLOW + "metric: mean_sentiment}\n", "goals[0]: touchpoint: required for metric mean_sentiment"),
        (
            FLOW + "metric: flow_rate, channel: web, touchpoint: 'web:page_view'}\n",
            "goals[0]: touchpoint: not used for metric flow_rate",
        ),
        (FLOW + "metric: flow_rate, channel: web, mode: ordered}\n", "goals[0]: mode: only a conversion_rate goal"),
        (
            FLOW.replace("0.5", "50") + "metric: conversion_rate}\n",
            "goals[0]: threshold: conversion_rate lies in [0, 1], got 50 (a share: write 0.5 for 50 %)",
        ),
        (
            FLOW.replace("0.5", "-2") + "metric: mean_sentiment, touchpoint: 'call_centre:call'}\n",
            "goals[0]: threshold: mean_sentiment lies in [-1, 1], got -2",
        ),
    ],
)
def test_a_goal_of_the_wrong_shape_is_rejected_naming_the_key(tmp_path, goals, error):
    assert _error(tmp_path, goals).startswith(error)


@pytest.mark.parametrize(
    ("goals", "error"),
    [
        (
            FLOW.replace("generic_lifecycle", "travel") + "metric: conversion_rate}\n",
            "goals[0] ('g').stage_model: 'travel' is not a configured stage model; configured: ['generic_lifecycle']",
        ),
        (
            FLOW.replace("consideration", "checkout") + "metric: conversion_rate}\n",
            "goals[0] ('g').stage: 'checkout' is not a stage of generic_lifecycle; stages: ['awareness',",
        ),
        (
            FLOW.replace("consideration", "renewal") + "metric: flow_rate, channel: web}\n",
            "goals[0] ('g').stage: 'renewal' is the last stage of generic_lifecycle: it has no flow_rate",
        ),
        (
            FLOW + "metric: conversion_rate, mode: strict}\n",
            "goals[0] ('g').mode: 'strict' is not computed for generic_lifecycle; its modes: ['ordered', 'any_order']",
        ),
        (
            FLOW + "metric: flow_rate, channel: telex}\n",
            "goals[0] ('g').channel: 'telex' is not one of `channels`",
        ),
        (
            FLOW + "metric: conversion_rate}\n" + FLOW + "metric: flow_rate, channel: web}\n",
            "goals: duplicate goal names ['g']",
        ),
    ],
)
def test_a_goal_naming_what_does_not_exist_is_rejected_at_load(tmp_path, goals, error):
    assert _error(tmp_path, goals).startswith(error)


def test_monetised_value_needs_a_purchase_stage(tmp_path):
    model = tmp_path / "plain.yaml"
    model.write_text("name: plain\nversion: 1\nstages:\n  - {name: a, rules: [{event_type: [x]}]}\n")
    goal = "  - {name: g, stage_model: plain, stage: a, metric: monetised_value, channel: web, threshold: 0,"
    goal += " direction: min}\n"
    assert _error(tmp_path, goal, head="stage_models: [{path: plain.yaml}]\ngoals:\n") == (
        "goals[0] ('g').metric: plain names no purchase_stage, so its cells have no monetised_value"
    )


def test_a_goal_on_an_unloadable_stage_model_says_which(tmp_path):
    goal = FLOW.replace("generic_lifecycle", "gone") + "metric: conversion_rate}\n"
    assert _error(tmp_path, goal, head="stage_models: [{path: gone.yaml}]\ngoals:\n").startswith(
        "goals: cannot check them against stage_models[0]: stage model 'gone.yaml'"
    )
