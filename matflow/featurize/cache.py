"""Disk cache of feature rows keyed by (preset key, structure hash).

SQLite (stdlib, safe for concurrent readers, one file) holding each row as JSON text: a rerun of the same
structures with the same preset does no featurization work. Values are plain floats, never pickles.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    preset_key TEXT NOT NULL,
    structure_hash TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (preset_key, structure_hash)
)
"""


class FeatureCache:
    """Feature rows on disk. ``get_many`` and ``put_many`` work in batches to keep reruns fast."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def get_many(self, preset_key: str, hashes: Iterable[str]) -> dict[str, dict]:
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, dict] = {}
        with closing(self._connect()) as con:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                cur = con.execute(
                    f"SELECT structure_hash, payload FROM rows WHERE preset_key=? AND structure_hash IN ({marks})",
                    [preset_key, *chunk],
                )
                for key, payload in cur:
                    found[key] = json.loads(payload)
        return found

    def put_many(self, preset_key: str, rows: dict[str, dict]) -> None:
        if not rows:
            return
        with closing(self._connect()) as con, con:
            con.executemany(
                "INSERT OR REPLACE INTO rows (preset_key, structure_hash, payload) VALUES (?, ?, ?)",
                [(preset_key, key, json.dumps(row)) for key, row in rows.items()],
            )

    def __len__(self) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
