"""Shared fixtures: Prefect runs against a throwaway home with a generous server start-up timeout."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports prefect: a fresh PREFECT_HOME per session, no analytics, slow-start tolerance.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="journeys-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
