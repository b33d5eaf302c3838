"""A content-keyed SQLite cache of judge answers: a re-run sends zero requests, a killed run resumes.

The key is a sha256 over everything that decides a judge's answer: the judge's name, the hash of its
prompt template(s), the model, the inputs (prompt, answer(s), reference), the sampling parameters
(temperature, max_tokens, structured-output mode) and the repeat seed. Only answers that parsed are
stored (an unparsable or failed answer is retried next time). Each answer is committed as it arrives
(WAL journal), so a run killed mid-way keeps everything it finished.

The database holds judge answers only: never request headers, keys or client options.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(*, judge: str, template_hash: str, model: str, inputs: dict[str, Any],
              sampling: dict[str, Any], seed: int) -> str:
    """The content key of one judge call (canonical JSON, sha256)."""
    blob = json.dumps({"judge": judge, "template": template_hash, "model": model, "inputs": inputs,
                       "sampling": sampling, "seed": seed}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def text_hash(*texts: str) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


class JudgeCache:
    """``get(key) -> dict | None`` and ``put(key, judge, value)``; ``JudgeCache(None)`` caches nothing."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.hits = self.misses = self.writes = 0
        self.inflight: dict = {}  # key -> future of a call in flight (identical rows share one request)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(SCHEMA)

    @property
    def enabled(self) -> bool:
        return self._conn is not None

    def get(self, key: str) -> dict | None:
        if self._conn is None:
            return None
        with self._lock:
            row = self._conn.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, judge: str, value: dict) -> None:
        if self._conn is None:
            return
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO answers (key, judge, value, created) VALUES (?, ?, ?, ?)",
                               (key, judge, json.dumps(value, ensure_ascii=False), time.time()))
        self.writes += 1

    def count(self, judge: str | None = None) -> int:
        if self._conn is None:
            return 0
        with self._lock:
            if judge is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
            return int(self._conn.execute("SELECT COUNT(*) FROM answers WHERE judge = ?", (judge,)).fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            with self._lock:
                self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
