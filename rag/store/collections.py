"""Which collection each document is in, and searches limited to some collections.

A document outside the ``doc_collections`` table is in the default collection: an index
from before collections is the default collection as it is, with no rewrite. The table
is created by the first document stored in another collection.

The same file may be in two collections: a document's id is its content hash in the
default collection, and a hash of that and the collection id elsewhere, so the two
copies are separate documents with separate chunks.

Searches are filtered inside FAISS and FTS5, so a caller gets a full top-k from the
collections it may read: FAISS with a bitmap ``IDSelector`` over the flat index's
positions, FTS5 with a function of the rowid tested inside its scan (both from a table of
each chunk's collection, built once per generation).
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

import faiss
import numpy as np

DEFAULT_COLLECTION = "default"

# Run one by one (``executescript`` would commit the writer's transaction).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS doc_collections "
    "(doc_id TEXT PRIMARY KEY, collection TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS doc_collections_collection ON doc_collections(collection)",
    "CREATE TRIGGER IF NOT EXISTS doc_collections_delete AFTER DELETE ON documents BEGIN "
    "DELETE FROM doc_collections WHERE doc_id = old.doc_id; END",
)

_lock = threading.Lock()


def document_id(content_id: str, collection: str) -> str:
    """The id of a document with this content in ``collection``."""
    if collection == DEFAULT_COLLECTION:
        return content_id
    return hashlib.sha256(f"{collection}\0{content_id}".encode()).hexdigest()


def has_table(db: sqlite3.Connection) -> bool:
    """Whether any document was ever stored outside the default collection."""
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'doc_collections'"
    ).fetchone()
    return found is not None


def assign(db: sqlite3.Connection, doc_id: str, collection: str) -> None:
    """File a newly stored document under ``collection`` (inside the writer)."""
    if collection == DEFAULT_COLLECTION:
        if has_table(db):
            db.execute("DELETE FROM doc_collections WHERE doc_id = ?", (doc_id,))
        return
    for statement in SCHEMA:
        db.execute(statement)
    db.execute(
        "INSERT INTO doc_collections (doc_id, collection) VALUES (?, ?) "
        "ON CONFLICT (doc_id) DO UPDATE SET collection = excluded.collection",
        (doc_id, collection),
    )


def of_documents(db: sqlite3.Connection) -> dict[str, str]:
    """doc_id -> collection of every document outside the default collection."""
    if not has_table(db):
        return {}
    return dict(db.execute("SELECT doc_id, collection FROM doc_collections"))


def sql_filter(
    db: sqlite3.Connection, within: frozenset[str], doc_column: str
) -> tuple[str, list[str]]:
    """A WHERE condition on ``doc_column`` (a doc_id column) admitting ``within``, with args."""
    marks = ",".join("?" * len(within)) or "NULL"
    if not has_table(db):
        # Everything is in the default collection.
        return ("1" if DEFAULT_COLLECTION in within else "0"), []
    return (
        f"coalesce((SELECT dc.collection FROM doc_collections dc WHERE dc.doc_id = "
        f"{doc_column}), '{DEFAULT_COLLECTION}') IN ({marks})",
        sorted(within),
    )


class PositionCodes:
    """For one generation: each FAISS position's label and collection code.

    Built at the first filtered search of a generation (one pass over the chunks table);
    generations never change, so it stays valid for the generation's life.
    """

    def __init__(self, index: Any, db: sqlite3.Connection) -> None:
        self.labels = faiss.vector_to_array(index.id_map).astype(np.int64)
        names: dict[str, int] = {DEFAULT_COLLECTION: 0}
        if has_table(db):
            rows = db.execute(
                "SELECT c.id, dc.collection FROM chunks c "
                "JOIN doc_collections dc ON dc.doc_id = c.doc_id"
            ).fetchall()
        else:
            rows = []
        codes = np.zeros(len(self.labels), dtype=np.int32)
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            row_codes = np.fromiter(
                (names.setdefault(r[1], len(names)) for r in rows), dtype=np.int32, count=len(rows)
            )
            order = np.argsort(self.labels, kind="stable")
            at = np.searchsorted(self.labels, ids, sorter=order)
            at = np.clip(at, 0, len(self.labels) - 1)
            positions = order[at]
            found = self.labels[positions] == ids
            codes[positions[found]] = row_codes[found]
        self.codes = codes
        self.names = names
        self.counts = np.bincount(codes, minlength=len(names))  # chunks per collection code
        # The code of each chunk id (FTS5 rowid), for the keyword search's filter.
        by_id = np.full(int(self.labels.max()) + 1 if len(self.labels) else 0, -1, np.int32)
        by_id[self.labels] = codes
        self.by_id: list[int] = by_id.tolist()

    def wanted(self, within: Iterable[str]) -> frozenset[int]:
        """The codes of the collections ``within`` (unknown names admit nothing)."""
        return frozenset(self.names[c] for c in within if c in self.names)

    def admitted(self, wanted: frozenset[int]) -> int:
        """How many chunks the collection codes ``wanted`` admit."""
        return int(sum(int(self.counts[c]) for c in wanted))

    def mask(self, within: Iterable[str]) -> np.ndarray | None:
        """Positions admitted by ``within`` (a bool array), None when all are."""
        wanted = self.wanted(within)
        if self.admitted(wanted) == len(self.codes):
            return None
        return np.isin(self.codes, np.asarray(sorted(wanted), dtype=np.int32))


def position_codes(cache: dict[str, Any], index: Any, db: sqlite3.Connection) -> PositionCodes:
    """The generation's ``PositionCodes``, built once and kept in its ``cache``."""
    found = cache.get("position_codes")
    if found is None:
        with _lock:
            found = cache.get("position_codes")
            if found is None:
                found = cache["position_codes"] = PositionCodes(index, db)
    assert isinstance(found, PositionCodes)
    return found


