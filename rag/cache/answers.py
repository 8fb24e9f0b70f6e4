"""``ResponseCache``: finds a stored answer for a question, and stores finished answers.

A look-up tries the exact question first (case, spacing and edge punctuation aside; no
embedding needed), then the most similar question of the same scope: cosine similarity of
the question embeddings at least ``similarity`` and the same ``question_marks`` (numbers,
negations, the ends of scales). Only answers
of the same ``CacheScope`` are ever compared, so an answer is served only to callers who
read the same collections, of the same index state, through the same prompt and model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.embeddings import Embeddings

from rag.cache.base import (
    AnswerCache,
    CacheScope,
    Entry,
    marks_key,
    question_key,
)
from rag.cache.codec import dump_answer, load_answer
from rag.errors import IndexNotFoundError

if TYPE_CHECKING:
    from rag.chain import Answer
    from rag.settings import Settings
    from rag.store.base import Store

logger = logging.getLogger(__name__)

EXACT = "exact"
SEMANTIC = "semantic"

# The settings besides the prompt and the model that change what an answer says.
ANSWER_SETTINGS = (
    "min_relevance", "relevance_gap", "fusion", "fusion_depth", "rrf_k", "vector_weight",
    "keyword_weight", "max_chunks_per_page", "mmr_lambda", "reranker_path", "quarantine",
    "llm_context_window", "llm_max_answer_tokens", "llm_temperature", "pii", "link_allowlist",
    "route_simple_max_words", "route_simple_pattern",  # which tier's model answers
)  # fmt: skip


@dataclass(frozen=True)
class Hit:
    """A stored answer found for a question; ``kind`` is "exact" or "semantic"."""

    answer: Answer
    kind: str
    similarity: float


@dataclass
class Lookup:
    """One question's look-up: its scope and key, what it found, its embedding if made."""

    question: str
    scope: CacheScope
    key: str
    hit: Hit | None = None
    vector: np.ndarray | None = None


class ResponseCache:
    """Exact and semantic look-ups over a backend, with the question embeddings of ``embeddings``.

    ``similarity``: the least cosine similarity of a semantic hit (1.0 or more: exact hits
    only); ``scan``: the most recent entries of a scope compared with a question;
    ``ttl_s``: how long an answer is kept; ``clock``: seconds since the epoch.
    """

    def __init__(
        self,
        backend: AnswerCache,
        embeddings: Embeddings,
        *,
        similarity: float = 0.95,
        ttl_s: float = 7 * 86400,
        scan: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if scan < 1:
            raise ValueError("scan must be at least 1")
        self.backend = backend
        self.embeddings = embeddings
        self.similarity = similarity
        self.ttl_s = ttl_s
        self.scan = scan
        self.clock = clock

    def lookup(self, question: str, scope: CacheScope, *, search: bool = True) -> Lookup:
        """Find an answer for ``question`` in ``scope`` (``search`` False: only prepare to keep).

        Raises:
            RagError: the backend failed (``CacheError``) or the embedding model did.
        """
        found = Lookup(question.strip(), scope, question_key(question))
        if not search:
            return found
        now = self.clock()
        raw = self.backend.get(scope.id, found.key, now)
        if raw is not None:
            found.hit = self._hit(raw, found.question, EXACT, 1.0)
            if found.hit is not None:
                return found
        if self.similarity >= 1.0:
            return found
        candidates = self.backend.recent(scope.id, self.scan, now)
        if not candidates:  # nothing to compare with: embed only if the answer is kept
            return found
        found.vector = self._embed(found.question)
        marks = marks_key(found.question)
        rows = [c for c in candidates if c.marks == marks and len(c.vector) == found.vector.nbytes]
        if not rows:
            return found
        matrix = np.frombuffer(b"".join(c.vector for c in rows), dtype=np.float32)
        scores = matrix.reshape(len(rows), -1) @ found.vector
        for i in np.argsort(-scores):
            score = float(scores[i])
            if score < self.similarity:
                break
            raw = self.backend.get(scope.id, rows[i].key, now)
            if raw is not None:
                found.hit = self._hit(raw, found.question, SEMANTIC, score)
                if found.hit is not None:
                    return found
        return found

    def keep(self, lookup: Lookup, answer: Answer) -> bool:
        """Store ``answer`` for the looked-up question, if it is one to serve again.

        Kept: complete answers the model wrote (not abstained, not cut, not served from a
        cache or a review). Returns whether it was stored.

        Raises:
            RagError: the backend failed (``CacheError``) or the embedding model did.
        """
        if not cacheable(answer):
            return False
        vector = lookup.vector if lookup.vector is not None else self._embed(lookup.question)
        now = self.clock()
        entry = Entry(
            vector=vector.tobytes(),
            marks=marks_key(lookup.question),
            answer=dump_answer(answer),
            expires_at=now + self.ttl_s,
        )
        self.backend.put(lookup.scope.id, lookup.key, entry, now)
        return True

    def clear(self) -> int:
        """Remove every stored answer; how many there were."""
        return self.backend.clear()

    def close(self) -> None:
        """Let go of the backend."""
        self.backend.close()

    def _embed(self, question: str) -> np.ndarray:
        vector = np.asarray(self.embeddings.embed_query(question), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def _hit(self, raw: str, question: str, kind: str, similarity: float) -> Hit | None:
        try:
            return Hit(load_answer(raw, question), kind, similarity)
        except ValueError as exc:  # written by another version, or damaged: a miss
            logger.warning("ignoring an unreadable cached answer: %s", exc)
            return None


def cacheable(answer: Answer) -> bool:
    """Whether an answer may be served again: complete, from the model, with text."""
    return (
        answer.served_from is None
        and not answer.abstained
        and not answer.cut
        and bool(answer.text.strip())
    )


def index_version(store: Store) -> str | None:
    """The published state of the index, named uniquely; None before the first ingestion.

    Where the index is (its folder, or the Postgres label), its generation and when that
    was published: two indexes, or one built again from nothing, never share a name.

    Raises:
        RagError: the index cannot be read.
    """
    folder = getattr(store, "index_dir", None)  # FaissStore; a PostgresStore has a label
    where = str(Path(folder).resolve()) if folder is not None else getattr(store, "label", "")
    try:
        with store.reader() as view:
            return f"{where}|{view.generation}@{view.published_at}"
    except IndexNotFoundError:
        return None


def model_identity(endpoints: Sequence[Any], fallback: str = "") -> str:
    """The model(s) an answer would come from: each endpoint's model and where it runs.

    The bundled model is named by its label, not its URL (its port changes at each start).
    ``fallback`` names it when there are no endpoints (an engine over a fake model).
    """
    named = [f"{e.model}@{e.label}" for e in endpoints]
    return ",".join(named) if named else fallback


def answer_settings(settings: Settings, mode: str | None, k: int | None) -> str:
    """The retrieval mode and k of a question, and the settings that shape its answer."""
    values = {name: str(getattr(settings, name)) for name in ANSWER_SETTINGS}
    values["mode"] = mode or settings.retrieval_mode
    values["k"] = str(k or settings.retrieval_k)
    return repr(sorted(values.items()))
