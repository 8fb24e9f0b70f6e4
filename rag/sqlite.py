"""Opening the small SQLite databases of the data folder, one way for all of them.

Conversations, accounts, the audit trail, the review queue, the usage log and the response
cache each keep one connection shared by the threads of a process (guarded by the owner's
lock), in WAL mode so several processes read while one writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_db(
    path: Path,
    schema: str,
    *,
    timeout_s: float = 10.0,
    autocommit: bool = False,
    foreign_keys: bool = False,
    durable: bool = True,
) -> sqlite3.Connection:
    """A connection to ``path`` (its folder made), in WAL mode, with ``schema`` applied.

    ``autocommit``: each statement commits unless a transaction is begun explicitly.
    ``durable`` False: commits reach the WAL without waiting for the disk (a power cut may
    lose the last writes, never the file), for logs and caches.

    Raises:
        OSError: the folder cannot be made.
        sqlite3.Error: the file cannot be opened or the schema applied.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        path,
        check_same_thread=False,
        timeout=timeout_s,
        isolation_level=None if autocommit else "DEFERRED",
    )
    try:
        if foreign_keys:
            db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA journal_mode = WAL")
        if not durable:
            db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(schema)
    except sqlite3.Error:
        db.close()
        raise
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on an autocommit connection: committed, or rolled back on error.

    ``BEGIN IMMEDIATE`` takes the write lock at once, so a concurrent writer waits on the
    busy timeout here rather than failing midway when its read turns into a write.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
