"""Which collection each document is in, and searches limited to some collections.

Every document and chunk row names its collection (``default`` unless filed elsewhere).
The same file may be in two collections: a document's id is its content hash in the
default collection, and a hash of that and the collection id elsewhere, so the two
copies are separate documents with separate chunks. A document never changes collection.

Searches are filtered inside FAISS and FTS5, so a caller gets a full top-k from the
collections it may read. Both read each chunk's collection from ``IdCodes``: an array
from chunk id to a small collection code, kept by the store for its whole life and
extended with the chunks of each new generation only (chunk ids are never reused, and a
chunk's collection never changes), so a new generation costs nothing to filter.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

DEFAULT_COLLECTION = "default"


def document_id(content_id: str, collection: str) -> str:
    """The id of a document with this content in ``collection``."""
    if collection == DEFAULT_COLLECTION:
        return content_id
    return hashlib.sha256(f"{collection}\0{content_id}".encode()).hexdigest()


def sql_filter(within: frozenset[str], column: str) -> tuple[str, list[str]]:
    """A WHERE condition on a collection ``column`` admitting ``within``, with its args."""
    marks = ",".join("?" * len(within)) or "NULL"
    return f"{column} IN ({marks})", sorted(within)


class IdCodes:
    """Chunk id -> collection code (0: the default collection), for every generation seen.

    ``update`` reads the chunks added since the last update (outside the default
    collection only: an index kept in one collection costs nothing). Thread-safe.
    """

    def __init__(self) -> None:
        self.names: dict[str, int] = {DEFAULT_COLLECTION: 0}
        self.codes = np.zeros(0, dtype=np.int32)
        self.upto = 0  # chunks added up to this generation are in ``codes``
        self._lock = threading.Lock()

    def update(self, db: sqlite3.Connection, gen: int) -> np.ndarray:
        """Bring the map up to generation ``gen`` (read in the caller's transaction)."""
        with self._lock:
            if gen > self.upto:
                rows = db.execute(
                    "SELECT id, collection FROM chunks WHERE collection != ? "
                    "AND added_gen > ? AND added_gen <= ?",
                    (DEFAULT_COLLECTION, self.upto, gen),
                ).fetchall()
                if rows:
                    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                    codes = np.fromiter(
                        (self.names.setdefault(r[1], len(self.names)) for r in rows),
                        dtype=np.int32,
                        count=len(rows),
                    )
                    top = int(ids.max()) + 1
                    grown = self.codes
                    if top > len(grown):
                        grown = np.zeros(max(top, len(grown) * 2), dtype=np.int32)
                        grown[: len(self.codes)] = self.codes
                    grown[ids] = codes
                    self.codes = grown  # readers holding the old array keep a valid one
                self.upto = gen
            return self.codes

    def wanted(self, within: Iterable[str]) -> frozenset[int]:
        """The codes of the collections ``within`` (unknown names admit nothing)."""
        return frozenset(self.names[c] for c in within if c in self.names)


class Admission:
    """Which chunk ids one generation's search may return: alive there, in ``within``.

    ``id_mask`` is a bool array by chunk id (ids past its end are admitted when
    ``default_admitted``), or None when every chunk of the generation is admitted.
    """

    def __init__(
        self,
        id_mask: np.ndarray | None,
        default_admitted: bool,
        admitted: int,
        total: int,
    ) -> None:
        self.id_mask = id_mask
        self.default_admitted = default_admitted
        self.admitted = admitted  # chunks admitted (live ones; an estimate with tombstones)
        self.total = total

    def admits(self) -> Callable[[int], bool]:
        """A test of one chunk id (for FTS5)."""
        mask = self.id_mask
        if mask is None:
            return lambda rowid: True
        size, default = len(mask), self.default_admitted
        as_list: list[bool] = mask.tolist()

        def test(rowid: int) -> bool:
            return as_list[rowid] if 0 <= rowid < size else default

        return test

    def positions(self, labels: np.ndarray) -> np.ndarray | None:
        """The admitted positions of a segment whose chunk ids are ``labels`` (None: all)."""
        mask = self.id_mask
        if mask is None:
            return None
        inside = labels < len(mask)
        out = np.full(len(labels), self.default_admitted, dtype=bool)
        out[inside] = mask[labels[inside]]
        return out


def admission(
    codes: IdCodes,
    db: sqlite3.Connection,
    gen: int,
    within: frozenset[str] | None,
    dead: np.ndarray,
    live_chunks: int,
) -> Admission:
    """What a search of generation ``gen`` may return: not ``dead``, and ``within``."""
    if within is None and len(dead) == 0:
        return Admission(None, True, live_chunks, live_chunks)
    if within is None:
        top = int(dead.max()) + 1
        mask = np.ones(top, dtype=bool)
        mask[dead] = False
        return Admission(mask, True, live_chunks, live_chunks)
    array = codes.update(db, gen)
    wanted = codes.wanted(within)
    default_in = 0 in wanted
    mask = np.isin(array, np.asarray(sorted(wanted), dtype=np.int32))
    if len(dead):
        top = int(dead.max()) + 1
        if top > len(mask):
            mask = np.concatenate([mask, np.full(top - len(mask), default_in, dtype=bool)])
        mask[dead] = False
    outside = int(np.count_nonzero(array != 0))  # chunks outside the default collection
    inside_admitted = int(np.count_nonzero(mask[: len(array)] & (array != 0)))
    admitted = inside_admitted + (max(live_chunks - outside, 0) if default_in else 0)
    return Admission(mask, default_in, min(admitted, live_chunks), live_chunks)


# Keyword search of a large index (``PRUNE_FROM`` chunks or more) scores at most
# ``KEYWORD_BUDGET`` matching chunks: FTS5 computes BM25 for every chunk a word matches,
# with no early stop (~1 us each on 2 cores; a word in every chunk of 1M costs ~1 s). The
# query's words are taken rarest first while the chunks they match stay within the
# budget. A word in more chunks than the budget, or than ``COMMON_SHARE`` of them, is
# left out: it tells little about which chunk is meant (BM25's IDF below log(9) ~ 2.2 at
# 10%, ~3.9 at 2% of 1M, against ~10 for a rare word). A query made only of such words
# gets no keyword ranking there, and the vector ranking alone orders its results.
KEYWORD_BUDGET = 20_000
COMMON_SHARE = 0.1
PRUNE_FROM = 20_000  # chunks; smaller indexes search every word


def _match_counts(
    db: sqlite3.Connection, words: list[str], cap: int, known: dict[str, int]
) -> list[int]:
    """How many chunks each word matches, counted up to ``cap + 1``.

    Chunks not purged yet are counted. Read from the word's FTS5 row list, stopping at the
    cap: FTS5's own counts (``fts5vocab``) read a word's whole list, ~0.2 s for a word in
    each of 1M chunks. ``known``: counts taken before in the same generation (the common
    words of questions recur), added to.
    """
    out = []
    for w in words:
        n = known.get(w)
        if n is None:
            n = known[w] = db.execute(
                "SELECT count(*) FROM (SELECT rowid FROM chunks_fts "
                "WHERE chunks_fts MATCH ? LIMIT ?)",
                (f'"{w}"', cap + 1),
            ).fetchone()[0]
        out.append(n)
    return out


def discriminating(
    db: sqlite3.Connection, words: list[str], chunks: int, known: dict[str, int] | None = None
) -> list[str]:
    """The query words a keyword search of ``chunks`` chunks scores (see ``KEYWORD_BUDGET``).

    Every word on a small index; on a large one the rarest words, in the query's order,
    whose matches together fit the budget, leaving out any word in more chunks than the
    budget or ``COMMON_SHARE`` of them: none when every word is such a word (or in none).
    ``known``: a cache of match counts for this generation of the index.
    """
    if chunks < PRUNE_FROM:
        return words
    cap = int(min(COMMON_SHARE * chunks, KEYWORD_BUDGET))
    counts = _match_counts(db, words, cap, {} if known is None else known)
    rarest = sorted((n, i) for i, n in enumerate(counts) if 0 < n <= cap)
    kept: set[int] = set()
    spent = 0
    for n, i in rarest:
        if spent + n > KEYWORD_BUDGET:
            break
        kept.add(i)
        spent += n
    return [w for i, w in enumerate(words) if i in kept]


# FTS5 queries of ``keyword_search``: ``{extra}`` is empty or the filter's condition.
_KEYWORD_SQL = (
    "SELECT rowid, -bm25(chunks_fts, 1.0, ?) AS s FROM chunks_fts "
    "WHERE chunks_fts MATCH ? {extra}ORDER BY s DESC LIMIT ?"
)


def keyword_rows(
    db: sqlite3.Connection,
    allowed: Admission,
    unseen: frozenset[int],
    args: tuple[Any, ...],
    k: int,
) -> list[tuple[int, float]]:
    """The best ``k`` (rowid, score) FTS5 rows for ``args`` (weight, match) ``allowed``.

    ``unseen``: rows the generation does not see yet (a writer committed them and is
    about to publish). A join to the chunks table per match would cost 3-4x the search
    (bench/filter.py), so the filter reads each rowid from ``allowed``: when most chunks
    are admitted a few more of the best rows are taken and the others dropped; otherwise a
    function registered on this connection (used by one view at a time) rejects rows
    inside the scan, before their BM25 is computed.
    """
    if allowed.admitted == 0:
        return []
    test = allowed.admits()

    def admits(rowid: int) -> bool:
        return rowid not in unseen and test(rowid)

    if allowed.id_mask is None and not unseen:
        return db.execute(_KEYWORD_SQL.format(extra=""), (*args, k)).fetchall()
    share = allowed.admitted / max(allowed.total, 1)
    if share >= 0.5:
        limit = math.ceil(2 * k / share) + k + len(unseen)
        top = db.execute(_KEYWORD_SQL.format(extra=""), (*args, limit)).fetchall()
        kept = [r for r in top if admits(r[0])]
        if len(kept) >= k or len(top) < limit:  # enough, or every match was looked at
            return kept[:k]
    db.create_function("ragchat_within", 1, admits, deterministic=True)
    return db.execute(
        _KEYWORD_SQL.format(extra="AND ragchat_within(rowid) "), (*args, k)
    ).fetchall()
