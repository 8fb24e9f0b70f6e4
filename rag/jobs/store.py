"""The durable job store: job records, their inputs, result rows and question claims.

Everything a job's state is derived from lives here, never in a worker's memory: a job
record, one input item per question, at most one result row per question (written with
insert-or-ignore semantics, keyed by ``(job, index)``), and claims. A claim says which
worker is answering a question now; it expires unless its worker refreshes it, so a
killed worker's questions are taken over once its claims lapse, and a job never has more
than its ``concurrency`` questions claimed at once.

``SqliteJobStore`` keeps it in one SQLite file under the data directory (the embedded
queue, and workers that share a machine); ``rag.jobs.redis_store.RedisJobStore`` keeps
it in Redis, visible to workers on every machine.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from rag.errors import JobNotFoundError, RagError


def now_iso() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Claim(StrEnum):
    """The outcome of trying to claim a question."""

    OK = "ok"  # this worker answers it now
    BUSY = "busy"  # the job has ``concurrency`` questions in flight: try again shortly
    TAKEN = "taken"  # another live worker is answering this very question


@dataclass
class JobRecord:
    """What the store keeps about a job besides its items and rows."""

    id: str
    kind: str  # "batch" | "ingest"
    created_at: str
    total: int
    options: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)  # input problems
    started_at: str | None = None
    finished_at: str | None = None
    cancelled: bool = False
    metrics: dict[str, Any] | None = None
    progress: int = 0  # files done (ingest jobs; batch progress is the row count)
    failure: str | None = None  # why the whole job failed (ingest jobs)
    # The ingestion pipeline's latest (done, total) per stage: parse, read, embed, publish,
    # and wait (seconds waited for another ingestion's lock); ingest jobs only.
    stages: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Every field, for storing."""
        return {
            "id": self.id,
            "kind": self.kind,
            "created_at": self.created_at,
            "total": self.total,
            "options": self.options,
            "errors": self.errors,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "cancelled": self.cancelled,
            "metrics": self.metrics,
            "progress": self.progress,
            "failure": self.failure,
            "stages": self.stages,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        """The record ``to_json`` wrote."""
        return cls(**data)


class JobStore(Protocol):
    """Where jobs live; every method is safe to call from many threads and processes."""

    def create(self, record: JobRecord, items: dict[int, dict[str, Any]]) -> None:
        """Store a new job and its input items (by input index)."""
        ...

    def record(self, job_id: str) -> JobRecord:
        """A job's record (raises ``JobNotFoundError``)."""
        ...

    def records(self) -> list[JobRecord]:
        """Every job's record, newest first."""
        ...

    def item(self, job_id: str, index: int) -> dict[str, Any]:
        """One input item of a job (raises ``JobNotFoundError``)."""
        ...

    def items(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Every input item of a job, by input index (in input order)."""
        ...

    def update(self, job_id: str, **fields: Any) -> None:
        """Set record fields (``progress``, ``metrics``, ``failure``, ...)."""
        ...

    def mark(self, job_id: str, name: str, at: str) -> bool:
        """Set ``started_at``/``finished_at`` unless already set; True when this set it."""
        ...

    def cancel(self, job_id: str, at: str) -> bool:
        """Cancel an unfinished job (sets ``finished_at``); True when this cancelled it."""
        ...

    def put_row(self, job_id: str, index: int, row: dict[str, Any]) -> bool:
        """Write a question's row unless it has one; True when this wrote it."""
        ...

    def has_row(self, job_id: str, index: int) -> bool:
        """Whether a question has its row."""
        ...

    def rows(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Every row of a job, by input index."""
        ...

    def row_count(self, job_id: str) -> int:
        """How many rows a job has."""
        ...

    def claim(self, job_id: str, index: int, owner: str, ttl_s: float, limit: int) -> Claim:
        """Claim a question for ``owner`` for ``ttl_s``, if fewer than ``limit`` are claimed."""
        ...

    def release(self, job_id: str, index: int, owner: str) -> None:
        """Drop ``owner``'s claim on a question."""
        ...

    def live_claims(self, job_id: str) -> int:
        """How many of a job's questions are claimed now (expired claims not counted)."""
        ...

    def refresh(self, owner: str, claims: list[tuple[str, int]], ttl_s: float) -> None:
        """Extend ``owner``'s claims (its worker is alive)."""
        ...

    def unfinished(self) -> list[str]:
        """Ids of jobs neither finished nor cancelled."""
        ...

    def close(self) -> None:
        """Let go of connections."""
        ...


_SCHEMA = """
create table if not exists jobs (
    id text primary key, created_at text not null, record text not null
);
create table if not exists items (
    job text not null, idx integer not null, data text not null, primary key (job, idx)
);
create table if not exists rows (
    job text not null, idx integer not null, data text not null, primary key (job, idx)
);
create table if not exists claims (
    job text not null, idx integer not null, owner text not null, expires real not null,
    primary key (job, idx)
);
"""


class RecordChanges(ABC):
    """``update``, ``mark`` and ``cancel`` for a store, over its atomic ``_modify``.

    ``_modify(job_id, change)`` reads a job's record, applies ``change`` and writes it back
    without losing a concurrent update (a transaction in SQLite, WATCH in Redis).
    """

    @abstractmethod
    def _modify(self, job_id: str, change: Callable[[JobRecord], Any]) -> Any:
        """Apply ``change`` to the job's record atomically; what ``change`` returned."""

    def update(self, job_id: str, **fields: Any) -> None:
        """Set record fields (``progress``, ``metrics``, ``failure``, ...)."""

        def change(record: JobRecord) -> None:
            for name, value in fields.items():
                setattr(record, name, value)

        self._modify(job_id, change)

    def mark(self, job_id: str, name: str, at: str) -> bool:
        """Set ``started_at``/``finished_at`` unless already set; True when this set it."""

        def change(record: JobRecord) -> bool:
            if getattr(record, name) is not None:
                return False
            setattr(record, name, at)
            return True

        return bool(self._modify(job_id, change))

    def cancel(self, job_id: str, at: str) -> bool:
        """Cancel an unfinished job (sets ``finished_at``); True when this cancelled it."""

        def change(record: JobRecord) -> bool:
            if record.cancelled or record.finished_at is not None:
                return False
            record.cancelled, record.finished_at = True, at
            return True

        return bool(self._modify(job_id, change))


class SqliteJobStore(RecordChanges):
    """The job store in one SQLite file (WAL; one connection per thread).

    Records are JSON in one column; updates read-modify-write them inside an immediate
    transaction, so concurrent workers (threads or processes) never lose an update.
    """

    def __init__(self, path: Path, *, timeout_s: float = 30.0) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._local = threading.local()
        # Each thread has its own connection; those of threads that ended are closed when
        # the next one opens (page reruns and the API's pool run on short-lived threads).
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn().executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RagError(f"cannot open the job store {path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            self._local.conn = conn
            with self._lock:
                alive = []
                for thread, other in self._connections:
                    if thread.is_alive():
                        alive.append((thread, other))
                    else:
                        other.close()
                self._connections = [*alive, (threading.current_thread(), conn)]
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("begin immediate")
        try:
            yield conn
        except BaseException:
            conn.execute("rollback")
            raise
        conn.execute("commit")

    def create(self, record: JobRecord, items: dict[int, dict[str, Any]]) -> None:
        """Store a new job and its input items (by input index)."""
        with self._tx() as conn:
            conn.execute(
                "insert into jobs (id, created_at, record) values (?, ?, ?)",
                (record.id, record.created_at, json.dumps(record.to_json())),
            )
            conn.executemany(
                "insert into items (job, idx, data) values (?, ?, ?)",
                [(record.id, i, json.dumps(item)) for i, item in items.items()],
            )

    def record(self, job_id: str) -> JobRecord:
        """A job's record (raises ``JobNotFoundError``)."""
        found = self._conn().execute("select record from jobs where id = ?", (job_id,)).fetchone()
        if found is None:
            raise JobNotFoundError(job_id)
        return JobRecord.from_json(json.loads(found[0]))

    def records(self) -> list[JobRecord]:
        """Every job's record, newest first."""
        rows = self._conn().execute("select record from jobs order by created_at desc, id")
        return [JobRecord.from_json(json.loads(r[0])) for r in rows]

    def item(self, job_id: str, index: int) -> dict[str, Any]:
        """One input item of a job (raises ``JobNotFoundError``)."""
        found = (
            self._conn()
            .execute("select data from items where job = ? and idx = ?", (job_id, index))
            .fetchone()
        )
        if found is None:
            raise JobNotFoundError(job_id)
        data: dict[str, Any] = json.loads(found[0])
        return data

    def items(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Every input item of a job, by input index (in input order)."""
        found = self._conn().execute(
            "select idx, data from items where job = ? order by idx", (job_id,)
        )
        return {idx: json.loads(data) for idx, data in found}

    def _modify(self, job_id: str, change: Any) -> Any:
        with self._tx() as conn:
            found = conn.execute("select record from jobs where id = ?", (job_id,)).fetchone()
            if found is None:
                raise JobNotFoundError(job_id)
            record = JobRecord.from_json(json.loads(found[0]))
            outcome = change(record)
            if outcome is not False:
                conn.execute(
                    "update jobs set record = ? where id = ?",
                    (json.dumps(record.to_json()), job_id),
                )
            return outcome

    def put_row(self, job_id: str, index: int, row: dict[str, Any]) -> bool:
        """Write a question's row unless it has one; True when this wrote it."""
        with self._tx() as conn:
            cursor = conn.execute(
                "insert or ignore into rows (job, idx, data) values (?, ?, ?)",
                (job_id, index, json.dumps(row)),
            )
            return cursor.rowcount == 1

    def has_row(self, job_id: str, index: int) -> bool:
        """Whether a question has its row."""
        found = (
            self._conn()
            .execute("select 1 from rows where job = ? and idx = ?", (job_id, index))
            .fetchone()
        )
        return found is not None

    def rows(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Every row of a job, by input index."""
        found = self._conn().execute(
            "select idx, data from rows where job = ? order by idx", (job_id,)
        )
        return {idx: json.loads(data) for idx, data in found}

    def row_count(self, job_id: str) -> int:
        """How many rows a job has."""
        found = self._conn().execute("select count(*) from rows where job = ?", (job_id,))
        return int(found.fetchone()[0])

    def claim(self, job_id: str, index: int, owner: str, ttl_s: float, limit: int) -> Claim:
        """Claim a question for ``owner`` for ``ttl_s``, if fewer than ``limit`` are claimed."""
        now = time.time()
        with self._tx() as conn:
            conn.execute("delete from claims where job = ? and expires < ?", (job_id, now))
            held = conn.execute(
                "select owner from claims where job = ? and idx = ?", (job_id, index)
            ).fetchone()
            if held is not None and held[0] != owner:
                return Claim.TAKEN
            if held is None:
                count = conn.execute("select count(*) from claims where job = ?", (job_id,))
                if count.fetchone()[0] >= limit:
                    return Claim.BUSY
            conn.execute(
                "insert or replace into claims (job, idx, owner, expires) values (?, ?, ?, ?)",
                (job_id, index, owner, now + ttl_s),
            )
            return Claim.OK

    def release(self, job_id: str, index: int, owner: str) -> None:
        """Drop ``owner``'s claim on a question."""
        with self._tx() as conn:
            conn.execute(
                "delete from claims where job = ? and idx = ? and owner = ?",
                (job_id, index, owner),
            )

    def live_claims(self, job_id: str) -> int:
        """How many of a job's questions are claimed now (expired claims not counted)."""
        found = self._conn().execute(
            "select count(*) from claims where job = ? and expires >= ?", (job_id, time.time())
        )
        return int(found.fetchone()[0])

    def refresh(self, owner: str, claims: list[tuple[str, int]], ttl_s: float) -> None:
        """Extend ``owner``'s claims (its worker is alive)."""
        if not claims:
            return
        expires = time.time() + ttl_s
        with self._tx() as conn:
            conn.executemany(
                "update claims set expires = ? where job = ? and idx = ? and owner = ?",
                [(expires, job, idx, owner) for job, idx in claims],
            )

    def unfinished(self) -> list[str]:
        """Ids of jobs neither finished nor cancelled."""
        return [r.id for r in self.records() if r.finished_at is None and not r.cancelled]

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for _, conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
