"""Conversations and their messages, with citations, persisted in SQLite."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.context import Turn
from rag.errors import RagError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    feedback INTEGER
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, id);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ConversationNotFoundError(RagError):
    """No conversation has this id."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"no conversation {conversation_id!r}")


@dataclass(frozen=True)
class Conversation:
    """A conversation's header."""

    id: str
    title: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Message:
    """A stored message; assistant messages carry citations, model, prompt and timings."""

    id: int
    role: str
    content: str
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)
    feedback: int | None = None


class ConversationStore:
    """Conversations in one SQLite file, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def create(self, title: str = "New chat") -> Conversation:
        """Start a conversation."""
        now = _now()
        conv = Conversation(uuid.uuid4().hex, title.strip() or "New chat", now, now)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO conversations VALUES (?, ?, ?, ?)",
                (conv.id, conv.title, conv.created_at, conv.updated_at),
            )
        return conv

    def get(self, conversation_id: str) -> Conversation:
        """A conversation's header.

        Raises:
            ConversationNotFoundError: no such conversation.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT id, title, created_at, updated_at FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
        if row is None:
            raise ConversationNotFoundError(conversation_id)
        return Conversation(*row)

    def conversations(self) -> list[Conversation]:
        """All conversations, most recently active first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, title, created_at, updated_at FROM conversations "
                "ORDER BY updated_at DESC, rowid DESC"
            ).fetchall()
        return [Conversation(*r) for r in rows]

    def rename(self, conversation_id: str, title: str) -> None:
        """Give a conversation a new title."""
        self.get(conversation_id)
        with self._lock, self._db:
            self._db.execute(
                "UPDATE conversations SET title = ? WHERE id = ?",
                (title.strip() or "Untitled", conversation_id),
            )

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation and its messages."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def add(
        self, conversation_id: str, role: str, content: str, meta: dict[str, Any] | None = None
    ) -> Message:
        """Append a message to a conversation."""
        self.get(conversation_id)
        now = _now()
        meta = meta or {}
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, meta) "
                "VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, now, json.dumps(meta)),
            )
            self._db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id)
            )
        return Message(int(cur.lastrowid or 0), role, content, now, meta)

    def messages(self, conversation_id: str) -> list[Message]:
        """A conversation's messages, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, role, content, created_at, meta, feedback FROM messages "
                "WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [Message(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def history(self, conversation_id: str) -> list[Turn]:
        """The conversation as turns for the chain."""
        return [Turn(m.role, m.content) for m in self.messages(conversation_id)]

    def set_feedback(self, message_id: int, score: int | None) -> None:
        """Store a thumbs up (1) or down (0) on an answer; None clears it."""
        if score not in (None, 0, 1):
            raise ValueError("feedback must be 0, 1 or None")
        with self._lock, self._db:
            self._db.execute("UPDATE messages SET feedback = ? WHERE id = ?", (score, message_id))
