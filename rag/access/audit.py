"""The audit trail: an append-only, hash-chained log in its own SQLite file.

Each record carries the SHA-256 of the record before it, and its own hash covers its
sequence number, time, actor, action, target, details and that link. ``verify`` walks the
chain and names the first record that was changed, removed or moved; a head file beside
the database (the last sequence number and hash, replaced atomically at each append)
catches records cut from the end. Triggers refuse UPDATE and DELETE through SQLite, so
tampering takes editing the file, which ``verify`` then reports.

We write this rather than use a logging handler: a handler cannot chain hashes across
processes (appends take SQLite's write lock, so two servers chain in one order).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from rag.sqlite import open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_at ON records(at);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""

GENESIS = "0" * 64


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def record_hash(
    seq: int, at: str, actor: str, action: str, target: str, detail: str, prev: str
) -> str:
    """The hash a record must carry (over a canonical JSON array of its fields)."""
    body = json.dumps([seq, at, actor, action, target, detail, prev], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    """One entry: who (``actor``) did what (``action``) to what (``target``), and details."""

    seq: int
    at: str
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    prev: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """The record as one JSONL line of ``audit export``."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
            "prev": self.prev,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: ``ok``, how many records, and the first problem."""

    ok: bool
    records: int
    problem: str | None = None
    seq: int | None = None  # the record at fault


class AuditLog:
    """Append records and verify the chain; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self._lock = threading.Lock()
        self._db = open_db(path, _SCHEMA, timeout_s=30, autocommit=True)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def append(
        self, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> AuditRecord:
        """Add a record at the end of the chain."""
        text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute(
                    "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
                at = _now()
                digest = record_hash(seq, at, actor, action, target, text, prev)
                self._db.execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, at, actor, action, target, text, prev, digest),
                )
                self._write_head(seq, digest)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return AuditRecord(seq, at, actor, action, target, detail or {}, prev, digest)

    def _write_head(self, seq: int, digest: str) -> None:
        # Written inside the append's transaction: the next appender waits for it.
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        tmp.write_text(f"{seq} {digest}\n")
        os.replace(tmp, self.head_path)

    def _head(self) -> tuple[int, str] | None:
        try:
            seq, digest = self.head_path.read_text().split()
            return int(seq), digest
        except FileNotFoundError:
            return None
        except ValueError:
            return (-1, "unreadable")

    def records(self, since: str | None = None, *, rows: bool = False) -> Iterator[AuditRecord]:
        """Records in order (``since``: an ISO time; those at or after it)."""
        query = "SELECT seq, at, actor, action, target, detail, prev, hash FROM records"
        args: tuple[str, ...] = ()
        if since:
            query += " WHERE at >= ?"
            args = (since,)
        with self._lock:
            found = self._db.execute(query + " ORDER BY seq", args).fetchall()
        for seq, at, actor, action, target, detail, prev, digest in found:
            try:
                parsed = json.loads(detail)
            except ValueError:
                parsed = {"unparsable": detail}
            yield AuditRecord(
                int(seq), str(at), str(actor), str(action), str(target), parsed, prev, digest
            )

    def verify(self) -> Verdict:
        """Walk the chain from the first record; the first change, gap or reordering."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, at, actor, action, target, detail, prev, hash FROM records "
                "ORDER BY rowid"
            ).fetchall()
        expected_prev, expected_seq = GENESIS, 1
        for count, (seq, at, actor, action, target, detail, prev, digest) in enumerate(rows):
            if seq != expected_seq:
                if seq > expected_seq and prev != expected_prev:
                    return Verdict(
                        False, count, f"record {expected_seq} is missing (removed)", expected_seq
                    )
                return Verdict(
                    False, count, f"record {seq} is out of order (expected {expected_seq})", seq
                )
            actual = record_hash(seq, at, actor, action, target, detail, prev)
            if actual != digest:
                return Verdict(False, count, f"record {seq} was changed", seq)
            if prev != expected_prev:
                return Verdict(
                    False,
                    count,
                    f"record {seq} does not follow record {seq - 1} (a record was "
                    "replaced or moved)",
                    seq,
                )
            expected_prev, expected_seq = digest, seq + 1
        head = self._head()
        last_seq = expected_seq - 1
        if head is not None and head != (last_seq, expected_prev):
            if head[0] > last_seq:
                return Verdict(
                    False,
                    len(rows),
                    f"records {last_seq + 1} to {head[0]} are missing (cut from the end)",
                    last_seq + 1,
                )
            return Verdict(False, len(rows), "the head file does not match the last record")
        if head is None and rows:
            return Verdict(False, len(rows), f"the head file {self.head_path.name} is missing")
        return Verdict(True, len(rows))

    def export(self, out: TextIO, since: str | None = None) -> int:
        """Write records as JSONL (for a SIEM); how many."""
        count = 0
        for record in self.records(since):
            out.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            count += 1
        return count