def filtered_search(
    index: Any, codes: PositionCodes, query: np.ndarray, k: int, within: frozenset[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Search only ``within``: (scores, labels) rows like ``index.search``.

    None when no filter is needed (every collection in the index is admitted).
    """
    mask = codes.mask(within)
    if mask is None:
        return None
    admitted = int(mask.sum())
    if admitted == 0:
        return np.zeros((1, 0), dtype=np.float32), np.zeros((1, 0), dtype=np.int64)
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    inner = faiss.downcast_index(index.index)
    params = faiss.SearchParameters()
    params.sel = selector
    scores, positions = inner.search(query, min(k, admitted), params=params)
    labels = np.where(positions >= 0, codes.labels[np.maximum(positions, 0)], -1)
    return scores, labels


# FTS5 queries of ``keyword_search``: ``{extra}`` is empty or the filter's condition.
_KEYWORD_SQL = (
    "SELECT rowid, -bm25(chunks_fts, 1.0, ?) AS s FROM chunks_fts "
    "WHERE chunks_fts MATCH ? {extra}ORDER BY s DESC LIMIT ?"
)


def keyword_rows(
    db: sqlite3.Connection,
    codes: PositionCodes | None,
    args: tuple[Any, ...],
    k: int,
    within: frozenset[str] | None,
) -> list[tuple[int, float]]:
    """The best ``k`` (rowid, score) FTS5 rows for ``args`` (weight, match), ``within`` only.

    A join to the chunks table per match would cost 3-4x the search (bench/filter.py), so
    the filter reads each rowid's collection from ``codes``: when most chunks are admitted
    a few more of the best rows are taken and the others dropped; otherwise a function
    registered on this connection (used by one view at a time) rejects rows inside the
    scan, before their BM25 is computed. ``codes`` may be None only without ``within``.
    """
    if within is None:
        return db.execute(_KEYWORD_SQL.format(extra=""), (*args, k)).fetchall()
    assert codes is not None
    wanted = codes.wanted(within)
    admitted = codes.admitted(wanted)
    total = len(codes.codes)
    if admitted == 0:
        return []
    if admitted == total:
        return db.execute(_KEYWORD_SQL.format(extra=""), (*args, k)).fetchall()
    by_id = codes.by_id

    def admits(rowid: int) -> bool:
        return 0 <= rowid < len(by_id) and by_id[rowid] in wanted

    share = admitted / total
    if share >= 0.5:
        limit = math.ceil(2 * k / share) + k
        top = db.execute(_KEYWORD_SQL.format(extra=""), (*args, limit)).fetchall()
        kept = [r for r in top if admits(r[0])]
        if len(kept) >= k or len(top) < limit:  # enough, or every match was looked at
            return kept[:k]
    db.create_function("ragchat_within", 1, admits, deterministic=True)
    return db.execute(
        _KEYWORD_SQL.format(extra="AND ragchat_within(rowid) "), (*args, k)
    ).fetchall()
