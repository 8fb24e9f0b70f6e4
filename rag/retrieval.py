"""Retrieval over the store as a langchain-core ``BaseRetriever``: vector, keyword or hybrid.

Hybrid search fuses the vector ranking and the BM25 keyword ranking, either by z-score
fusion (each method's scores standardised within its own candidates, then summed: a hit
that stands far out in one method keeps that lead) or by reciprocal rank fusion (ranks
only). Fused scores carry no notion of "relevant at all", so every candidate also gets a
calibrated relevance in [0, 1] (its cosine similarity to the question, mapped to [0, 1])
and the abstention threshold and the relevance gap apply to that, in every mode.
By default at most one chunk per location is returned while other locations have
candidates, so the sources cover more of the documents. A location is a page where the
document has pages (PDF), and a stretch of neighbouring chunks of one section where it
has none (HTML, Markdown, text, DOCX): a long page-less file is many places, not one.
A page-less file's further sections lead only when they match about as well as the file's
best section, and then with a handicap, so they do not crowd other files out of the top ``k``.
Optional steps: maximal marginal relevance for diversity, and a cross-encoder reranker.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from rag.errors import RagError

if TYPE_CHECKING:
    from rag.store.base import StoreReader


# Most extra candidates a quarantined search fetches to make up for the flagged ones.
QUARANTINE_EXTRA = 2000


class Mode(enum.StrEnum):
    """How candidates are found."""

    VECTOR = "vector"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


class Fusion(enum.StrEnum):
    """How hybrid search combines the vector and keyword rankings."""

    ZSCORE = "zscore"
    RRF = "rrf"


T = TypeVar("T")

# Characters of a page-less section that count as one location; the handicap (in standard
# deviations of the candidates' scores, per chunk already taken from the file) of a
# page-less file's further locations; and how far (in the same deviations) such a location
# may trail the file's best chunk and still lead at all. Measured on the PostgreSQL manual
# (file-level, hybrid, 50 development questions, recall@5 / nDCG@10): one chunk per file
# 0.745 / 0.696; no gap, penalty 0: 0.688 / 0.669, 0.5: 0.728 / 0.681, 0.75: 0.745 / 0.683,
# 1.5: 0.745 / 0.695 (but then a second section almost never leads); gap 0.5 with penalty
# 0.5: 0.745 / 0.690, a second section in the top 5 for 8 of the 50 questions.
LOCATION_SPAN = 4000
DOCUMENT_PENALTY = 0.5
SECTION_GAP = 0.5


class Reranker(Protocol):
    """Scores (question, passage) pairs; higher is more relevant."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One score per passage."""
        ...


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder loaded from a local folder."""

    def __init__(self, path: str) -> None:
        from sentence_transformers import CrossEncoder

        self._model = CrossEncoder(path, local_files_only=True)

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Cross-encoder scores for each passage."""
        return [float(s) for s in self._model.predict([(query, p) for p in passages])]


