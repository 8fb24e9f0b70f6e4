"""Conversations and their messages, with citations and outcomes, persisted in SQLite.

A question is stored the moment it is asked; its answer is stored once the outcome is
known (answered, cut, stopped or failed) and replaces any earlier answer to the same
question (retry, regenerate). A conversation's title is its first question unless the
user named it, and a conversation without questions is not listed.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.context import Turn
from rag.errors import RagError
from rag.sqlite import open_db

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
# Columns added after the first release; older databases get them on open.
_ADDED_COLUMNS = {
    # A conversation belongs to the user who started it (conversations from before users
    # belong to the local user of RAG_AUTH=none).
    "conversations": [
        ("named", "INTEGER NOT NULL DEFAULT 0"),
        ("owner", "TEXT NOT NULL DEFAULT 'local'"),
    ],
    "messages": [
        ("outcome", "TEXT NOT NULL DEFAULT 'answered'"),
        ("error", "TEXT"),
        ("reply_to", "INTEGER"),
    ],
}
ANSWERED, CUT, STOPPED, FAILED = "answered", "cut", "stopped", "failed"
# A guardrail refused the question or its answer (content moderation, RAG_PII=block).
REFUSED = "refused"
OUTCOMES = (ANSWERED, CUT, STOPPED, FAILED, REFUSED)
TITLE_CHARS = 60
_COLUMNS = "id, role, content, created_at, meta, feedback, outcome, error, reply_to"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def title_of(question: str) -> str:
    """A question as a conversation title: one line, at most ``TITLE_CHARS`` characters."""
    text = re.sub(r"\s+", " ", question).strip()
    if len(text) <= TITLE_CHARS:
        return text or "New chat"
    return text[: TITLE_CHARS - 1].rstrip() + "…"


class ConversationNotFoundError(RagError):
    """No conversation has this id."""

    category = "input"

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"no conversation {conversation_id!r}")


class MessageNotFoundError(RagError):
    """No question has this id in the conversation."""

    category = "input"

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        super().__init__(f"no question {message_id} in this conversation")


@dataclass(frozen=True)
class Conversation:
    """A conversation's header: ``created_at`` and ``updated_at`` (last activity) are UTC ISO."""

    id: str
    title: str
    created_at: str
    updated_at: str
    questions: int = 0


@dataclass(frozen=True)
class Message:
    """A stored message; assistant messages carry citations, model, prompt and timings.

    An answer's ``outcome`` is answered, cut (the endpoint failed midway), stopped (by the
    user) or failed (``error`` says why, ``content`` is empty); ``reply_to`` is the id of
    the question it answers (None in databases written before it was recorded).
    """

    id: int
    role: str
    content: str
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)
    feedback: int | None = None
    outcome: str = ANSWERED
    error: str | None = None
    reply_to: int | None = None


@dataclass(frozen=True)
class Exchange:
    """A question and its answer, None while it has none (being answered, or lost)."""

    question: Message
    answer: Message | None


def _message(row: tuple[Any, ...]) -> Message:
    return Message(row[0], row[1], row[2], row[3], json.loads(row[4]), *row[5:])


