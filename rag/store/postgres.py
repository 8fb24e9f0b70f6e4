"""The document index in Postgres: pgvector for vectors, full-text search for keywords.

``RAG_STORE_URL=postgresql://...`` puts the index here instead of a folder, so several app
replicas and ``ragchat worker`` processes on several machines share one index. It offers
the same interface as the embedded ``FaissStore`` (``rag.store.base``) and passes the same
contract suite. The mapping:

- a writer is one Postgres transaction (READ COMMITTED), serialised by a transaction-level
  advisory lock: publishing is the commit, a failed or interrupted writer rolls back and
  publishes nothing, and a writer that dies releases the lock with its connection;
- a reader is one REPEATABLE READ, READ ONLY transaction: every read of one query sees the
  same snapshot, like a pinned generation;
- vectors are a ``vector(dim)`` column (normalised, cosine distance) with an HNSW index;
  searches limited to collections filter inside the index scan (pgvector's iterative
  scans) and fall back to an exact scan when the index cannot fill ``k``;
- keywords: a stored ``tsvector`` (english; the heading weighted 0.5 beside the text, as
  in the embedded index) with a GIN index, ranked by ``ts_rank`` (on the 100 PostgreSQL
  manual questions of ``bench/postgres_eval.py`` it is within 0.02 of the folder's BM25;
  ``ts_rank_cd`` was 0.07-0.13 behind);
- the embedding model and dimension sit in the ``meta`` table: another model is an
  ``IndexMismatchError``, as with a folder.

All tables live in one Postgres schema (``ragchat`` by default), so one database can hold
several indexes. The first writer creates the schema and the ``vector`` extension (which
needs a role allowed to create it, or an extension created beforehand).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import psycopg_pool
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from pgvector import Vector
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.rows import TupleRow

from rag.errors import (
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexUnwritableError,
)
from rag.store import collections, scan
from rag.store.common import ViewStore
from rag.store.faiss import (
    ChunkRecord,
    DocumentInfo,
    Manifest,
    NewChunk,
    keyword_terms,
)
from rag.store.scan import ChunkScan
from rag.text import redacted

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# ts_rank weights of the labels D, C, B, A: text is A (1.0), the heading B (0.5).
_RANK_WEIGHTS = "'{0.1, 0.2, 0.5, 1.0}'::float4[]"
# A keyword held by more of the chunks than this only ranks what rarer ones match.
COMMON_SHARE = 0.05
SAMPLE_ROWS = 2000  # chunks ranked when every word of a query is in most chunks
_SHARES_TTL_S = 60.0
_EXTENSION_LOCK = int.from_bytes(hashlib.sha256(b"ragchat-vector").digest()[:8], "big", signed=True)

_TABLES = """
CREATE TABLE meta (
    id integer PRIMARY KEY CHECK (id = 1),
    schema_version integer NOT NULL,
    embedding_model text NOT NULL,
    dimension integer NOT NULL,
    generation bigint NOT NULL,   -- publishes so far: the snapshot's name (g000007)
    published_at text NOT NULL,
    scanner_version text          -- every chunk was scanned with it; NULL: not scanned
);
CREATE TABLE documents (
    doc_id text PRIMARY KEY,
    kind text NOT NULL,
    pages integer,
    chunks integer NOT NULL,
    ingested_at text NOT NULL,
    collection text NOT NULL,
    pii jsonb                     -- kinds of personal data in its chunks, with counts
);
CREATE INDEX documents_order ON documents (ingested_at, doc_id);
CREATE TABLE sources (
    path text PRIMARY KEY,
    doc_id text NOT NULL REFERENCES documents ON DELETE CASCADE,
    added_at text NOT NULL,
    title text,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX sources_doc ON sources (doc_id, added_at, seq);
CREATE TABLE partial_documents (
    doc_id text PRIMARY KEY REFERENCES documents ON DELETE CASCADE,
    source text NOT NULL,
    chunks_done integer NOT NULL
);
CREATE SEQUENCE chunk_ids;
CREATE TABLE chunks (
    id bigint PRIMARY KEY,
    chunk_id text NOT NULL UNIQUE,
    doc_id text NOT NULL REFERENCES documents ON DELETE CASCADE,
    seq integer NOT NULL,
    text text NOT NULL,
    page integer,
    heading text,
    char_offset integer NOT NULL,
    collection text NOT NULL,
    flags text NOT NULL DEFAULT '',   -- injection rules that fired at ingestion
    embedding vector({dim}) NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', text), 'A')
        || setweight(to_tsvector('english', coalesce(heading, '')), 'B')
    ) STORED,
    UNIQUE (doc_id, seq)
);
CREATE INDEX chunks_collection ON chunks (collection);
CREATE INDEX chunks_flagged ON chunks (doc_id) WHERE flags <> '';
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
"""
_VECTOR_INDEX = "CREATE INDEX chunks_embedding ON chunks USING hnsw (embedding vector_cosine_ops)"

_RECORD_SELECT = """
SELECT c.id, c.chunk_id, c.doc_id, c.text, c.page, c.heading, c.char_offset, s.path, s.title,
       c.flags
