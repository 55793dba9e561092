"""One settings object for matflow, read from MATFLOW_* environment variables.

Per-run values are function arguments; these are only machine-wide defaults (where caches and
bundled data live, which torch device to use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    models_dir: Path
    cache_dir: Path
    device: str

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        cache_default = Path(env.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "matflow"
        return cls(
            data_dir=Path(env.get("MATFLOW_DATA_DIR", PROJECT_ROOT / "data")),
            models_dir=Path(env.get("MATFLOW_MODELS_DIR", PROJECT_ROOT / "models")),
            cache_dir=Path(env.get("MATFLOW_CACHE_DIR", cache_default)),
            device=env.get("MATFLOW_DEVICE", "auto"),
        )


def get_settings() -> Settings:
    """Settings as the environment says now (cheap; re-read so tests can monkeypatch env vars)."""
    return Settings.from_env()
