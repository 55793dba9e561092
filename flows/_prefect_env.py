"""Defaults that make Prefect's embedded (ephemeral, SQLite) server usable on small machines.

Imported by every flow module before Prefect itself. Values already set by the user win. The Prefect
server comes from ``PREFECT_API_URL`` when set, else from matflow's ``prefect_api_url`` setting
(``MATFLOW_PREFECT_API_URL`` or the config file), else the ephemeral local server.
"""

from __future__ import annotations

import os

from matflow.settings import get_settings

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

_api_url = get_settings().prefect_api_url
if _api_url:
    os.environ.setdefault("PREFECT_API_URL", _api_url)
