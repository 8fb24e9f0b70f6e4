"""The review queue in SQLite (WAL): one item per answer, its reasons, its review.

Every read takes ``within``, the collections the reader may read (None: all): an item is
visible only when every collection its question searched is among them, so a reviewer never
sees a question that could have drawn on documents hidden from them. The filter is part of
each query, not of the pages.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from rag.errors import NotFoundError, ReviewError
from rag.sqlite import open_db
from rag.text import same_question

# Why an answer is in the queue.
RATED_DOWN = "rated_down"  # its reader gave it a thumbs down
WEAK_CITATIONS = "weak_citations"  # a citation the passage barely supports, or none at all
ABSTAINED = "abstained"  # the documents seemed not to cover the question
SOURCES_CHANGED = "sources_changed"  # a reviewed answer's cited document changed or went
REASONS = (RATED_DOWN, WEAK_CITATIONS, ABSTAINED, SOURCES_CHANGED)

OPEN, RIGHT, WRONG = "open", "right", "wrong"
STATUSES = (OPEN, RIGHT, WRONG)
ALL = "*"  # the scope of a question that searched every collection (an admin's)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reasons TEXT NOT NULL,
    question TEXT NOT NULL,
    standalone TEXT NOT NULL,
    question_key TEXT NOT NULL,
    answer TEXT NOT NULL,
    citations TEXT NOT NULL DEFAULT '[]',
    scope TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    prompt_version TEXT NOT NULL DEFAULT '',
    asked_by TEXT NOT NULL,
    asked_by_name TEXT NOT NULL,
    asked_at TEXT NOT NULL,
    conversation_id TEXT,
    message_id INTEGER,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'right', 'wrong')),
    correction TEXT,
    sources TEXT NOT NULL DEFAULT '[]',
    served INTEGER NOT NULL DEFAULT 0,
    reviewer TEXT,
    reviewer_name TEXT,
    reviewed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS items_message ON items(message_id)
    WHERE message_id IS NOT NULL;
-- Every first question looks up its reviewed answer and whether its answer is disputed by
-- this index (a partial one on served = 1 left the second reading every open item).
DROP INDEX IF EXISTS items_served;
CREATE INDEX IF NOT EXISTS items_question ON items(question_key, scope, served);
CREATE INDEX IF NOT EXISTS items_status ON items(status, id);
CREATE TABLE IF NOT EXISTS item_collections (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    PRIMARY KEY (item_id, collection)
);
"""
_COLUMNS = (
    "id, reasons, question, standalone, answer, citations, scope, model, prompt_version, "
    "asked_by, asked_by_name, asked_at, conversation_id, message_id, status, correction, "
    "sources, served, reviewer, reviewer_name, reviewed_at, created_at, updated_at"
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def question_key(question: str) -> str:
    """A question as the queue matches it: case, spacing and end punctuation do not count.

    "What is  max_connections?" and "what is max_connections" are the same question.
    """
    return same_question(question)


def scope_key(collections: frozenset[str] | None) -> str:
    """The collections a question searched as one comparable value (``*``: all)."""
    return ALL if collections is None else json.dumps(sorted(collections))


@dataclass(frozen=True)
class ReviewSource:
    """A passage a reviewed answer cites: the chunk, and the document it belongs to.

    ``document_id`` is the document's content hash when the review was saved: a changed or
    deleted file no longer has it, and the reviewed answer is then no longer served.
    """

    chunk_id: str
    document_id: str
    source: str
    title: str | None
    page: int | None
    text: str

    @property
    def name(self) -> str:
        """The name users know the document by (an upload's original name)."""
        return self.title or Path(self.source).name or self.source

    def to_json(self) -> dict[str, Any]:
        """As stored and as the CLI prints it."""
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "source": self.source,
            "title": self.title,
            "page": self.page,
            "text": self.text,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReviewSource:
        """Read back ``to_json``."""
        return cls(
            chunk_id=str(data["chunk_id"]),
            document_id=str(data["document_id"]),
            source=str(data["source"]),
            title=data.get("title"),
            page=data.get("page"),
            text=str(data.get("text", "")),
        )


@dataclass(frozen=True)
class Draft:
    """An answer to queue: what was asked, by whom, what was answered and cited.

    ``collections`` are those the question searched (None: all); ``citations`` are in the
    shape of ``Citation.to_json``.
    """

    reasons: tuple[str, ...]
    question: str
    standalone: str
    answer: str
    citations: list[dict[str, Any]]
    collections: frozenset[str] | None
    model: str
    prompt_version: str
    asked_by: str
    asked_by_name: str
    asked_at: str
    conversation_id: str | None = None
    message_id: int | None = None


@dataclass(frozen=True)
class ReviewItem:
    """A queued answer and its review.

    ``status`` is open, right or wrong. ``sources`` are what the reviewed answer cites: the
    answer's own citations when it was right, the correction's sources when it was wrong.
    ``served`` says whether it answers the same question from now on (a right answer with
    sources, or a correction with sources).
    """

    id: int
    reasons: tuple[str, ...]
    question: str
    standalone: str
    answer: str
    citations: tuple[dict[str, Any], ...]
    collections: frozenset[str] | None
    model: str
    prompt_version: str
    asked_by: str
    asked_by_name: str
    asked_at: str
    conversation_id: str | None
    message_id: int | None
    status: str
    correction: str | None
    sources: tuple[ReviewSource, ...]
    served: bool
    reviewer: str | None
    reviewer_name: str | None
    reviewed_at: str | None
    created_at: str
    updated_at: str

    @property
    def reference(self) -> str | None:
        """The answer that is served and exported: the correction, or the answer found right."""
        if self.status == RIGHT:
            return self.answer
        if self.status == WRONG:
            return self.correction
        return None

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat review list --json`` prints."""
        return {
            "id": self.id,
            "reasons": list(self.reasons),
            "question": self.question,
            "standalone_question": self.standalone,
            "answer": self.answer,
            "citations": list(self.citations),
            "collections": None if self.collections is None else sorted(self.collections),
            "model": self.model,
            "prompt_version": self.prompt_version,
            "asked_by": self.asked_by_name,
            "asked_at": self.asked_at,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "status": self.status,
            "correction": self.correction,
            "sources": [s.to_json() for s in self.sources],
            "served": self.served,
            "reviewer": self.reviewer_name,
            "reviewed_at": self.reviewed_at,
        }


def _item(row: tuple[Any, ...]) -> ReviewItem:
    (id_, reasons, question, standalone, answer, citations, scope, model, prompt_version,
     asked_by, asked_by_name, asked_at, conversation_id, message_id, status, correction,
     sources, served, reviewer, reviewer_name, reviewed_at, created_at,
     updated_at) = row  # fmt: skip
    return ReviewItem(
        id=int(id_),
        reasons=tuple(json.loads(reasons)),
        question=question,
        standalone=standalone,
        answer=answer,
        citations=tuple(json.loads(citations)),
        collections=None if scope == ALL else frozenset(json.loads(scope)),
        model=model,
        prompt_version=prompt_version,
        asked_by=asked_by,
        asked_by_name=asked_by_name,
        asked_at=asked_at,
        conversation_id=conversation_id,
        message_id=message_id,
        status=status,
        correction=correction,
        sources=tuple(ReviewSource.from_json(s) for s in json.loads(sources)),
        served=bool(served),
        reviewer=reviewer,
        reviewer_name=reviewer_name,
        reviewed_at=reviewed_at,
        created_at=created_at,
        updated_at=updated_at,
    )


def _merged(reasons: Iterable[str], more: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*reasons, *more]))


def _visible(within: frozenset[str] | None) -> tuple[str, list[str]]:
    """A WHERE condition admitting the items a reader of ``within`` may see, with its args."""
    if within is None:
        return "1", []
    if not within:
        return "i.scope = '[]'", []
    marks = ",".join("?" * len(within))
    return (
        f"i.scope != '{ALL}' AND NOT EXISTS (SELECT 1 FROM item_collections c "
        f"WHERE c.item_id = i.id AND c.collection NOT IN ({marks}))",
        sorted(within),
    )


class Standing(NamedTuple):
    """What the queue says of a question: its reviewed answer, and whether it is disputed."""

    served: ReviewItem | None
    disputed: bool


class ReviewStore:
    """The review queue in one SQLite file, safe to share between threads and processes.

    Its database's failures are raised as ``ReviewError``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = open_db(self.path, _SCHEMA, foreign_keys=True)
        except (OSError, sqlite3.Error) as exc:
            raise ReviewError(str(exc)) from exc

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as ``ReviewError``."""
        try:
            yield
        except sqlite3.Error as exc:
            raise ReviewError(str(exc)) from exc

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def add(self, draft: Draft) -> ReviewItem:
        """Queue an answer; an answer already queued (same message) gains the new reasons.

        Raises:
            ValueError: a reason that is not one of ``REASONS``, or none.
        """
        if not draft.reasons or any(r not in REASONS for r in draft.reasons):
            raise ValueError(f"reasons must be some of {REASONS}")
        now = _now()
        with self._errors(), self._lock, self._db:
            if draft.message_id is not None:
                row = self._db.execute(
                    "SELECT id, reasons FROM items WHERE message_id = ?", (draft.message_id,)
                ).fetchone()
                if row is not None:
                    reasons = _merged(json.loads(row[1]), draft.reasons)
                    self._db.execute(
                        "UPDATE items SET reasons = ?, updated_at = ? WHERE id = ?",
                        (json.dumps(reasons), now, row[0]),
                    )
                    return self._get(int(row[0]))
            cur = self._db.execute(
                "INSERT INTO items (reasons, question, standalone, question_key, answer, "
                "citations, scope, model, prompt_version, asked_by, asked_by_name, asked_at, "
                "conversation_id, message_id, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    json.dumps(_merged(draft.reasons, ())), draft.question, draft.standalone,
                    question_key(draft.standalone or draft.question), draft.answer,
                    json.dumps(draft.citations), scope_key(draft.collections), draft.model,
                    draft.prompt_version, draft.asked_by, draft.asked_by_name, draft.asked_at,
                    draft.conversation_id, draft.message_id, now, now,
                ),
            )  # fmt: skip
            item_id = int(cur.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO item_collections (item_id, collection) VALUES (?, ?)",
                [(item_id, c) for c in sorted(draft.collections or ())],
            )
            return self._get(item_id)

    def _get(self, item_id: int) -> ReviewItem:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item(row)

    def get(self, item_id: int, *, within: frozenset[str] | None) -> ReviewItem:
        """One item a reader of ``within`` may see.

        Raises:
            NotFoundError: no such item, or one the reader may not see (they answer alike).
        """
        condition, args = _visible(within)
        with self._errors(), self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM items i WHERE id = ? AND {condition}", [item_id, *args]
            ).fetchone()
        if row is None:
            raise NotFoundError("review item", str(item_id))
        return _item(row)

    def items(
        self, *, within: frozenset[str] | None, status: str | None = OPEN, limit: int = 200
    ) -> list[ReviewItem]:
        """Items a reader of ``within`` may see (``status`` None: any), oldest open first.

        Reviewed items come newest review first.
        """
        condition, args = _visible(within)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {STATUSES}")
            condition += " AND i.status = ?"
            args.append(status)
        order = "i.id" if status == OPEN else "i.reviewed_at IS NULL, i.reviewed_at DESC, i.id"
        with self._errors(), self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM items i WHERE {condition} ORDER BY {order} LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [_item(r) for r in rows]

    def by_message(self, message_id: int) -> ReviewItem | None:
        """The item of a stored answer, if it is queued."""
        with self._errors(), self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM items WHERE message_id = ?", (message_id,)
            ).fetchone()
        return None if row is None else _item(row)

    def review(
        self,
        item_id: int,
        status: str,
        *,
        reviewer: str,
        reviewer_name: str,
        correction: str | None = None,
        sources: Sequence[ReviewSource] = (),
    ) -> ReviewItem:
        """Record a review: right or wrong, with the correction and the cited sources.

        The item is served from now on when it has sources and a reference answer (see
        ``ReviewItem.served``).

        Raises:
            ValueError: ``status`` is not right or wrong.
        """
        if status not in (RIGHT, WRONG):
            raise ValueError("a review marks an answer right or wrong")
        served = bool(sources) and (status == RIGHT or bool(correction))
        now = _now()
        with self._errors(), self._lock, self._db:
            self._db.execute(
                "UPDATE items SET status = ?, correction = ?, sources = ?, served = ?, "
                "reviewer = ?, reviewer_name = ?, reviewed_at = ?, updated_at = ? WHERE id = ?",
                (
                    status, correction, json.dumps([s.to_json() for s in sources]), int(served),
                    reviewer, reviewer_name, now, now, item_id,
                ),
            )  # fmt: skip
            return self._get(item_id)

    def reopen(self, item_id: int, reason: str) -> None:
        """Put a reviewed item back in the queue (no longer served), adding ``reason``.

        The earlier review (its correction and sources) stays for the next reviewer to see.
        """
        with self._errors(), self._lock, self._db:
            row = self._db.execute("SELECT reasons FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return
            reasons = _merged(json.loads(row[0]), [reason])
            self._db.execute(
                "UPDATE items SET status = 'open', served = 0, reasons = ?, updated_at = ? "
                "WHERE id = ?",
                (json.dumps(reasons), _now(), item_id),
            )

    def standing(self, question: str, collections: frozenset[str] | None) -> Standing:
        """What the queue says of this question asked over these same collections.

        ``served``: the newest reviewed answer to it. ``disputed``: an answer to it was
        rated down and awaits review, or was found wrong and not corrected (the response
        cache must not hand it out again).
        """
        key = (question_key(question), scope_key(collections))
        with self._errors(), self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM items WHERE question_key = ? AND scope = ? "
                "AND served = 1 ORDER BY reviewed_at DESC, id DESC LIMIT 1",
                key,
            ).fetchone()
            disputed = self._db.execute(
                "SELECT 1 FROM items WHERE question_key = ? AND scope = ? AND served = 0 "
                "AND (status = 'wrong' OR (status = 'open' AND reasons LIKE ?)) LIMIT 1",
                (*key, f'%"{RATED_DOWN}"%'),
            ).fetchone()
        return Standing(None if row is None else _item(row), disputed is not None)

    def served_items(self, *, within: frozenset[str] | None) -> list[ReviewItem]:
        """Every served item a reader of ``within`` may see, oldest first (for export)."""
        condition, args = _visible(within)
        with self._errors(), self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM items i WHERE i.served = 1 AND {condition} ORDER BY i.id",
                args,
            ).fetchall()
        return [_item(r) for r in rows]

    def counts(self, *, within: frozenset[str] | None) -> dict[str, int]:
        """Items per status that a reader of ``within`` may see."""
        condition, args = _visible(within)
        with self._errors(), self._lock:
            rows = self._db.execute(
                f"SELECT status, count(*) FROM items i WHERE {condition} GROUP BY status", args
            ).fetchall()
        return {status: 0 for status in STATUSES} | {s: int(n) for s, n in rows}
