"""Defaults that make Prefect's embedded (ephemeral, SQLite) server usable on small machines.

Imported by every flow module before Prefect itself. Values already set by the user win, and when
PREFECT_API_URL is set the flows run against that real server instead.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
