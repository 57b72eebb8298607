"""The resumable search log of ``compress auto``: one SQLite row per scored candidate.

A row is keyed by a hash of what its score depends on (model and data content, the candidate's recipe chain,
the runtime, the host and the harness version), so a rerun in the same directory skips every candidate it
already scored, and anything that would change a score (new weights, other data, another CPU, a changed
harness) gets a new key and is scored again. Each write is one transaction: a killed search keeps the rows
it finished, never a torn one.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np

from models.artifacts import key_of
from models.errors import UserError

#: bump when scoring or timing changes: older rows then no longer match and are scored again
HARNESS_VERSION = 2  # 2: 3 sessions per candidate, finalists re-timed side by side
TABLE = "auto_candidates"


def candidate_key(model_hash: str, chain: str, runtime: str, context: dict | None = None) -> str:
    """The key of one candidate's score: (model content hash, recipe chain, runtime, harness version) plus
    ``context`` (data hash, metric, host, bootstrap settings: whatever else the score depends on)."""
    return key_of({"model": model_hash, "chain": chain, "runtime": runtime, "harness": HARNESS_VERSION,
                   **(context or {})})


class AutoLog:
    """``get(key)`` -> the stored row (a dict) or None; ``put(key, row)`` stores one atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with self._db() as db, db:
                db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, runtime TEXT, chain TEXT, "
                           "status TEXT, row TEXT, created TEXT DEFAULT CURRENT_TIMESTAMP)")
        except sqlite3.DatabaseError as e:  # pragma: no cover - raised inside _db as UserError
            raise UserError(f"search log {self.path}: {e}") from None

    @contextmanager
    def _db(self):
        try:
            with closing(sqlite3.connect(self.path, timeout=30)) as db:
                yield db
        except sqlite3.Error as e:
            raise UserError(f"search log {self.path}: {str(e).strip() or type(e).__name__} "
                            "(delete it to start the search afresh)") from None

    def get(self, key: str) -> dict | None:
        with self._db() as db:
            found = db.execute(f"SELECT row FROM {TABLE} WHERE key = ?", (key,)).fetchone()
        return None if found is None else json.loads(found[0])

    def put(self, key: str, row: dict) -> None:
        with self._db() as db, db:
            db.execute(f"INSERT OR REPLACE INTO {TABLE} (key, runtime, chain, status, row) VALUES (?, ?, ?, ?, ?)",
                       (key, row.get("runtime"), json.dumps(row.get("chain")), row.get("status"),
                        json.dumps(row, default=str)))

    def keys(self) -> set[str]:
        with self._db() as db:
            return {r[0] for r in db.execute(f"SELECT key FROM {TABLE}")}

    def __len__(self) -> int:
        with self._db() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0])


def _array_digest(h, obj) -> None:
    if obj is None:
        h.update(b"none")
    elif isinstance(obj, dict):
        for k in sorted(obj):
            h.update(str(k).encode())
            _array_digest(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _array_digest(h, v)
    else:
        a = np.ascontiguousarray(np.asarray(obj))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.view(np.uint8).data if a.dtype != object else repr(a.tolist()).encode())


def data_digest(splits) -> str:
    """The content of the data a score depends on (train: calibration and fine-tuning; test: the metric)."""
    h = hashlib.blake2b(digest_size=16)
    for split in (splits.train, splits.test):
        _array_digest(h, split.x)
        _array_digest(h, split.y)
    return h.hexdigest()
