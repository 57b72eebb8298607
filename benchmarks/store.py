"""SQLite results store: one row per model/variant/runtime/provider/batch/threads; reruns reuse finished rows."""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path

from models.errors import UserError

COLUMNS = [
    ("key", "TEXT PRIMARY KEY"), ("model", "TEXT"), ("model_key", "TEXT"), ("variant", "TEXT"), ("runtime", "TEXT"),
    ("provider", "TEXT"), ("batch", "INTEGER"), ("threads", "INTEGER"), ("status", "TEXT"), ("reason", "TEXT"),
    ("metric_name", "TEXT"), ("higher_is_better", "INTEGER"), ("metric", "REAL"), ("metric_from", "TEXT"), ("size", "INTEGER"),
    ("size_gzip", "INTEGER"), ("init_ms", "REAL"), ("first_ms", "REAL"), ("runs", "INTEGER"),
    ("calls_per_sample", "INTEGER"), ("min_ms", "REAL"),
    ("mean_ms", "REAL"), ("std_ms", "REAL"), ("p50_ms", "REAL"), ("p90_ms", "REAL"), ("p99_ms", "REAL"),
    ("max_ms", "REAL"), ("throughput", "REAL"), ("peak_rss_mb", "REAL"), ("load_rss_mb", "REAL"),
    ("overhead", "REAL"), ("p50_ci", "REAL"), ("method", "TEXT"), ("host", "TEXT"), ("versions", "TEXT"), ("git_rev", "TEXT"), ("created", "TEXT"),
]
NAMES = [c for c, _ in COLUMNS]


SQLITE_MAGIC = b"SQLite format 3\x00"


class Store:
    """Every write is one SQLite transaction: a killed sweep leaves the rows it finished, never a torn one.

    ``create=False`` opens an existing store only (reports, comparisons); a file that is not a results
    store is a one-line UserError, and nothing is ever written into someone else's database.
    """

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"{self.path} is a directory, not a results store")
        exists = self.path.exists()
        if not create and not exists:
            raise UserError(f"no results store at {self.path}")
        if exists:
            try:
                with open(self.path, "rb") as f:
                    head = f.read(len(SQLITE_MAGIC))
            except OSError as e:
                raise UserError(f"cannot read results store {self.path}: {e.strerror or e}") from None
            if not head and not create:
                raise UserError(f"{self.path} is empty, not a results store")
            if head and head != SQLITE_MAGIC:
                raise UserError(f"{self.path} is not a results store (not an SQLite database)")
        else:
            parent = self.path.parent
            if parent.exists() and not parent.is_dir():
                raise UserError(f"cannot create a results store in {parent}: it is a file, not a directory")
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create {parent}: {e.strerror or e}") from None
        with self._db() as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "results" not in tables:
                if tables or not create:
                    raise UserError(f"{self.path} is an SQLite database without a results table, not a results store")
                with db:
                    db.execute(f"CREATE TABLE IF NOT EXISTS results ({', '.join(f'{c} {t}' for c, t in COLUMNS)})")
            else:
                have = {r[1] for r in db.execute("PRAGMA table_info(results)")}
                if "key" not in have:
                    raise UserError(f"{self.path} has a results table without a key column, not a results store")
                missing = [(c, t) for c, t in COLUMNS if c not in have]
                if missing and create:  # a store from an older version: add the new columns
                    with db:
                        for c, t in missing:
                            db.execute(f"ALTER TABLE results ADD COLUMN {c} {t}")

    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _db(self):
        """A connection whose SQLite errors (corrupt file, full disk, locked) are one-line UserErrors."""
        try:
            with closing(self._connect()) as db:
                yield db
        except sqlite3.Error as e:
            raise UserError(f"results store {self.path}: {str(e).strip() or type(e).__name__}") from None

    def has(self, key: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM results WHERE key = ?", (key,)).fetchone() is not None

    def put(self, row: dict) -> None:
        """Insert or replace one row in a transaction (a crash leaves the store as it was)."""
        self.put_many([row])

    def put_many(self, rows: list[dict]) -> None:
        """Insert or replace rows in one transaction: all of them or none."""
        values = [[json.dumps(row[c]) if isinstance(row.get(c), (dict, list)) else row.get(c) for c in NAMES]
                  for row in rows]
        with self._db() as db, db:
            db.executemany(f"INSERT OR REPLACE INTO results ({', '.join(NAMES)}) VALUES "
                           f"({', '.join('?' * len(NAMES))})", values)

    def rows(self, models: list[str] | None = None) -> list[dict]:
        with self._db() as db:
            have = {r[1] for r in db.execute("PRAGMA table_info(results)")}
            cur = db.execute("SELECT * FROM results ORDER BY model, variant, runtime, batch, threads")
            rows = [{**{c: None for c in NAMES if c not in have}, **dict(r)} for r in cur.fetchall()]
        return [r for r in rows if not models or any(_named(r["model"], m) for m in models)]


def _named(model: str | None, wanted: str) -> bool:
    """A model's rows are asked for by the name the store gives it (``m.keras (v1)``: a file and its folder), by its
    file name alone or its stem (every folder's ``m.keras``)."""
    if model == wanted:
        return True
    name = str(model or "").rsplit(" (", 1)[0]
    return " (" in str(model or "") and wanted in (name, Path(name).stem)