def rrf_fuse(
    rankings: Sequence[Sequence[int]], weights: Sequence[float], k: int = 60
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: ``sum(w / (k + rank))`` over the rankings, best first.

    Ties keep the order in which candidates were first seen (earlier rankings first).
    """
    if len(rankings) != len(weights):
        raise ValueError("one weight per ranking")
    if k < 0:
        raise ValueError("k must be >= 0")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: i for i, item in enumerate(dict.fromkeys(x for r in rankings for x in r))}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def zscore_fuse(
    rankings: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float]
) -> list[tuple[int, float]]:
    """Score fusion: ``sum(w * z)``, where ``z`` standardises a ranking's own scores.

    Each ranking's scores become z-scores over that ranking's candidates (mean 0, standard
    deviation 1), so cosines and BM25 scores are comparable and a hit far above the rest
    keeps its lead. A candidate missing from a ranking gets that ranking's lowest z-score.
    A ranking that cannot tell its candidates apart (one hit, or equal scores) puts them
    all at 1 and the candidates it lacks at 0: being found still counts. Best first; ties
    keep the order of first appearance.
    """
    if len(rankings) != len(weights):
        raise ValueError("one weight per ranking")
    order = list(dict.fromkeys(item for ranking in rankings for item, _ in ranking))
    scores = {item: 0.0 for item in order}
    for ranking, weight in zip(rankings, weights, strict=True):
        if not ranking:
            continue
        values = np.asarray([score for _, score in ranking], dtype="float64")
        mean, deviation = float(values.mean()), float(values.std())
        if deviation > 0:
            z = {item: (score - mean) / deviation for item, score in ranking}
            floor = min(z.values())
        else:
            z, floor = {item: 1.0 for item, _ in ranking}, 0.0
        for item in order:
            scores[item] += weight * z.get(item, floor)
    position = {item: i for i, item in enumerate(order)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], position[kv[0]]))


def spread_out(
    candidates: Sequence[T], location: Callable[[T], Hashable], per_location: int
) -> list[T]:
    """Reorder so that no location holds more than ``per_location`` of the leading items.

    Candidates keep their order; those over their location's share move behind the rest,
    in order, so they still fill the list when nothing else is left. 0 keeps the order.
    """
    if per_location <= 0:
        return list(candidates)
    taken: dict[Hashable, int] = {}
    first, later = [], []
    for candidate in candidates:
        where = location(candidate)
        if taken.get(where, 0) < per_location:
            taken[where] = taken.get(where, 0) + 1
            first.append(candidate)
        else:
            later.append(candidate)
    return first + later


Location = tuple[str, int | None, str | None, int]


def spread_over_locations(
    candidates: Sequence[tuple[int, float]],
    location: Callable[[int], Location],
    per_location: int,
    penalty: float,
    gap: float = SECTION_GAP,
) -> list[tuple[int, float]]:
    """Reorder scored candidates: each location leads once, a page-less file's others later.

    ``spread_out`` by location first. Then the leading candidates of a page-less document
    (no page) after its first are judged against that document's best chunk. One that
    scores more than ``gap`` standard deviations (of all the candidates' scores) below it
    is the same file again, not a new place: it comes after every other leading
    candidate. One within ``gap`` competes with its score lowered by ``penalty`` standard
    deviations for each leading chunk of that document before it: a second section of a
    file leads when it matches about as well as the file's best and still clearly beats
    another file's best chunk. A penalty of 0 keeps the spread order (whatever the gap);
    a large penalty puts one chunk per file first.
    """
    spread = spread_out(candidates, lambda c: location(c[0]), per_location)
    if per_location <= 0 or penalty <= 0 or len(spread) < 2:
        return spread
    deviation = float(np.std([score for _, score in spread])) or 1.0
    lead = len(spread) - sum(1 for _ in _over_share(spread, location, per_location))
    best: dict[str, float] = {}
    for cid, score in spread[:lead]:
        doc_id = location(cid)[0]
        best[doc_id] = max(score, best.get(doc_id, score))
    taken: dict[str, int] = {}
    keyed: list[tuple[float, int, tuple[int, float]]] = []
    for position, (cid, score) in enumerate(spread[:lead]):
        doc_id, page = location(cid)[:2]
        handicap = 0.0
        if page is None and taken.get(doc_id, 0):
            if best[doc_id] - score > gap * deviation:
                handicap = float("inf")  # the same file again: after every other place
            else:
                handicap = penalty * deviation * taken[doc_id]
        taken[doc_id] = taken.get(doc_id, 0) + 1
        keyed.append((score - handicap, position, (cid, score)))
    keyed.sort(key=lambda k: (-k[0], k[1]))
    return [c for _, _, c in keyed] + spread[lead:]


def _over_share(
    spread: Sequence[tuple[int, float]], location: Callable[[int], Location], per_location: int
) -> list[tuple[int, float]]:
    """The candidates beyond their location's share (``spread_out`` put them last)."""
    seen: dict[Location, int] = {}
    over = []
    for cid, score in spread:
        where = location(cid)
        seen[where] = seen.get(where, 0) + 1
        if seen[where] > per_location:
            over.append((cid, score))
    return over


def location(
    doc_id: str, page: int | None, heading: str | None, offset: int, span: int
) -> Location:
    """Where a chunk sits, for page diversity: its page, or its section and stretch.

    A document with pages is located by page. A page-less one (HTML, Markdown, text,
    DOCX) by its section heading and, within the section, by the ``span``-character
    stretch the chunk starts in, so neighbouring chunks share a location and distant
    ones do not. ``span`` 0 makes the whole section one location.
    """
    if page is not None:
        return (doc_id, page, None, 0)
    return (doc_id, None, heading, offset // span if span > 0 else 0)


def mmr_select(query: np.ndarray, vectors: np.ndarray, k: int, lambda_: float) -> list[int]:
    """Maximal marginal relevance: indices of ``k`` rows, relevant yet unlike each other."""
    if len(vectors) == 0:
        return []
    relevance = vectors @ query
    chosen: list[int] = []
    left = list(range(len(vectors)))
    while left and len(chosen) < k:
        if chosen:
            redundancy = (vectors[left] @ vectors[chosen].T).max(axis=1)
        else:
            redundancy = np.zeros(len(left))
        scores = lambda_ * relevance[left] - (1 - lambda_) * redundancy
        best = left[int(np.argmax(scores))]
        chosen.append(best)
        left.remove(best)
    return chosen


class _Unset:
    """No ``within`` was given (distinct from None, which admits every collection)."""


_UNSET = _Unset()


class HybridRetriever(BaseRetriever):
    """The top ``k`` chunks for a question, with calibrated relevance in the metadata.

    Chunks below ``min_relevance``, or more than ``relevance_gap`` below the best one,
    are dropped; returning nothing means the documents do not cover the question.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any = Field(description="A Store (rag.store.base): FaissStore or PostgresStore.")
    mode: Mode = Mode.HYBRID
    k: int = Field(default=5, ge=1)
    fusion: Fusion = Fusion.ZSCORE
    fusion_depth: int = Field(default=40, ge=1, description="Candidates taken from each ranking.")
    rrf_k: int = Field(default=60, ge=0)
    vector_weight: float = Field(default=1.0, ge=0.0)
    keyword_weight: float = Field(default=1.0, ge=0.0)
    min_relevance: float = Field(default=0.0, ge=0.0, le=1.0)
    relevance_gap: float = Field(default=1.0, ge=0.0, le=1.0)
    mmr_lambda: float | None = Field(default=None, ge=0.0, le=1.0)
    max_chunks_per_page: int = Field(
        default=1, ge=0, description="Chunks of one page before other pages are taken; 0: any."
    )
    location_span: int = Field(
        default=LOCATION_SPAN,
        ge=0,
        description="Characters of a page-less section counted as one location (0: the section).",
    )
    document_penalty: float = Field(
        default=DOCUMENT_PENALTY,
        ge=0.0,
        description=(
            "Handicap of a page-less file's further sections, in standard deviations of the "
            "candidates' scores per chunk already taken from it (0: none)."
        ),
    )
    section_gap: float = Field(
        default=SECTION_GAP,
        ge=0.0,
        description=(
            "How far, in standard deviations of the candidates' scores, a page-less file's "
            "further section may trail the file's best chunk and still lead (inf: any)."
        ),
    )
    reranker: Any = Field(default=None, description="A Reranker, or None.")
    quarantine: bool = Field(
        default=False,
        description="Leave out chunks flagged at ingestion for instruction-like text.",
    )

    def describe(self) -> dict[str, Any]:
        """The settings that shape this retriever's rankings (for reports)."""
        config: dict[str, Any] = {
            "max_chunks_per_page": self.max_chunks_per_page,
            "location_span": self.location_span,
            "document_penalty": self.document_penalty,
            "section_gap": self.section_gap,
        }
        if self.mode is Mode.HYBRID:
            config |= {
                "fusion": self.fusion.value,
                "fusion_depth": max(self.fusion_depth, self.k),
                "vector_weight": self.vector_weight,
                "keyword_weight": self.keyword_weight,
            }
            if self.fusion is Fusion.RRF:
                config["rrf_k"] = self.rrf_k
        return config

    def _location(self, record: Any) -> Location:
        return location(
            record.doc_id, record.page, record.heading, record.offset, self.location_span
        )

    def _admitted(self, hits: list[tuple[Any, float]]) -> list[tuple[Any, float]]:
        """The hits a question may use: flagged chunks are left out under quarantine."""
        if not self.quarantine:
            return hits
        return [(record, score) for record, score in hits if not record.flags]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        within: frozenset[str] | _Unset | None = _UNSET,
    ) -> list[Document]:
        if isinstance(within, _Unset):  # fail closed: a caller that forgot its scope
            raise RagError("retrieval needs the collections it may read (within=...)")
        return [doc for doc, _ in self.search(query, within=within)]

    def search(self, query: str, *, within: frozenset[str] | None) -> list[tuple[Document, float]]:
        """Documents with their fused score (z-score or RRF, or the single method's own score).

        ``within``: only chunks of these collections (None: all); the filter is applied
        inside both searches, so the depth and ``k`` are filled from them alone.

        Every store read goes through one pinned view, so the vector hits, the keyword hits,
        their similarities and their records all come from the same published generation,
        even while an ingestion publishes a new one.
        """
        query_vector = self.store.embeddings.embed_query(query)
        with self.store.reader() as view:
            return self._search(view, query, query_vector, within)

    def _search(
        self,
        view: StoreReader,
        query: str,
        query_vector: list[float],
        within: frozenset[str] | None,
    ) -> list[tuple[Document, float]]:
        depth = max(self.fusion_depth, self.k)
        if self.quarantine:  # flagged chunks are dropped after the search: look that much deeper
            depth += min(view.flagged_count(), QUARANTINE_EXTRA)
        records: dict[int, Any] = {}
        cosine: dict[int, float] = {}
        ranked: list[list[tuple[int, float]]] = []
        weights: list[float] = []
        if self.mode in (Mode.VECTOR, Mode.HYBRID):
            hits = self._admitted(view.search_chunks_by_vector(query_vector, depth, within))
            records.update({r.id: r for r, _ in hits})
            cosine.update({r.id: s for r, s in hits})
            ranked.append([(r.id, s) for r, s in hits])
            weights.append(self.vector_weight)
        if self.mode in (Mode.KEYWORD, Mode.HYBRID):
            hits = self._admitted(view.keyword_search(query, depth, within))
            records.update({r.id: r for r, _ in hits})
            ranked.append([(r.id, s) for r, s in hits])
            weights.append(self.keyword_weight)
        if len(ranked) == 1:  # a single method keeps its own score (cosine or BM25)
            fused = ranked[0]
        elif self.fusion is Fusion.RRF:
            fused = rrf_fuse([[cid for cid, _ in r] for r in ranked], weights, self.rrf_k)
        else:
            fused = zscore_fuse(ranked, weights)
        # Vector hits already carry their cosine; only keyword-only hits need one computed.
        missing = [cid for cid, _ in fused if cid not in cosine]
        cosine.update(view.similarities(query_vector, missing))
        candidates = fused

        if self.reranker is not None and candidates:
            texts = [records[cid].text for cid, _ in candidates]
            scores = self.reranker.score(query, texts)
            candidates = sorted(
                zip([c for c, _ in candidates], scores, strict=True), key=lambda x: -x[1]
            )
        relevances = {cid: self.store.relevance(cosine[cid]) for cid, _ in candidates}
        best = max(relevances.values(), default=0.0)
        candidates = [
            (cid, score)
            for cid, score in candidates
            if relevances[cid] >= self.min_relevance
            and relevances[cid] >= best - self.relevance_gap
        ]
        if self.mmr_lambda is not None and len(candidates) > 1:
            q = np.asarray(query_vector, dtype="float32")
            q /= np.linalg.norm(q) or 1.0
            ids = [cid for cid, _ in candidates]
            picked = mmr_select(q, view.vectors(ids), len(ids), self.mmr_lambda)
            candidates = [candidates[i] for i in picked]
        candidates = spread_over_locations(
            candidates,
            lambda cid: self._location(records[cid]),
            self.max_chunks_per_page,
            self.document_penalty,
            self.section_gap,
        )

        results: list[tuple[Document, float]] = []
        for cid, score in candidates[: self.k]:
            doc = records[cid].to_document(score)
            doc.metadata["relevance"] = relevances[cid]
            doc.metadata["mode"] = self.mode.value
            results.append((doc, score))
        return results