FROM chunks c
JOIN LATERAL (
    SELECT s.path, s.title FROM sources s WHERE s.doc_id = c.doc_id
    ORDER BY s.added_at, s.seq LIMIT 1
) s ON true
"""

_COPY_CHUNKS = (
    "COPY chunks (id, chunk_id, doc_id, seq, text, page, heading, char_offset, collection, "
    "flags, embedding) FROM STDIN WITH (FORMAT BINARY)"
)
_COPY_TYPES = [
    "bigint", "text", "text", "integer", "text", "integer", "text", "integer", "text", "text",
    "vector",
]  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _record(row: Sequence[Any]) -> ChunkRecord:
    cid, chunk_id, doc_id, text, page, heading, offset, source, title, flags = row
    return ChunkRecord(
        cid, chunk_id, doc_id, text, page, heading, offset, source, title,
        tuple(flags.split(",")) if flags else (),
    )  # fmt: skip


@dataclass(frozen=True)
class _Meta:
    """The ``meta`` row: what the index was built with, and its publishes."""

    schema_version: int
    embedding_model: str
    dimension: int
    generation: int
    published_at: str
    scanner_version: str | None


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.where(norms == 0, 1.0, norms), dtype="float32")


def _query_vector(vector: Sequence[float]) -> Vector:
    return Vector(_normalised(np.asarray(vector, dtype="float32")))


def _cosine(distance: float) -> float:
    return min(1.0, max(-1.0, 1.0 - float(distance)))


def _ts_query(terms: list[str]) -> str:
    # Each term is a run of letters and digits (``keyword_terms``): no tsquery syntax.
    return " | ".join(terms)


class PostgresView:
    """One REPEATABLE READ snapshot of the index; built by ``PostgresStore.reader()``."""

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[TupleRow], meta: _Meta):
        self._store = store
        self._conn: psycopg.Connection[TupleRow] | None = conn
        self._meta = meta
        self._manifest: Manifest | None = None

    def _db(self) -> psycopg.Connection[TupleRow]:
        if self._conn is None:
            raise ValueError("this view of the index is closed; use it inside store.reader()")
        return self._conn

    def close(self) -> None:
        """End the view (``reader()`` does this)."""
        self._conn = None

    @property
    def generation(self) -> str:
        """The number of publishes the snapshot includes, as a name (``g000007``)."""
        return f"g{self._meta.generation:06d}"

    @property
    def published_at(self) -> str:
        """When the snapshot's last publish was (see ``StoreReader.published_at``)."""
        return str(self._meta.published_at)

    @property
    def scanned_with(self) -> str | None:
        """The scanner version every chunk was scanned with (None: not scanned)."""
        return str(self._meta.scanner_version) if self._meta.scanner_version else None

    @property
    def manifest(self) -> Manifest:
        """What the index was built with, and its counts in this snapshot."""
        if self._manifest is None:
            db = self._db()
            (n_docs,) = db.execute("SELECT count(*) FROM documents").fetchone() or (0,)
            self._manifest = Manifest(
                embedding_model=self._meta.embedding_model,
                dimension=self._meta.dimension,
                format_version=self._meta.schema_version,
                generation=self._meta.generation,
                documents=int(n_docs),
                chunks=self.chunk_count(),
                published_at=self._meta.published_at,
            )
        return self._manifest

    def chunk_count(self) -> int:
        """Number of chunks (and vectors) in the snapshot."""
        row = self._db().execute("SELECT count(*) FROM chunks").fetchone()
        return int(row[0]) if row else 0

    def documents(self, within: frozenset[str] | None = None) -> list[DocumentInfo]:
        """Every document (of the collections ``within``), oldest first."""
        return _documents(self._db(), within, scanned=self.scanned_with is not None)

    def all_chunks(self) -> list[ChunkRecord]:
        """Every stored chunk, in document order."""
        rows = self._db().execute(_RECORD_SELECT + " ORDER BY c.doc_id, c.seq").fetchall()
        return [_record(r) for r in rows]

    def flagged_count(self) -> int:
        """Chunks flagged at ingestion for instruction-like text."""
        row = self._db().execute("SELECT count(*) FROM chunks WHERE flags <> ''").fetchone()
        return int(row[0]) if row else 0

    def chunk_text(self, doc_id: str, seq: int) -> str | None:
        """The text of a document's chunk number ``seq`` (partial documents included)."""
        row = (
            self._db()
            .execute("SELECT text FROM chunks WHERE doc_id = %s AND seq = %s", (doc_id, seq))
            .fetchone()
        )
        return str(row[0]) if row else None

    def records(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        """Chunks by internal id (unknown ids are left out)."""
        if not ids:
            return {}
        rows = (
            self._db()
            .execute(_RECORD_SELECT + " WHERE c.id = ANY(%s)", ([int(i) for i in ids],))
            .fetchall()
        )
        return {r.id: r for r in map(_record, rows)}

    def search_chunks_by_vector(
        self, vector: Sequence[float], k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks nearest ``vector`` with their cosine similarity, best first.

        Through the HNSW index (``ef_search`` at least ``k``); with ``within``, filtered
        inside the index scan (iterative scan, strict order). When the index yields fewer
        than ``k`` while the admitted collections hold more (a very selective filter), the
        search is done again exactly, so there are ``k`` hits whenever there are ``k``.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        if within is not None and not within:
            return []
        db = self._db()
        query = _query_vector(vector)
        ef = min(max(self._store.ef_search, k), 1000)
        db.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
        where, args = "", list[Any]()
        if within is not None:
            db.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            where, args = "WHERE collection = ANY(%s)", [sorted(within)]
        rows = db.execute(
            f"SELECT id, embedding <=> %s AS d FROM chunks {where} ORDER BY d LIMIT {int(k)}",
            [query, *args],
        ).fetchall()
        if len(rows) < k:
            counted = db.execute(f"SELECT count(*) FROM chunks {where}", args).fetchone()
            if counted and counted[0] > len(rows):
                logger.debug("vector search: the index gave %d of %d; exact scan", len(rows), k)
                rows = self._exact(query, k, where, args)
        records = self.records([r[0] for r in rows])
        return [(records[i], _cosine(d)) for i, d in rows if i in records]

    def exact_search(
        self, vector: Sequence[float], k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """Like ``search_chunks_by_vector``, comparing every vector (no index).

        The truth the HNSW search is measured against (``bench/scale.py``).
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        if within is not None and not within:
            return []
        where, args = "", list[Any]()
        if within is not None:
            where, args = "WHERE collection = ANY(%s)", [sorted(within)]
        rows = self._exact(_query_vector(vector), k, where, args)
        records = self.records([r[0] for r in rows])
        return [(records[i], _cosine(d)) for i, d in rows if i in records]

    def _exact(self, query: Vector, k: int, where: str, args: list[Any]) -> list[Any]:
        # The subquery (OFFSET 0 keeps it one) computes every distance: no index scan.
        return (
            self._db()
            .execute(
                f"SELECT id, d FROM (SELECT id, embedding <=> %s AS d FROM chunks {where} "
                f"OFFSET 0) t ORDER BY d LIMIT {int(k)}",
                [query, *args],
            )
            .fetchall()
        )

    def keyword_search(
        self, query: str, k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks that best match the query's words, best first.

        The query's words (``keyword_terms``) are OR-ed into an english ``tsquery``; the
        score is ``ts_rank`` with the heading weighted 0.5 beside the text (higher is
        better). ``within``: only chunks of these collections, filtered in the query.

        Ranking reads every matching row, so a word in most chunks would make every query
        that has it read most of the table. Words that Postgres's own statistics show in
        more than ``COMMON_SHARE`` of the chunks therefore only rank the chunks the other
        words match: the chunks with rare words of the query lead anyway, as they would by
        BM25. When every word is that common, the chunks holding all of them are ranked,
        or, when fewer than ``k`` do, those holding the rarest word: the first
        ``SAMPLE_ROWS`` of them, as such words tell chunks apart little better than chance
        (the folder index gives such a query no keyword ranking on a large index).
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        terms = keyword_terms(query)
        if not terms or (within is not None and not within):
            return []
        db = self._db()
        where, args = "", list[Any]()
        if within is not None:
            where, args = "AND collection = ANY(%s)", [sorted(within)]
        rows: list[Any] = []
        for picking, sample in self._store.picking_queries(db, terms):
            rows = db.execute(
                f"SELECT id, ts_rank({_RANK_WEIGHTS}, tsv, q) AS s FROM ("
                f"SELECT id, tsv FROM chunks WHERE tsv @@ to_tsquery('english', %s) {where} "
                f"{f'LIMIT {int(sample)}' if sample else ''}) c, to_tsquery('english', %s) q "
                f"ORDER BY s DESC, id LIMIT {int(k)}",
                [picking, *args, _ts_query(terms)],
            ).fetchall()
            if len(rows) >= k:
                break
        records = self.records([r[0] for r in rows])
        return [(records[i], float(s)) for i, s in rows if i in records]

    def similarities(self, vector: Sequence[float], chunk_ids: Sequence[int]) -> dict[int, float]:
        """Cosine similarity between ``vector`` and stored chunks, by internal chunk id."""
        if not chunk_ids:
            return {}
        rows = (
            self._db()
            .execute(
                "SELECT id, embedding <=> %s FROM chunks WHERE id = ANY(%s)",
                (_query_vector(vector), [int(c) for c in chunk_ids]),
            )
            .fetchall()
        )
        return {int(i): _cosine(d) for i, d in rows}

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors of chunks, in order.

        Raises:
            KeyError: a chunk id is not stored.
        """
        rows = (
            self._db()
            .execute(
                "SELECT id, embedding FROM chunks WHERE id = ANY(%s)",
                ([int(c) for c in chunk_ids],),
            )
            .fetchall()
        )
        found = {int(i): v.to_numpy() for i, v in rows}
        if not chunk_ids:
            return np.zeros((0, self._meta.dimension), dtype="float32")
        return np.asarray([found[int(c)] for c in chunk_ids], dtype="float32")

    def get_by_ids(
        self, ids: Sequence[str], within: frozenset[str] | None = None
    ) -> list[Document]:
        """Stored chunks by chunk id, in the order asked (unknown ids are skipped).

        ``within``: only chunks of these collections (others are skipped like unknown ones).
        """
        if not ids:
            return []
        where, args = "", list[Any]()
        if within is not None:
            where, args = "AND c.collection = ANY(%s)", [sorted(within)]
        rows = (
            self._db()
            .execute(_RECORD_SELECT + f" WHERE c.chunk_id = ANY(%s) {where}", [list(ids), *args])
            .fetchall()
        )
        by_id = {r.chunk_id: r.to_document() for r in map(_record, rows)}
        return [by_id[i] for i in ids if i in by_id]


def _documents(
    db: psycopg.Connection[TupleRow], within: frozenset[str] | None, *, scanned: bool
) -> list[DocumentInfo]:
    """The documents (of the collections ``within``; None: all), oldest first."""
    if within is not None and not within:
        return []
    where, args = "", list[Any]()
    if within is not None:
        where, args = "WHERE collection = ANY(%s)", [sorted(within)]
    docs = db.execute(
        "SELECT doc_id, kind, pages, chunks, ingested_at, collection, pii FROM documents "
        # Same second: in the order they were stored, which their first source's row
        # number keeps (the schema has no such column of its own).
        f"{where} ORDER BY ingested_at, "
        "(SELECT min(s.seq) FROM sources s WHERE s.doc_id = documents.doc_id), doc_id",
        args,
    ).fetchall()
    if not docs:
        return []
    sources: dict[str, list[str]] = {}
    titles: dict[str, list[str]] = {}
    source_where = "" if within is None else "WHERE d.collection = ANY(%s)"
    for path, doc_id, title in db.execute(
        "SELECT s.path, s.doc_id, s.title FROM sources s JOIN documents d USING (doc_id) "
        f"{source_where} ORDER BY s.added_at, s.seq",
        args,
    ):
        sources.setdefault(doc_id, []).append(path)
        titles.setdefault(doc_id, []).append(title or Path(path).name)
    partial: dict[str, str] = dict(
        db.execute("SELECT doc_id, source FROM partial_documents").fetchall()
    )
    for doc_id, path in partial.items():
        # A partial new version of a file is listed under the file's path, which still names
        # the complete old version until the new one is complete.
        if doc_id not in sources:
            sources[doc_id] = [path]
            titles[doc_id] = [Path(path).name]
    flagged: dict[str, int] = {}
    if scanned:
        flagged = dict(
            db.execute(
                "SELECT doc_id, count(*) FROM chunks WHERE flags <> '' GROUP BY doc_id"
            ).fetchall()
        )
    return [
        DocumentInfo(
            id=doc_id,
            kind=kind,
            sources=sources.get(doc_id, []),
            titles=titles.get(doc_id, []),
            pages=pages,
            chunks=chunks,
            ingested_at=ingested_at,
            complete=doc_id not in partial,
            pii={k: int(n) for k, n in (pii or {}).items()} if scanned else None,
            flagged=int(flagged.get(doc_id, 0)),
            collection=collection,
        )
        for doc_id, kind, pages, chunks, ingested_at, collection, pii in docs
    ]


class PostgresWriter:
    """Changes inside one write transaction; built by ``PostgresStore.writer()``."""

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[TupleRow], meta: _Meta):
        self.store = store
        self.conn = conn
        self.dimension = int(meta.dimension)
        self.changed = False
        self.scanning = False
        self._scanned_with: str | None = meta.scanner_version

    # -- scanning -----------------------------------------------------------------------

    def prepare_scan(self) -> None:
        """Scan every chunk again when the store's scanner is not the one the index had.

        A writer without a scanner leaves its chunks unscanned, so the index stops claiming
        to be scanned (published only with the writer's other changes, as with a folder).
        """
        scanner = self.store.scanner
        if scanner is None:
            if self._scanned_with is not None:
                self.conn.execute("UPDATE meta SET scanner_version = NULL")
            return
        self.scanning = True
        if self._scanned_with == scanner.version:
            return
        self.conn.execute("UPDATE chunks SET flags = '' WHERE flags <> ''")
        self.conn.execute("UPDATE documents SET pii = NULL")
        total = 0
        pii: dict[str, dict[str, int]] = {}
        flags: list[tuple[str, int]] = []
        with self.conn.cursor(name="rescan") as cursor:
            cursor.execute("SELECT id, doc_id, text, heading FROM chunks")
            while batch := cursor.fetchmany(1024):
                for cid, doc_id, text, heading in batch:
                    found = scanner(scan.scan_text(text, heading))
                    if found.flags:
                        flags.append((",".join(found.flags), cid))
                    _add_pii(pii.setdefault(doc_id, {}), found)
                total += len(batch)
        with self.conn.cursor() as cur:
            cur.executemany("UPDATE chunks SET flags = %s WHERE id = %s", flags)
            cur.executemany(
                "UPDATE documents SET pii = %s WHERE doc_id = %s",
                [(json.dumps(counts), doc_id) for doc_id, counts in pii.items() if counts],
            )
        self.conn.execute("UPDATE meta SET scanner_version = %s", (scanner.version,))
        self._scanned_with = scanner.version
        self.changed = True
        logger.info("scanned %d stored chunks for injected instructions and personal data", total)

    # -- queries inside the transaction -------------------------------------------------

    def _one(self, query: str, args: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(query, args).fetchone()
        return row[0] if row else None

    def source_document(self, path: str) -> str | None:
        """The document id a source path currently points at."""
        found = self._one("SELECT doc_id FROM sources WHERE path = %s", (path,))
        return str(found) if found is not None else None

    def has_document(self, doc_id: str) -> bool:
        """Whether a document with this content is stored."""
        return self._one("SELECT 1 FROM documents WHERE doc_id = %s", (doc_id,)) is not None

    def sources(self) -> dict[str, str]:
        """Every source path with its document id."""
        return dict(self.conn.execute("SELECT path, doc_id FROM sources").fetchall())

    def document_sources(self, doc_id: str) -> list[tuple[str, str | None]]:
        """(path, title) of each source of a document, oldest first."""
        rows = self.conn.execute(
            "SELECT path, title FROM sources WHERE doc_id = %s ORDER BY added_at, seq", (doc_id,)
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def chunk_ids(self, doc_id: str) -> list[str]:
        """Chunk ids of a document in order."""
        rows = self.conn.execute(
            "SELECT chunk_id FROM chunks WHERE doc_id = %s ORDER BY seq", (doc_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def doc_ids_of_chunks(self, chunk_ids: Sequence[str]) -> list[str]:
        """Documents owning the given chunk ids."""
        rows = self.conn.execute(
            "SELECT DISTINCT doc_id FROM chunks WHERE chunk_id = ANY(%s)", (list(chunk_ids),)
        ).fetchall()
        return [r[0] for r in rows]

    def documents(self, within: frozenset[str] | None = None) -> list[DocumentInfo]:
        """Documents as this transaction sees them (of the collections ``within``)."""
        return _documents(self.conn, within, scanned=self._scanned_with is not None)

    def collection_of(self, doc_id: str) -> str:
        """The collection a stored document is in."""
        found = self._one("SELECT collection FROM documents WHERE doc_id = %s", (doc_id,))
        return str(found) if found is not None else collections.DEFAULT_COLLECTION

    def partial_chunks(self, doc_id: str) -> int | None:
        """How many chunks of a partial document are stored; None unless it is partial."""
        found = self._one("SELECT chunks_done FROM partial_documents WHERE doc_id = %s", (doc_id,))
        return int(found) if found is not None else None

    def partial_documents(self) -> dict[str, tuple[str, int]]:
        """doc_id -> (source path, chunks stored) of every partial document."""
        rows = self.conn.execute("SELECT doc_id, source, chunks_done FROM partial_documents")
        return {doc_id: (source, int(done)) for doc_id, source, done in rows.fetchall()}

    # -- changes ------------------------------------------------------------------------

    def add_document(
        self,
        doc_id: str,
        *,
        kind: str,
        pages: int | None,
        source: str,
        chunks: Sequence[NewChunk],
        vectors: np.ndarray,
        title: str | None = None,
        complete: bool = True,
        collection: str = collections.DEFAULT_COLLECTION,
    ) -> None:
        """Store a new document with its chunks and their vectors, in ``collection``.

        With ``complete=False`` only its first chunks are given; more follow with
        ``append_chunks``. Such a partial document is listed under ``source`` at once,
        unless that path still names a complete document (an older version of the file),
        which then stays until the new one is complete.
        """
        if self.has_document(doc_id):
            raise ValueError(f"document {doc_id} is already stored")
        vectors = self._check_vectors(chunks, vectors)
        self.conn.execute(
            "INSERT INTO documents (doc_id, kind, pages, chunks, ingested_at, collection) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (doc_id, kind, pages, len(chunks), _now(), collection),
        )
        self._insert_chunks(doc_id, collection, 0, chunks, vectors)
        if complete:
            self.add_source(source, doc_id, title)
        else:
            self.conn.execute(
                "INSERT INTO partial_documents VALUES (%s, %s, %s)", (doc_id, source, len(chunks))
            )
            current = self.source_document(source)
            if current is None or self.partial_chunks(current) is not None:
                self.add_source(source, doc_id, title)  # replaces an older partial version
        self.changed = True

    def append_chunks(
        self,
        doc_id: str,
        chunks: Sequence[NewChunk],
        vectors: np.ndarray,
        *,
        complete: bool,
    ) -> None:
        """Add the next chunks of a partial document; ``complete`` when they are its last.

        Completing a document points its source path at it (replacing, and deleting when no
        other path names it, the version the path named before).
        """
        done = self.partial_chunks(doc_id)
        if done is None:
            raise ValueError(f"document {doc_id} is not a partial document")
        vectors = self._check_vectors(chunks, vectors)
        self._insert_chunks(doc_id, self.collection_of(doc_id), done, chunks, vectors)
        total = done + len(chunks)
        self.conn.execute("UPDATE documents SET chunks = %s WHERE doc_id = %s", (total, doc_id))
        if complete:
            source = self._one(
                "DELETE FROM partial_documents WHERE doc_id = %s RETURNING source", (doc_id,)
            )
            if self.source_document(source) != doc_id:
                self.add_source(source, doc_id)
        else:
            self.conn.execute(
                "UPDATE partial_documents SET chunks_done = %s WHERE doc_id = %s", (total, doc_id)
            )
        self.changed = True

    def _check_vectors(self, chunks: Sequence[Any], vectors: np.ndarray) -> np.ndarray:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.asarray(vectors, dtype="float32")
        if len(chunks) and (vectors.ndim != 2 or vectors.shape[1] != self.dimension):
            raise ValueError(f"vectors must have shape (n, {self.dimension})")
        return _normalised(vectors) if len(chunks) else vectors

    def _insert_chunks(
        self,
        doc_id: str,
        collection: str,
        first_seq: int,
        chunks: Sequence[NewChunk],
        vectors: np.ndarray,
    ) -> None:
        """Chunk rows numbered from ``first_seq`` with their vectors and scans."""
        if not chunks:
            return
        scanner = self.store.scanner if self.scanning else None
        scans = [
            (c.scan or scanner(scan.scan_text(c.text, c.heading))) if scanner else None
            for c in chunks
        ]
        rows = [
            (
                c.text, c.page, c.heading, c.offset,
                ",".join(s.flags) if s is not None else "",
                vector,
            )
            for c, s, vector in zip(chunks, scans, vectors, strict=True)
        ]  # fmt: skip
        self._copy_chunks(doc_id, collection, first_seq, rows)
        if scanner is not None:
            found: dict[str, int] = {}
            for s in scans:
                if s is not None:
                    _add_pii(found, s)
            if found:
                self._add_document_pii(doc_id, found)

    def _copy_chunks(
        self,
        doc_id: str,
        collection: str,
        first_seq: int,
        rows: Sequence[tuple[str, int | None, str | None, int, str, np.ndarray]],
    ) -> None:
        """COPY chunk rows (text, page, heading, offset, flags, normalised vector)."""
        ids = [
            r[0]
            for r in self.conn.execute(
                "SELECT nextval('chunk_ids') FROM generate_series(1, %s)", (len(rows),)
            ).fetchall()
        ]
        with self.conn.cursor() as cur, cur.copy(_COPY_CHUNKS) as copy:
            copy.set_types(_COPY_TYPES)
            for seq, (cid, (text, page, heading, offset, flags, vector)) in enumerate(
                zip(ids, rows, strict=True), first_seq
            ):
                copy.write_row(
                    (
                        cid, f"{doc_id[:16]}-{seq:05d}", doc_id, seq, text, page, heading,
                        offset, collection, flags, Vector(vector),
                    )
                )  # fmt: skip

    def _add_document_pii(self, doc_id: str, found: dict[str, int]) -> None:
        current = self._one("SELECT pii FROM documents WHERE doc_id = %s", (doc_id,)) or {}
        for kind, n in found.items():
            current[kind] = int(current.get(kind, 0)) + n
        self.conn.execute(
            "UPDATE documents SET pii = %s WHERE doc_id = %s", (json.dumps(current), doc_id)
        )

    def add_source(self, path: str, doc_id: str, title: str | None = None) -> None:
        """Point a source path at a stored document (replacing what it pointed at).

        ``title`` is the name to show for it (an upload's original file name).
        """
        old = self.source_document(path)
        if old == doc_id:
            current = self._one("SELECT title FROM sources WHERE path = %s", (path,))
            if title is not None and title != current:
                self.conn.execute("UPDATE sources SET title = %s WHERE path = %s", (title, path))
                self.changed = True
            return
        if old is not None:
            self.remove_source(path)
        self.conn.execute(
            "INSERT INTO sources (path, doc_id, added_at, title) VALUES (%s, %s, %s, %s)",
            (path, doc_id, _now(), title),
        )
        self.changed = True

    def remove_source(self, path: str) -> str | None:
        """Forget a source path; its document goes too when no other path names it.

        Returns:
            The id of the document deleted with it, if any.
        """
        doc_id = self._one("DELETE FROM sources WHERE path = %s RETURNING doc_id", (path,))
        if doc_id is None:
            return None
        self.changed = True
        if self._one("SELECT 1 FROM sources WHERE doc_id = %s LIMIT 1", (doc_id,)) is None:
            self.delete_document(doc_id)
            return str(doc_id)
        return None

    def delete_document(self, doc_id: str) -> None:
        """Remove a document, all its sources, chunks and vectors."""
        self.conn.execute("DELETE FROM documents WHERE doc_id = %s", (doc_id,))
        self.changed = True

    # -- migration ----------------------------------------------------------------------

    def copy_document(
        self,
        doc: DocumentInfo,
        chunks: Sequence[ChunkRecord],
        vectors: np.ndarray,
        *,
        partial_source: str | None = None,
        sources: Sequence[tuple[str, str | None]] = (),
    ) -> None:
        """Store a document exactly as another index holds it (no embedding, no scanning).

        ``chunks`` are its chunks in order with their stored ``vectors``; ``sources`` the
        (path, title) rows naming it, oldest first; ``partial_source`` the file a partial
        document comes from. Its ingestion time, chunk ids, flags and personal-data counts
        are kept.
        """
        vectors = self._check_vectors(chunks, vectors)
        pii = json.dumps(doc.pii) if doc.pii else None
        self.conn.execute(
            "INSERT INTO documents (doc_id, kind, pages, chunks, ingested_at, collection, pii) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (doc.id, doc.kind, doc.pages, len(chunks), doc.ingested_at, doc.collection, pii),
        )
        rows = [
            (c.text, c.page, c.heading, c.offset, ",".join(c.flags), v)
            for c, v in zip(chunks, vectors, strict=True)
        ]
        self._copy_chunks(doc.id, doc.collection, 0, rows)
        if partial_source is not None:
            self.conn.execute(
                "INSERT INTO partial_documents VALUES (%s, %s, %s)",
                (doc.id, partial_source, len(chunks)),
            )
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sources (path, doc_id, added_at, title) VALUES (%s, %s, %s, %s)",
                [(path, doc.id, doc.ingested_at, title) for path, title in sources],
            )
        self.changed = True

    @contextlib.contextmanager
    def bulk_load(self, scanned_with: str | None) -> Iterator[None]:
        """Load many chunks at once: the HNSW index is built once at the end.

        ``scanned_with`` is the scanner version the copied scan results come from (None:
        not scanned). Only into an empty index.
        """
        self.conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
        self.conn.execute("DROP INDEX IF EXISTS chunks_embedding")
        yield
        started = time.perf_counter()
        self.conn.execute(_VECTOR_INDEX)
        logger.info("built the HNSW index in %.1f s", time.perf_counter() - started)
        self.conn.execute("UPDATE meta SET scanner_version = %s", (scanned_with,))
        self._scanned_with = scanned_with

    # -- ending -------------------------------------------------------------------------

    def publish(self) -> int:
        """Count the publish in ``meta`` (the commit follows); the new generation number."""
        return int(
            self._one(
                "UPDATE meta SET generation = generation + 1, published_at = %s "
                "RETURNING generation",
                (_now(),),
            )
        )


def _add_pii(into: dict[str, int], found: ChunkScan) -> None:
    for kind, n in found.pii:
        into[kind] = into.get(kind, 0) + int(n)


@dataclass(frozen=True)
class PostgresStatus:
    """The state of a Postgres index, for ``ragchat index status``."""

    url: str  # without the password
    schema: str
    generation: str
    published_at: str
    embedding_model: str
    dimension: int
    documents: int
    chunks: int
    disk_bytes: int  # tables with their indexes and TOAST
    tables: dict[str, int]  # table -> bytes (with its indexes)
    server: str  # the Postgres and pgvector versions

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat index status --json`` prints."""
        return {"backend": "postgres", **self.__dict__}


@dataclass(frozen=True)
class PostgresRepair:
    """What ``ragchat index repair`` says about a Postgres index: there is nothing to do."""

    generation: str
    reason: str


_NOTHING_TO_REPAIR = (
    "every write is one Postgres transaction: an interrupted ingestion rolled back and left "
    "nothing behind, and readers only ever see committed writes"
)


class PostgresStore(ViewStore):
    """The ragchat index in a Postgres database, shared by every process that opens it.

    Thread-safe: readers and writers take connections from one pool (opened at first
    use, closed by ``close()`` and opened again when next needed).
    """

    def __init__(
        self,
        url: str,
        embeddings: Embeddings,
        *,
        model_id: str,
        dimension: int | None = None,
        lock_timeout_s: float = 600.0,
        scanner: scan.Scanner | None = None,
        schema: str = "ragchat",
        pool_size: int = 8,
        connect_timeout_s: float = 15.0,
        ef_search: int = 100,
    ) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("url must start with postgresql:// or postgres://")
        if not model_id:
            raise ValueError("model_id must name the embedding model")
        if lock_timeout_s < 0:
            raise ValueError("lock_timeout_s must be >= 0")
        if not _IDENTIFIER.match(schema):
            raise ValueError("schema must be a lower-case SQL identifier")
        if pool_size < 1 or ef_search < 1:
            raise ValueError("pool_size and ef_search must be at least 1")
        self.url = url
        self.label = redacted(url)
        self.schema = schema
        self._embeddings = embeddings
        self.model_id = model_id
        self._dimension = dimension
        self.lock_timeout_s = lock_timeout_s
        self.scanner = scanner
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self.ef_search = ef_search
        digest = hashlib.sha256(f"ragchat-writer:{schema}".encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], "big", signed=True)
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[TupleRow]] | None = None
        self._pool_lock = threading.Lock()
        self._typed: weakref.WeakSet[psycopg.Connection[TupleRow]] = weakref.WeakSet()
        self._shares: tuple[float, dict[str, float]] | None = None

    # -- connections --------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        """Vector size of the configured embedding model (embeds a probe once if unknown)."""
        if self._dimension is None:
            self._dimension = len(self._embeddings.embed_query("dimension probe"))
        return self._dimension

    def _configure(self, conn: psycopg.Connection[TupleRow]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema)))

    def _get_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[TupleRow]]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    kwargs={"autocommit": True},
                    configure=self._configure,
                    check=psycopg_pool.ConnectionPool.check_connection,
                    timeout=self.connect_timeout_s,
                    name=f"ragchat-{self.schema}",
                    open=True,
                )
            return self._pool

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[TupleRow]]:
        try:
            with self._get_pool().connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise IndexCorruptError(
                self.label,
                f"no connection to Postgres within {self.connect_timeout_s:.0f}s: {_reason(exc)}",
            ) from exc

    def picking_queries(
        self, db: psycopg.Connection[TupleRow], terms: list[str]
    ) -> list[tuple[str, int | None]]:
        """The tsqueries whose matches a keyword search ranks, to try in turn (see the view).

        Each comes with how many of its chunks to rank (None: all). Terms whose lexemes
        Postgres's statistics (``pg_stats.most_common_elems`` of the ``tsv`` column, kept by
        ANALYZE) show in more than ``COMMON_SHARE`` of the chunks are left out of the first;
        when all are, the chunks holding all of them are tried first, then those holding
        the rarest, only ``SAMPLE_ROWS`` of them ranked (at 100k chunks ranking every chunk
        of a word in 5-50% of them made such a query's p95 140 ms). Stopwords are left
        out: none left, no query.
        """
        shares = self._lexeme_shares(db)
        found = db.execute(
            "SELECT t, array(SELECT lexeme FROM unnest(to_tsvector('english', t))) "
            "FROM unnest(%s::text[]) AS t",
            (terms,),
        ).fetchall()
        share = {t: max(shares.get(x, 0.0) for x in lexemes) for t, lexemes in found if lexemes}
        rare = [t for t in terms if t in share and share[t] <= COMMON_SHARE]
        if rare or not share:
            return [(_ts_query(rare), None)] if rare else []
        common = [t for t in terms if t in share]
        rarest = min(common, key=lambda t: share[t])
        sample = SAMPLE_ROWS  # ranking all of a common word's chunks reads much of the table
        if len(common) == 1:
            return [(rarest, sample)]
        return [(" & ".join(common), sample), (rarest, sample)]

    def _lexeme_shares(self, db: psycopg.Connection[TupleRow]) -> dict[str, float]:
        """Lexeme -> share of chunks holding it, for the most common ones (cached a while)."""
        cached = self._shares
        if cached is not None and time.monotonic() - cached[0] < _SHARES_TTL_S:
            return cached[1]
        row = db.execute(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
            "WHERE schemaname = %s AND tablename = 'chunks' AND attname = 'tsv'",
            (self.schema,),
        ).fetchone()
        shares: dict[str, float] = {}
        if row and row[0]:
            shares = dict(zip(row[0], row[1], strict=False))  # freqs end with 3 summary values
        self._shares = (time.monotonic(), shares)
        return shares

    def _types(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Teach this connection the ``vector`` type (once the extension exists)."""
        if conn not in self._typed:
            register_vector(conn)
            self._typed.add(conn)

    def close(self) -> None:
        """Close the connection pool (it is opened again when the store is next used)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- reading ------------------------------------------------------------------------

    def _meta(self, conn: psycopg.Connection[TupleRow]) -> _Meta | None:
        """The ``meta`` row, checked against our model; None when nothing was published."""
        if not self._has_meta(conn):
            return None
        row = conn.execute(
            "SELECT schema_version, embedding_model, dimension, generation, published_at, "
            "scanner_version FROM meta"
        ).fetchone()
        if row is None:
            return None
        meta = _Meta(*row)
        if meta.schema_version != SCHEMA_VERSION:
            raise IndexCorruptError(
                self.label,
                f"schema {self.schema} has version {meta.schema_version}, this ragchat reads "
                f"{SCHEMA_VERSION}",
            )
        dim = self._dimension if self._dimension is not None else meta.dimension
        if meta.embedding_model != self.model_id or meta.dimension != dim:
            raise IndexMismatchError(
                expected_model=self.model_id,
                found_model=meta.embedding_model,
                expected_dim=dim,
                found_dim=meta.dimension,
            )
        return meta

    def _has_meta(self, conn: psycopg.Connection[TupleRow]) -> bool:
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{self.schema}.meta",))
        row = found.fetchone()
        return bool(row and row[0])

    @contextlib.contextmanager
    def reader(self) -> Iterator[PostgresView]:
        """A read view: one REPEATABLE READ snapshot for the whole block.

        Raises:
            IndexNotFoundError: nothing has been published yet.
            IndexCorruptError: Postgres cannot be reached.
        """
        with self._connection() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            try:
                with conn.transaction():
                    meta = self._meta(conn)
                    if meta is None:
                        raise IndexNotFoundError(self.label)
                    self._types(conn)
                    view = PostgresView(self, conn, meta)
                    try:
                        yield view
                    finally:
                        view.close()
            except psycopg.OperationalError as exc:
                raise IndexCorruptError(self.label, f"Postgres: {_reason(exc)}") from exc

    def exists(self) -> bool:
        """Whether anything has been published in the schema."""
        with self._connection() as conn:
            try:
                conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
                conn.read_only = True
                with conn.transaction():
                    if not self._has_meta(conn):
                        return False
                    return conn.execute("SELECT 1 FROM meta").fetchone() is not None
            except psycopg.OperationalError as exc:
                raise IndexCorruptError(self.label, f"Postgres: {_reason(exc)}") from exc

    def snapshot(self) -> Manifest:
        """Read the index now, so an unreachable or missing one fails early; its manifest."""
        with self.reader() as view:
            return view.manifest

    def manifest(self) -> Manifest:
        """What the index was built with, and its counts."""
        return self.snapshot()

    def exact_search(
        self, vector: Sequence[float], k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The true ``k`` nearest chunks, comparing every vector; see ``PostgresView``."""
        with self.reader() as view:
            return view.exact_search(vector, k, within)

    def status(self) -> PostgresStatus:
        """Counts, model, table sizes and server versions of the index."""
        with self.reader() as view:
            manifest = view.manifest
            db = view._db()
            rows = db.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname",
                (self.schema,),
            ).fetchall()
            version = db.execute(
                "SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
            ).fetchone()
        tables = {str(name): int(size) for name, size in rows}
        return PostgresStatus(
            url=self.label,
            schema=self.schema,
            generation=f"g{manifest.generation:06d}",
            published_at=manifest.published_at,
            embedding_model=manifest.embedding_model,
            dimension=manifest.dimension,
            documents=manifest.documents,
            chunks=manifest.chunks,
            disk_bytes=sum(tables.values()),
            tables=tables,
            server=f"PostgreSQL {version[0]}, pgvector {version[1]}" if version else "",
        )

    def repair(self) -> PostgresRepair:
        """Nothing to repair in Postgres (see ``_NOTHING_TO_REPAIR``); checks it is readable.

        Raises:
            IndexNotFoundError: nothing has been published yet.
            IndexMismatchError: the index was built with another embedding model.
        """
        with self.reader() as view:
            return PostgresRepair(generation=view.generation, reason=_NOTHING_TO_REPAIR)

    # -- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, on_wait: Callable[[float], None] | None = None) -> Iterator[PostgresWriter]:
        """A write transaction: committed (published) when the block ends without error.

        A second writer, in this process or on another machine, waits for the first to
        commit, for up to ``lock_timeout_s``.

        Args:
            on_wait: called about once a second, with the seconds waited so far, while
                another writer holds the lock.

        Raises:
            IndexLockedError: another writer held the lock for ``lock_timeout_s``.
            IndexMismatchError: the index was built with another embedding model.
            IndexUnwritableError: Postgres refused or lost the write; nothing was published.
        """
        with self._connection() as conn:
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            conn.read_only = False
            generation = None
            try:
                with conn.transaction():
                    self._acquire(conn, on_wait)
                    meta = self._meta(conn) or self._create(conn)
                    self._types(conn)
                    writer = PostgresWriter(self, conn, meta)
                    writer.prepare_scan()
                    yield writer
                    if not writer.changed:
                        raise psycopg.Rollback
                    generation = writer.publish()
            except psycopg.OperationalError as exc:
                raise IndexUnwritableError(
                    self.label,
                    f"Postgres: {_reason(exc)}; nothing was published, the index is as it was",
                ) from exc
            if generation is not None:
                logger.info("published index generation g%06d to %s", generation, self.label)

    def _acquire(
        self, conn: psycopg.Connection[TupleRow], on_wait: Callable[[float], None] | None
    ) -> None:
        """Take the writer lock (released by the transaction's end, or its connection's)."""
        started = time.monotonic()
        next_report = 1.0
        while True:
            got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (self._lock_key,)).fetchone()
            if got and got[0]:
                return
            waited = time.monotonic() - started
            if waited >= self.lock_timeout_s:
                raise IndexLockedError(self.label, waited)
            if on_wait is not None and waited >= next_report:
                on_wait(waited)
                next_report = waited + 1.0
            time.sleep(min(0.1, self.lock_timeout_s - waited))

    def _create(self, conn: psycopg.Connection[TupleRow]) -> _Meta:
        """Create the schema, its tables and the ``meta`` row (under the writer lock)."""
        found = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if found is None:
            # One creator of the extension per database, whatever the schema.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_EXTENSION_LOCK,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        for statement in _TABLES.format(dim=int(self.dimension)).split(";\n"):
            if statement.strip():
                conn.execute(sql.SQL(statement))
        conn.execute(_VECTOR_INDEX)
        conn.execute(
            "INSERT INTO meta VALUES (1, %s, %s, %s, 0, '', NULL)",
            (SCHEMA_VERSION, self.model_id, self.dimension),
        )
        logger.info("created the index tables in schema %s of %s", self.schema, self.label)
        meta = self._meta(conn)
        assert meta is not None
        return meta

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> PostgresStore:
        """Build a store at ``url`` (a required keyword argument) from texts."""
        url = kwargs.pop("url", None)
        if url is None:
            raise ValueError("from_texts needs url=")
        store = cls(url, embedding, model_id=kwargs.pop("model_id", "custom"), **kwargs)
        store.add_texts(texts, metadatas)
        return store
