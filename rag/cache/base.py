"""The backend interface of the response cache, and the keys it stores answers under.

A backend keeps entries by scope (``CacheScope.id``) and question key (``question_key``):
the answer as JSON, the question's embedding (float32 bytes) for semantic look-ups, the
words a semantic hit must share (``marks_key``) and when the entry expires. Two
backends implement it: ``SqliteAnswerCache`` (a file under the data folder) and
``RedisAnswerCache`` (the queue's Redis server); both pass ``tests/cache_contract.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Protocol

from rag.text import same_question

_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_WORD = re.compile(r"[\w']+")  # max_connections is one word, not "max"
_NEGATIONS = frozenset(
    "not no never without cannot none nor neither dont doesnt didnt isnt arent wasnt "
    "werent cant wont shouldnt wouldnt couldnt hasnt havent".split()
)
# Words naming one end of a scale, and the mark each gives ("min" and "minimum" alike).
_CONTRASTS = {
    "min": "min", "minimum": "min", "minimal": "min", "max": "max", "maximum": "max",
    "maximal": "max", "first": "first", "last": "last", "before": "before", "after": "after",
    "highest": "high", "higher": "high", "lowest": "low", "lower": "low", "largest": "large",
    "larger": "large", "biggest": "large", "bigger": "large", "smallest": "small",
    "smaller": "small", "oldest": "old", "older": "old", "newest": "new", "newer": "new",
    "earliest": "early", "earlier": "early", "latest": "late", "later": "late",
    "more": "more", "most": "more", "less": "less", "least": "less", "fewer": "less",
    "upper": "upper", "above": "above", "below": "below",
}  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """An entry of a scope, as a semantic look-up compares it with a question."""

    key: str
    vector: bytes  # float32, normalised
    marks: str  # ``marks_key`` of its question


@dataclass(frozen=True)
class Entry:
    """What is stored for one question of a scope."""

    vector: bytes  # the question's embedding, float32, normalised
    marks: str  # ``marks_key`` of the question
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
    """The question as an exact look-up compares it (``rag.text.same_question``)."""
    return same_question(question)


def question_key(question: str) -> str:
    """The key of a question's exact look-up (a hash: the cache keeps no question text)."""
    return hashlib.sha256(normalise_question(question).encode("utf-8")).hexdigest()


def question_marks(question: str) -> str:
    """What a semantic hit must share with the question: its numbers, negations, extremes.

    Sorted and joined by spaces ("1.2 max not"). Embeddings hardly tell these apart:
    with the bundled model "the revenue in 2022" and "in 2023" score 0.94, "the minimum
    password length" and "the maximum" 0.95, "should I enable compression" and "should I
    not" 0.985 (``bench/cache_similarity.py``), yet they want different answers.
    """
    text = normalise_question(question)
    words = _WORD.findall(text)
    marks = set(_NUMBER.findall(text))
    marks |= {"not" for w in words if w in _NEGATIONS or w.endswith("n't")}
    marks |= {_CONTRASTS[w] for w in words if w in _CONTRASTS}
    return " ".join(sorted(marks))


def marks_key(question: str) -> str:
    """``question_marks`` as stored: hashed, so no number a question names is kept."""
    return hashlib.sha256(question_marks(question).encode("utf-8")).hexdigest()[:32]


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