class ConversationStore:
    """Conversations in one SQLite file, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_db(self.path, _SCHEMA, foreign_keys=True)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns older databases lack; old answers read as answered."""
        with self._lock, self._db:
            for table, columns in _ADDED_COLUMNS.items():
                have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                for name, spec in columns:
                    if name in have:
                        continue
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {spec}")
                    if (table, name) == ("conversations", "named"):
                        self._mark_named()

    def _mark_named(self) -> None:
        """Titles the user chose (they differ from the first question) stay as named."""
        rows = self._db.execute(
            "SELECT c.id, c.title, (SELECT content FROM messages m WHERE m.conversation_id = c.id "
            "AND m.role = 'user' ORDER BY m.id LIMIT 1) FROM conversations c"
        ).fetchall()
        for conv_id, title, first in rows:
            derived = {title_of(first or ""), (first or "").strip()[:TITLE_CHARS]}
            if title not in derived and title != "New chat":
                self._db.execute("UPDATE conversations SET named = 1 WHERE id = ?", (conv_id,))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def create(self, title: str = "", *, owner: str) -> Conversation:
        """Start a conversation of ``owner`` (a user id).

        Without ``title`` it is named after its first question.
        """
        now = _now()
        named = bool(title.strip())
        conv = Conversation(uuid.uuid4().hex, title.strip() or "New chat", now, now)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at, named, owner) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (conv.id, conv.title, conv.created_at, conv.updated_at, int(named), owner),
            )
        return conv

    _HEADER = (
        "SELECT c.id, c.title, c.named, c.created_at, c.updated_at, "
        "(SELECT content FROM messages m WHERE m.conversation_id = c.id AND m.role = 'user' "
        "ORDER BY m.id LIMIT 1), "
        "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.role = 'user') "
        "FROM conversations c"
    )

    @staticmethod
    def _header(row: tuple[Any, ...]) -> Conversation:
        conv_id, title, named, created, updated, first, questions = row
        if not named and first:
            title = title_of(first)
        return Conversation(conv_id, title, created, updated, questions)

    def get(self, conversation_id: str, *, owner: str | None = None) -> Conversation:
        """A conversation's header (``owner``: only if it is that user's).

        Raises:
            ConversationNotFoundError: no such conversation, or another user's.
        """
        query, args = f"{self._HEADER} WHERE c.id = ?", [conversation_id]
        if owner is not None:
            query += " AND c.owner = ?"
            args.append(owner)
        with self._lock:
            row = self._db.execute(query, args).fetchone()
        if row is None:
            raise ConversationNotFoundError(conversation_id)
        return self._header(row)

    def conversations(self, *, owner: str) -> list[Conversation]:
        """``owner``'s conversations with at least one question, most recently active first."""
        with self._lock:
            rows = self._db.execute(
                f"{self._HEADER} WHERE c.owner = ? AND EXISTS (SELECT 1 FROM messages m "
                "WHERE m.conversation_id = c.id AND m.role = 'user') "
                "ORDER BY c.updated_at DESC, c.rowid DESC",
                (owner,),
            ).fetchall()
        return [self._header(r) for r in rows]

    def rename(self, conversation_id: str, title: str) -> None:
        """Give a conversation a title of the user's choosing (kept from then on)."""
        self.get(conversation_id)
        with self._lock, self._db:
            self._db.execute(
                "UPDATE conversations SET title = ?, named = 1 WHERE id = ?",
                (title.strip() or "Untitled", conversation_id),
            )

    def delete(self, conversation_id: str) -> None:
        """Delete a conversation and its messages."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def add(
        self,
        conversation_id: str,
        role: str,
        content: str,
        meta: dict[str, Any] | None = None,
        *,
        outcome: str = ANSWERED,
        error: str | None = None,
        reply_to: int | None = None,
    ) -> Message:
        """Append a message to a conversation.

        Raises:
            ConversationNotFoundError: no such conversation.
            ValueError: ``outcome`` is not one of ``OUTCOMES``.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        self.get(conversation_id)
        now = _now()
        meta = meta or {}
        with self._lock, self._db:
            if reply_to is not None:  # a new answer replaces the question's earlier one
                self._db.execute(
                    "DELETE FROM messages WHERE conversation_id = ? AND role = 'assistant' "
                    "AND reply_to = ?",
                    (conversation_id, reply_to),
                )
            cur = self._db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, meta, "
                "outcome, error, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, now, json.dumps(meta), outcome, error, reply_to),
            )
            self._db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id)
            )
        return Message(
            int(cur.lastrowid or 0), role, content, now, meta, None, outcome, error, reply_to
        )

    def ask(self, conversation_id: str, question: str) -> Message:
        """Store a question the moment it is asked (its answer comes with ``answer``)."""
        return self.add(conversation_id, "user", question)

    def answer(
        self,
        conversation_id: str,
        question_id: int,
        text: str,
        meta: dict[str, Any] | None = None,
        *,
        outcome: str = ANSWERED,
        error: str | None = None,
    ) -> Message:
        """Store the answer to a question, replacing any earlier answer to it.

        Raises:
            MessageNotFoundError: the question is not in this conversation (deleted).
        """
        self.question(conversation_id, question_id)
        return self.add(
            conversation_id, "assistant", text, meta, outcome=outcome, error=error,
            reply_to=question_id,
        )  # fmt: skip

    def question(self, conversation_id: str, question_id: int) -> Message:
        """One stored question.

        Raises:
            MessageNotFoundError: no such question in this conversation.
        """
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE id = ? AND conversation_id = ? "
                "AND role = 'user'",
                (question_id, conversation_id),
            ).fetchone()
        if row is None:
            raise MessageNotFoundError(question_id)
        return _message(row)

    def delete_question(self, conversation_id: str, question_id: int) -> None:
        """Remove a question and its answer; the title follows the first question left."""
        with self._lock, self._db:
            self._db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND (id = ? OR reply_to = ? OR "
                "(role = 'assistant' AND reply_to IS NULL AND id = (SELECT min(id) FROM messages "
                "WHERE conversation_id = ? AND id > ?)))",
                (conversation_id, question_id, question_id, conversation_id, question_id),
            )

    def messages(self, conversation_id: str) -> list[Message]:
        """A conversation's messages, each question followed by its answer."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE conversation_id = ? "
                "ORDER BY COALESCE(reply_to, id), role = 'assistant', id",
                (conversation_id,),
            ).fetchall()
        return [_message(r) for r in rows]

    def exchanges(self, conversation_id: str) -> list[Exchange]:
        """The conversation as questions paired with their answers (None when missing)."""
        out: list[Exchange] = []
        for message in self.messages(conversation_id):
            if message.role == "user":
                out.append(Exchange(message, None))
            elif out and out[-1].answer is None:
                out[-1] = Exchange(out[-1].question, message)
        return out

    def history(self, conversation_id: str, before: int | None = None) -> list[Turn]:
        """The conversation as turns for the chain: questions that got (part of) an answer.

        ``before``: only the exchanges asked before this question (to answer it again).
        Failed questions and empty answers are left out.
        """
        turns: list[Turn] = []
        for ex in self.exchanges(conversation_id):
            if before is not None and ex.question.id >= before:
                break
            if ex.answer is None or ex.answer.outcome == FAILED or not ex.answer.content:
                continue
            turns += [Turn("user", ex.question.content), Turn("assistant", ex.answer.content)]
        return turns

    def answer_of(self, message_id: int, *, owner: str) -> tuple[str, Exchange]:
        """An answer of ``owner``'s with its question, and the id of its conversation.

        Raises:
            MessageNotFoundError: no such answer in the owner's conversations.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT m.conversation_id FROM messages m JOIN conversations c "
                "ON c.id = m.conversation_id WHERE m.id = ? AND m.role = 'assistant' "
                "AND c.owner = ?",
                (message_id, owner),
            ).fetchone()
        if row is None:
            raise MessageNotFoundError(message_id)
        conversation_id = str(row[0])
        for exchange in self.exchanges(conversation_id):
            if exchange.answer is not None and exchange.answer.id == message_id:
                return conversation_id, exchange
        raise MessageNotFoundError(message_id)

    def set_feedback(self, message_id: int, score: int | None, *, owner: str) -> None:
        """Store a thumbs up (1) or down (0) on an answer of ``owner``'s; None clears it.

        Raises:
            MessageNotFoundError: no such answer in the owner's conversations.
        """
        if score not in (None, 0, 1):
            raise ValueError("feedback must be 0, 1 or None")
        with self._lock, self._db:
            changed = self._db.execute(
                "UPDATE messages SET feedback = ? WHERE id = ? AND role = 'assistant' AND "
                "conversation_id IN (SELECT id FROM conversations WHERE owner = ?)",
                (score, message_id, owner),
            ).rowcount
        if not changed:
            raise MessageNotFoundError(message_id)
