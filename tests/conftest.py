"""Shared fixtures: Prefect runs against a throwaway home with a generous server start-up timeout."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports prefect: a fresh PREFECT_HOME per session, no analytics, slow-start tolerance.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="journeys-prefect-"))
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test-fast` runs two xdist workers: an ephemeral server's database must not be shared.
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"journeys-prefect-{worker}-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journeys.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_developer_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A developer's JOURNEYS_* variables override the config; no test may depend on them."""
    for key in [k for k in os.environ if k.startswith("JOURNEYS_")]:
        monkeypatch.delenv(key)
    yield


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Settings for tests: small memory, a fixed salt, the data root given; keyword arguments override."""

    def make(root: Path | None = None, **overrides: Any) -> Settings:
        fields: dict[str, Any] = {"pii_salt": "test-salt", "memory_limit": "512MB", "threads": 2, **overrides}
        if root is not None:
            fields["data_root"] = root
        return Settings(**fields)

    return make


@pytest.fixture
def demo_settings() -> Callable[..., Settings]:
    """The repository's demo config (journeys.yaml) on another data root."""

    def make(root: Path, **overrides: Any) -> Settings:
        return load_settings(REPO / "journeys.yaml", data_root=root, **overrides)

    return make
