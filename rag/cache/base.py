"""The backend interface of the response cache, and the keys it stores answers under.

A backend keeps entries by scope (``CacheScope.id``) and question key (``question_key``):
the answer as JSON, the question's embedding (float32 bytes) for semantic look-ups, the
numbers the question names (``question_numbers``) and when the entry expires. Two
backends implement it: ``SqliteAnswerCache`` (a file under the data folder) and
``RedisAnswerCache`` (the queue's Redis server); both pass ``tests/cache_contract.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_EDGE = " \t\n?!.;:,"


@dataclass(frozen=True)
class Candidate:
    """An entry of a scope, as a semantic look-up compares it with a question."""

    key: str
    vector: bytes  # float32, normalised
    numbers: str  # ``question_numbers`` of its question


@dataclass(frozen=True)
class Entry:
    """What is stored for one question of a scope."""

    vector: bytes  # the question's embedding, float32, normalised
    numbers: str  # ``question_numbers`` of the question
    answer: str  # ``rag.cache.codec.dump_answer``
    expires_at: float  # seconds since the epoch


class AnswerCache(Protocol):
    """Where cached answers live. ``now`` is seconds since the epoch (the caller's clock).

    Methods raise ``rag.errors.CacheError`` when the database fails.
    """

    def get(self, scope: str, key: str, now: float) -> str | None:
        """The answer stored for this scope and question key, unless expired."""
        ...

    def recent(self, scope: str, limit: int, now: float) -> list[Candidate]:
        """The newest ``limit`` unexpired entries of a scope, newest first."""
        ...

    def put(self, scope: str, key: str, entry: Entry, now: float) -> None:
        """Store (or replace) the answer for this scope and question key."""
        ...

    def clear(self) -> int:
        """Remove every entry; how many there were."""
        ...

    def close(self) -> None:
        """Let go of the database."""
        ...


def normalise_question(question: str) -> str:
    """The question as an exact look-up compares it: case, spacing, edge punctuation aside."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return _SPACE.sub(" ", text).strip(_EDGE)


def question_key(question: str) -> str:
    """The key of a question's exact look-up (a hash: the cache keeps no question text)."""
    return hashlib.sha256(normalise_question(question).encode("utf-8")).hexdigest()


def question_numbers(question: str) -> str:
    """The numbers a question names, sorted ("2022", "1.2", "4.3"), joined by spaces.

    A semantic hit needs the same numbers: "the revenue in 2022" and "in 2023" embed
    almost alike (cosine 0.94 with the bundled model) but want different answers.
    """
    return " ".join(sorted(_NUMBER.findall(normalise_question(question))))


@dataclass(frozen=True)
class CacheScope:
    """What an answer depends on besides its question; answers of another scope never match.

    ``collections``: the caller's collections (None: all, for an admin or the local user);
    ``index``: the published index state (generation and when it was published), so any
    ingestion or deletion moves every question to a new, empty scope; ``prompt_version``
    and ``model``: what would write the answer; ``settings``: the retrieval mode and k and
    the other settings that shape an answer.
    """

    collections: frozenset[str] | None
    index: str
    prompt_version: str
    model: str
    settings: str

    @property
    def id(self) -> str:
        """A short stable name of the scope (a hash of its parts)."""
        parts = {
            "collections": None if self.collections is None else sorted(self.collections),
            "index": self.index,
            "prompt_version": self.prompt_version,
            "model": self.model,
            "settings": self.settings,
        }
        raw = json.dumps(parts, sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(raw.encode("ascii")).hexdigest()[:32]
