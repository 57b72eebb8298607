"""SQLite results store: one row per model/variant/runtime/provider/batch/threads; reruns reuse finished rows."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

COLUMNS = [
    ("key", "TEXT PRIMARY KEY"), ("model", "TEXT"), ("model_key", "TEXT"), ("variant", "TEXT"), ("runtime", "TEXT"),
    ("provider", "TEXT"), ("batch", "INTEGER"), ("threads", "INTEGER"), ("status", "TEXT"), ("reason", "TEXT"),
    ("metric_name", "TEXT"), ("higher_is_better", "INTEGER"), ("metric", "REAL"), ("size", "INTEGER"),
    ("size_gzip", "INTEGER"), ("init_ms", "REAL"), ("first_ms", "REAL"), ("runs", "INTEGER"), ("min_ms", "REAL"),
    ("mean_ms", "REAL"), ("std_ms", "REAL"), ("p50_ms", "REAL"), ("p90_ms", "REAL"), ("p99_ms", "REAL"),
    ("max_ms", "REAL"), ("throughput", "REAL"), ("peak_rss_mb", "REAL"), ("load_rss_mb", "REAL"),
    ("overhead", "REAL"), ("method", "TEXT"), ("host", "TEXT"), ("versions", "TEXT"), ("git_rev", "TEXT"), ("created", "TEXT"),
]
NAMES = [c for c, _ in COLUMNS]


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(f"CREATE TABLE IF NOT EXISTS results ({', '.join(f'{c} {t}' for c, t in COLUMNS)})")

    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def has(self, key: str) -> bool:
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM results WHERE key = ?", (key,)).fetchone() is not None

    def put(self, row: dict) -> None:
        """Insert or replace one row in a transaction (a crash leaves the store as it was)."""
        values = [json.dumps(row[c]) if isinstance(row.get(c), (dict, list)) else row.get(c) for c in NAMES]
        with closing(self._connect()) as db, db:
            db.execute(f"INSERT OR REPLACE INTO results ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))})",
                       values)

    def rows(self, models: list[str] | None = None) -> list[dict]:
        with closing(self._connect()) as db:
            cur = db.execute("SELECT * FROM results ORDER BY model, variant, runtime, batch, threads")
            rows = [dict(r) for r in cur.fetchall()]
        return [r for r in rows if not models or r["model"] in models]
