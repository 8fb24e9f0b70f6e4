"""The response cache in one SQLite file under the data folder (the default backend).

WAL mode lets the processes of one machine (the web app, ``ragchat`` commands, job
workers) read while one writes; each write is one short transaction. Expired entries are
deleted by the next write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag.cache.base import Candidate, Entry
from rag.errors import CacheError
from rag.sqlite import immediate, open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    vector BLOB NOT NULL,
    marks TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS answers_recent ON answers (scope, created_at);
CREATE INDEX IF NOT EXISTS answers_expiry ON answers (expires_at);
"""


class SqliteAnswerCache:
    """``rag.cache.base.AnswerCache`` in a SQLite file, safe to share between threads."""

    def __init__(self, path: Path, *, timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            # A cache may lose its last write: not durable.
            self._db = open_db(
                self.path, _SCHEMA, timeout_s=timeout_s, autocommit=True, durable=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(str(self.path), f"cannot open it: {exc}") from exc

    @contextmanager
    def _using(self, doing: str) -> Iterator[sqlite3.Connection]:
        """The database, under the lock; its errors as ``CacheError`` (cannot ``doing`` it)."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise CacheError(str(self.path), f"cannot {doing} it: {exc}") from exc

    def get(self, scope: str, key: str, now: float) -> str | None:
        """The answer stored for this scope and question key, unless expired."""
        with self._using("read") as db:
            row = db.execute(
                "SELECT answer FROM answers WHERE scope = ? AND key = ? AND expires_at > ?",
                (scope, key, now),
            ).fetchone()
        return None if row is None else str(row[0])

    def recent(self, scope: str, limit: int, now: float) -> list[Candidate]:
        """The newest ``limit`` unexpired entries of a scope, newest first."""
        with self._using("read") as db:
            rows = db.execute(
                "SELECT key, vector, marks FROM answers WHERE scope = ? AND expires_at > ? "
                "ORDER BY created_at DESC LIMIT ?",
                (scope, now, limit),
            ).fetchall()
        return [Candidate(str(k), bytes(v), str(n)) for k, v, n in rows]

    def put(
        self,
        scope: str,
        key: str,
        entry: Entry,
        now: float,
    ) -> None:
        """Store (or replace) the answer for this scope and question key."""
        with self._using("write") as db, immediate(db):
            db.execute("DELETE FROM answers WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO answers "
                "(scope, key, vector, marks, answer, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (scope, key, entry.vector, entry.marks, entry.answer, now, entry.expires_at),
            )

    def clear(self) -> int:
        """Remove every entry; how many there were."""
        with self._using("write") as db:
            return db.execute("DELETE FROM answers").rowcount

    def count(self) -> int:
        """Entries stored, expired ones not yet deleted included."""
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM answers").fetchone()
        return int(n)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
