"""The document index: FAISS for vectors, SQLite for chunk text and metadata.

Layout of an index folder::

    CURRENT            name of the published generation, replaced atomically
    g000007/           one immutable generation
        manifest.json  embedding model, dimension, format version, counts
        vectors.faiss  faiss.IndexIDMap2(IndexFlatIP) over normalised vectors
        meta.sqlite    documents, their sources and their chunks
    writer.lock        held (flock) by the one process writing

A writer copies the published generation into a new folder, changes it and publishes it
by renaming ``CURRENT``; a crash at any moment leaves ``CURRENT`` on the old generation,
whose files are never modified. Readers only open published generations, so they never
see a half-written index. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from rag.errors import (
    DocumentNotFoundError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexUnwritableError,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
META = "meta.sqlite"
LOCK = "writer.lock"
_GEN = re.compile(r"^g(\d{6,})$")

_SCHEMA = """
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    pages INTEGER,
    chunks INTEGER NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE TABLE sources (
    path TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id),
    added_at TEXT NOT NULL,
    title TEXT
);
CREATE INDEX sources_doc ON sources(doc_id);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id),
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    heading TEXT,
    char_offset INTEGER NOT NULL
);
CREATE INDEX chunks_doc ON chunks(doc_id);
-- The keyword (BM25) index: SQLite FTS5 over the chunks, kept in step by triggers, so it
-- is updated incrementally and published atomically with the rest of the generation.
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, heading, content='chunks', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, heading) VALUES (new.id, new.text, new.heading);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading)
    VALUES ('delete', old.id, old.text, old.heading);
END;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('next_id', 1);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ChunkRecord:
    """One stored chunk with everything a citation needs."""

    id: int
    chunk_id: str
    doc_id: str
    text: str
    page: int | None
    heading: str | None
    offset: int
    source: str
    title: str | None = None

    @property
    def name(self) -> str:
        """What to call the source: its title (e.g. an upload's original name) or file name."""
        return self.title or Path(self.source).name or self.source

    def to_document(self, score: float | None = None) -> Document:
        """As a langchain Document; metadata carries source, page, chunk id and score."""
        metadata: dict[str, Any] = {
            "source": self.source,
            "title": self.name,
            "page": self.page,
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "heading": self.heading,
            "offset": self.offset,
        }
        if score is not None:
            metadata["score"] = score
        return Document(page_content=self.text, metadata=metadata, id=self.chunk_id)


@dataclass(frozen=True)
class DocumentInfo:
    """An indexed document: one content, possibly under several file names."""

    id: str
    kind: str
    sources: list[str]
    pages: int | None
    chunks: int
    ingested_at: str
    titles: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Display name: the first source's title or file name."""
        if self.titles:
            return self.titles[0]
        return Path(self.sources[0]).name if self.sources else self.id[:12]

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat docs list --json`` prints."""
        return {
            "id": self.id,
            "sources": self.sources,
            "pages": self.pages,
            "chunks": self.chunks,
            "ingested_at": self.ingested_at,
        }


@dataclass(frozen=True)
class NewChunk:
    """A chunk to store: its text and where it comes from in the document."""

    text: str
    page: int | None = None
    heading: str | None = None
    offset: int = 0


@dataclass(frozen=True)
class Manifest:
    """What an index was built with."""

    embedding_model: str
    dimension: int
    format_version: int = FORMAT_VERSION
    generation: int = 0
    documents: int = 0
    chunks: int = 0
    published_at: str = ""

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Load and check a manifest file."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def write(self, path: Path) -> None:
        """Write the manifest as JSON."""
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n", encoding="utf-8")


_CHUNK_SELECT = """
SELECT c.id, c.chunk_id, c.doc_id, c.text, c.page, c.heading, c.char_offset, s.path, s.title
FROM chunks c
JOIN sources s ON s.rowid = (
    SELECT s2.rowid FROM sources s2 WHERE s2.doc_id = c.doc_id
    ORDER BY s2.added_at, s2.rowid LIMIT 1
)
"""


def _documents(db: sqlite3.Connection) -> list[DocumentInfo]:
    sources: dict[str, list[str]] = {}
    titles: dict[str, list[str]] = {}
    for path, doc_id, title in db.execute(
        "SELECT path, doc_id, title FROM sources ORDER BY added_at, rowid"
    ):
        sources.setdefault(doc_id, []).append(path)
        titles.setdefault(doc_id, []).append(title or Path(path).name)
    return [
        DocumentInfo(
            id=doc_id,
            kind=kind,
            sources=sources.get(doc_id, []),
            titles=titles.get(doc_id, []),
            pages=pages,
            chunks=chunks,
            ingested_at=ingested_at,
        )
        for doc_id, kind, pages, chunks, ingested_at in db.execute(
            "SELECT doc_id, kind, pages, chunks, ingested_at FROM documents "
            "ORDER BY ingested_at, doc_id"
        )
    ]


@dataclass
class _Snapshot:
    """A published generation opened for reading."""

    generation: str
    manifest: Manifest
    index: Any
    db: sqlite3.Connection
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        self.db.close()


class FaissStore(VectorStore):
    """The ragchat index, readable by many processes and written by one at a time.

    It offers langchain-core's ``VectorStore`` interface (so ``as_retriever()`` works) and
    an ``IndexWriter`` transaction for the ingestion pipeline.
    """

    def __init__(
        self,
        index_dir: Path,
        embeddings: Embeddings,
        *,
        model_id: str,
        dimension: int | None = None,
        lock_timeout_s: float = 10.0,
    ) -> None:
        if not model_id:
            raise ValueError("model_id must name the embedding model")
        self.index_dir = Path(index_dir)
        self._embeddings = embeddings
        self.model_id = model_id
        self._dimension = dimension
        self.lock_timeout_s = lock_timeout_s
        self._snapshot: _Snapshot | None = None
        self._reload_lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        """The embedding model queries are embedded with."""
        return self._embeddings

    @property
    def dimension(self) -> int:
        """Vector size of the configured embedding model (embeds a probe once if unknown)."""
        if self._dimension is None:
            self._dimension = len(self._embeddings.embed_query("dimension probe"))
        return self._dimension

    def exists(self) -> bool:
        """Whether an index has been published in the folder."""
        return (self.index_dir / CURRENT).is_file()

    def current_generation(self) -> str | None:
        """Name of the published generation, or None before the first ingestion."""
        try:
            name = (self.index_dir / CURRENT).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IndexCorruptError(self.index_dir, f"cannot read {CURRENT}: {exc}") from exc
        if not _GEN.match(name):
            raise IndexCorruptError(self.index_dir, f"{CURRENT} names no generation: {name!r}")
        return name

    def _read_generation(self, gen_dir: Path) -> tuple[Manifest, Any]:
        """Manifest (checked against our model) and FAISS index of a generation.

        Raises:
            FileNotFoundError: the generation vanished (a writer replaced it).
            IndexCorruptError: a file is unreadable.
            IndexMismatchError: it was built with another embedding model.
        """
        try:
            manifest = Manifest.read(gen_dir / MANIFEST)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptError(self.index_dir, f"bad {MANIFEST}: {exc}") from exc
        self.check_manifest(manifest)
        try:
            index = faiss.read_index(str(gen_dir / VECTORS))
        except RuntimeError as exc:
            if not (gen_dir / VECTORS).exists():
                raise FileNotFoundError(gen_dir / VECTORS) from exc
            raise IndexCorruptError(self.index_dir, f"bad {VECTORS}: {exc}") from exc
        if not (gen_dir / META).is_file():
            raise FileNotFoundError(gen_dir / META)
        return manifest, index

    def check_consistent(self, db: sqlite3.Connection, index: Any) -> None:
        """The SQLite side and the FAISS side must hold the same chunks.

        Raises:
            IndexCorruptError: the metadata is unreadable or disagrees with the vectors.
        """
        try:
            (n_chunks,) = db.execute("SELECT COUNT(*) FROM chunks").fetchone()
            db.execute(_CHUNK_SELECT + " LIMIT 0").fetchall()  # the columns we read exist
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(self.index_dir, f"bad {META}: {exc}") from exc
        if n_chunks != index.ntotal:
            raise IndexCorruptError(
                self.index_dir, f"{META} has {n_chunks} chunks but {VECTORS} {index.ntotal}"
            )

    def _open(self, generation: str) -> _Snapshot:
        gen_dir = self.index_dir / generation
        manifest, index = self._read_generation(gen_dir)
        db = sqlite3.connect(
            f"file:{gen_dir / META}?mode=ro&immutable=1", uri=True, check_same_thread=False
        )
        try:
            self.check_consistent(db, index)
        except IndexCorruptError:
            db.close()
            raise
        return _Snapshot(generation=generation, manifest=manifest, index=index, db=db)

    def check_manifest(self, manifest: Manifest) -> None:
        """Refuse an index built with another embedding model or format."""
        if manifest.format_version != FORMAT_VERSION:
            raise IndexCorruptError(
                self.index_dir,
                f"format version {manifest.format_version}, this ragchat reads {FORMAT_VERSION}; "
                "ingest the documents again into a new index folder",
            )
        dim = self._dimension if self._dimension is not None else manifest.dimension
        if manifest.embedding_model != self.model_id or manifest.dimension != dim:
            raise IndexMismatchError(
                expected_model=self.model_id,
                found_model=manifest.embedding_model,
                expected_dim=dim,
                found_dim=manifest.dimension,
            )

    def snapshot(self) -> _Snapshot:
        """The newest published generation, reopened when a writer has published a new one.

        Raises:
            IndexNotFoundError: nothing has been published yet.
        """
        with self._reload_lock:
            for _ in range(5):
                generation = self.current_generation()
                if generation is None:
                    raise IndexNotFoundError(self.index_dir)
                if self._snapshot is not None and self._snapshot.generation == generation:
                    return self._snapshot
                try:
                    snap = self._open(generation)
                except FileNotFoundError:
                    # A writer replaced and removed that generation meanwhile: read again.
                    time.sleep(0.05)
                    continue
                old, self._snapshot = self._snapshot, snap
                if old is not None:
                    old.close()
                logger.debug("opened index generation %s", generation)
                return snap
        raise IndexCorruptError(self.index_dir, f"{CURRENT} names a missing generation")

    def manifest(self) -> Manifest:
        """The manifest of the published generation."""
        return self.snapshot().manifest

    def documents(self) -> list[DocumentInfo]:
        """Every indexed document, oldest first; empty before the first ingestion."""
        if not self.exists():
            return []
        snap = self.snapshot()
        with snap.lock:
            return _documents(snap.db)

    def chunk_count(self) -> int:
        """Number of chunks (and vectors) in the index."""
        if not self.exists():
            return 0
        return int(self.snapshot().index.ntotal)

    def all_chunks(self) -> list[ChunkRecord]:
        """Every stored chunk, in document order (for tests and exports)."""
        if not self.exists():
            return []
        snap = self.snapshot()
        with snap.lock:
            rows = snap.db.execute(_CHUNK_SELECT + " ORDER BY c.doc_id, c.seq").fetchall()
        return [ChunkRecord(*row) for row in rows]

    def search_chunks_by_vector(
        self, vector: Sequence[float], k: int = 4
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks nearest ``vector`` with their cosine similarity, best first."""
        if k < 1:
            raise ValueError("k must be at least 1")
        snap = self.snapshot()
        if snap.index.ntotal == 0:
            return []
        query = np.asarray([vector], dtype="float32")
        faiss.normalize_L2(query)
        scores, ids = snap.index.search(query, min(k, snap.index.ntotal))
        hits = [
            (int(i), min(1.0, max(-1.0, float(s))))
            for i, s in zip(ids[0], scores[0], strict=True)
            if i >= 0
        ]
        records = self._records(snap, [i for i, _ in hits])
        return [(records[i], s) for i, s in hits if i in records]

    def keyword_search(self, query: str, k: int = 4) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks that best match the query's words by BM25 (FTS5), best first.

        The score is FTS5's BM25 with the sign flipped (higher is better); the query's words
        are OR-ed, each quoted, so no user input is read as FTS5 syntax.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        terms = keyword_terms(query)
        if not terms:
            return []
        snap = self.snapshot()
        match = " OR ".join(f'"{t}"' for t in terms)
        with snap.lock:
            rows = snap.db.execute(
                "SELECT rowid, -bm25(chunks_fts, 1.0, ?) AS s FROM chunks_fts "
                "WHERE chunks_fts MATCH ? ORDER BY s DESC LIMIT ?",
                (KEYWORD_HEADING_WEIGHT, match, k),
            ).fetchall()
        records = self._records(snap, [r[0] for r in rows])
        return [(records[i], float(s)) for i, s in rows if i in records]

    def similarities(self, vector: Sequence[float], chunk_ids: Sequence[int]) -> dict[int, float]:
        """Cosine similarity between ``vector`` and stored chunks, by internal chunk id."""
        if not chunk_ids:
            return {}
        snap = self.snapshot()
        query = np.asarray([vector], dtype="float32")
        faiss.normalize_L2(query)
        out = {}
        for cid in chunk_ids:
            stored = snap.index.reconstruct(int(cid))
            out[int(cid)] = min(1.0, max(-1.0, float(np.dot(query[0], stored))))
        return out

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors of chunks, in order."""
        snap = self.snapshot()
        return np.asarray([snap.index.reconstruct(int(c)) for c in chunk_ids], dtype="float32")

    def search_chunks(self, query: str, k: int = 4) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks most similar to ``query``, best first."""
        return self.search_chunks_by_vector(self._embeddings.embed_query(query), k)

    @staticmethod
    def _records(snap: _Snapshot, ids: list[int]) -> dict[int, ChunkRecord]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with snap.lock:
            rows = snap.db.execute(_CHUNK_SELECT + f" WHERE c.id IN ({marks})", ids).fetchall()
        return {row[0]: ChunkRecord(*row) for row in rows}

    # -- langchain-core VectorStore interface -----------------------------------------

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents most similar to ``query`` with cosine similarity."""
        return [(rec.to_document(s), s) for rec, s in self.search_chunks(query, k)]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """Documents most similar to ``query``."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """Documents nearest an embedding."""
        return [rec.to_document(s) for rec, s in self.search_chunks_by_vector(embedding, k)]

    @staticmethod
    def relevance(score: float) -> float:
        """Cosine similarity in [-1, 1] as a relevance in [0, 1]."""
        return (score + 1.0) / 2.0

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self.relevance

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Stored chunks by chunk id (unknown ids are skipped)."""
        if not ids or not self.exists():
            return []
        snap = self.snapshot()
        marks = ",".join("?" * len(ids))
        with snap.lock:
            rows = snap.db.execute(
                _CHUNK_SELECT + f" WHERE c.chunk_id IN ({marks})", list(ids)
            ).fetchall()
        by_id = {row[1]: ChunkRecord(*row).to_document() for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Store each text as a one-chunk document; metadata may give source and page."""
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        if len(metadatas) != len(texts):
            raise ValueError("metadatas must have one entry per text")
        vectors = self._embeddings.embed_documents(texts)
        chunk_ids: list[str] = []
        with self.writer() as writer:
            for text, meta, vector in zip(texts, metadatas, vectors, strict=True):
                doc_id = content_id(text.encode("utf-8"))
                source = str(meta.get("source") or f"text:{doc_id[:12]}")
                if writer.has_document(doc_id):
                    writer.add_source(source, doc_id)
                    chunk_ids.append(writer.chunk_ids(doc_id)[0])
                    continue
                writer.add_document(
                    doc_id,
                    kind=str(meta.get("kind", "text")),
                    pages=None,
                    source=source,
                    chunks=[NewChunk(text=text, page=meta.get("page"))],
                    vectors=np.asarray([vector], dtype="float32"),
                )
                chunk_ids.extend(writer.chunk_ids(doc_id))
        return chunk_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents that own the given chunk ids (all their chunks go)."""
        if not ids:
            return False
        with self.writer() as writer:
            doc_ids = writer.doc_ids_of_chunks(ids)
            for doc_id in doc_ids:
                writer.delete_document(doc_id)
        return bool(doc_ids)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> FaissStore:
        """Build a store in ``index_dir`` (a required keyword argument) from texts."""
        index_dir = kwargs.pop("index_dir", None)
        if index_dir is None:
            raise ValueError("from_texts needs index_dir=")
        store = cls(Path(index_dir), embedding, model_id=kwargs.pop("model_id", "custom"))
        store.add_texts(texts, metadatas)
        return store

    # -- writing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self) -> Iterator[IndexWriter]:
        """A write transaction: published atomically when the block ends without error.

        Raises:
            IndexLockedError: another process held the writer lock for ``lock_timeout_s``.
        """
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise IndexUnwritableError(self.index_dir, exc.strerror or str(exc)) from exc
        try:
            self._acquire(lock_fd)
            writer = IndexWriter(self)
            try:
                yield writer
            except BaseException:
                writer.abort()
                raise
            writer.commit()
        finally:
            os.close(lock_fd)  # closing releases the flock

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IndexLockedError(self.index_dir, self.lock_timeout_s) from None
                time.sleep(0.1)
            else:
                return

    def generations(self) -> list[str]:
        """Generation folders present on disk, oldest first (published or not)."""
        if not self.index_dir.is_dir():
            return []
        names = [p.name for p in self.index_dir.iterdir() if p.is_dir() and _GEN.match(p.name)]
        return sorted(names, key=lambda n: int(n[1:]))

    def find_document(self, key: str) -> str:
        """The document id for an id, a unique id prefix (6+ characters) or a source path.

        Raises:
            DocumentNotFoundError: nothing, or more than one document, matches.
        """
        docs = self.documents()
        path = str(Path(key).expanduser().resolve())
        for doc in docs:
            if doc.id == key or path in doc.sources or key in doc.sources:
                return doc.id
        if len(key) >= 6:
            matches = [d.id for d in docs if d.id.startswith(key)]
            if len(matches) == 1:
                return matches[0]
        raise DocumentNotFoundError(key)


_TERM = re.compile(r"[^\W_]+", re.UNICODE)
_QUERY_STOPWORDS = frozenset(
    """a an and are as at be by can do does for from how i in is it of on or the to was
    what when where which who why with you""".split()
)
KEYWORD_HEADING_WEIGHT = 0.5


def keyword_terms(query: str, limit: int = 32) -> list[str]:
    """The words of a query worth matching (lower-case, no stopwords, no duplicates)."""
    seen: dict[str, None] = {}
    for word in _TERM.findall(query.lower()):
        if word not in _QUERY_STOPWORDS and word not in seen:
            seen[word] = None
    return list(seen)[:limit]


def content_id(data: bytes) -> str:
    """The document id: SHA-256 of the file's bytes."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


class IndexWriter:
    """Changes to one new generation; built by ``FaissStore.writer()`` under the lock."""

    def __init__(self, store: FaissStore) -> None:
        self.store = store
        self.index_dir = store.index_dir
        self._base = store.current_generation()
        self._clean_stale()
        numbers = [int(n[1:]) for n in store.generations()]
        self.generation = f"g{(max(numbers) + 1 if numbers else 1):06d}"
        self.dir = self.index_dir / self.generation
        self.changed = False
        self._removed_ids: list[int] = []
        if self._base is not None:
            base_dir = self.index_dir / self._base
            try:
                manifest, self.index = store._read_generation(base_dir)
            except FileNotFoundError as exc:
                raise IndexCorruptError(self.index_dir, f"{exc.filename} is missing") from exc
            self.dimension = manifest.dimension
            self.dir.mkdir()
            shutil.copyfile(base_dir / META, self.dir / META)
            self.db = sqlite3.connect(self.dir / META)
            try:
                store.check_consistent(self.db, self.index)
            except IndexCorruptError:
                self.abort()
                raise
        else:
            self.dir.mkdir()
            self.dimension = store.dimension
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
            self.db = sqlite3.connect(self.dir / META)
            self.db.executescript(_SCHEMA)
        # The folder is thrown away on failure, so no journal is needed for safety.
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")

    def _clean_stale(self) -> None:
        """Remove generations left by crashed writers and all but one older generation."""
        gens = self.store.generations()
        if self._base is None:
            keep: set[str] = set()
        else:
            base_no = int(self._base[1:])
            older = [g for g in gens if int(g[1:]) < base_no]
            keep = {self._base, *older[-1:]}
        for gen in gens:
            if gen not in keep:
                logger.info("removing stale index generation %s", gen)
                shutil.rmtree(self.index_dir / gen, ignore_errors=True)

    # -- queries inside the transaction ---------------------------------------------

    def source_document(self, path: str) -> str | None:
        """The document id a source path currently points at."""
        row = self.db.execute("SELECT doc_id FROM sources WHERE path = ?", (path,)).fetchone()
        return row[0] if row else None

    def has_document(self, doc_id: str) -> bool:
        """Whether a document with this content is stored."""
        row = self.db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return row is not None

    def sources(self) -> dict[str, str]:
        """Every source path with its document id."""
        return dict(self.db.execute("SELECT path, doc_id FROM sources"))

    def document_sources(self, doc_id: str) -> list[tuple[str, str | None]]:
        """(path, title) of each source of a document, oldest first."""
        rows = self.db.execute(
            "SELECT path, title FROM sources WHERE doc_id = ? ORDER BY added_at, rowid", (doc_id,)
        )
        return [(r[0], r[1]) for r in rows]

    def chunk_ids(self, doc_id: str) -> list[str]:
        """Chunk ids of a document in order."""
        rows = self.db.execute(
            "SELECT chunk_id FROM chunks WHERE doc_id = ? ORDER BY seq", (doc_id,)
        )
        return [r[0] for r in rows]

    def doc_ids_of_chunks(self, chunk_ids: Sequence[str]) -> list[str]:
        """Documents owning the given chunk ids."""
        marks = ",".join("?" * len(chunk_ids))
        rows = self.db.execute(
            f"SELECT DISTINCT doc_id FROM chunks WHERE chunk_id IN ({marks})", list(chunk_ids)
        )
        return [r[0] for r in rows]

    def documents(self) -> list[DocumentInfo]:
        """Documents as this transaction sees them."""
        return _documents(self.db)

    # -- changes ----------------------------------------------------------------------

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
    ) -> None:
        """Store a new document with its chunks and their vectors."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.ascontiguousarray(vectors, dtype="float32")
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors must have shape (n, {self.dimension})")
        if self.has_document(doc_id):
            raise ValueError(f"document {doc_id} is already stored")
        (next_id,) = self.db.execute("SELECT value FROM counters WHERE name='next_id'").fetchone()
        ids = np.arange(next_id, next_id + len(chunks), dtype="int64")
        self.db.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?)",
            (doc_id, kind, pages, len(chunks), _now()),
        )
        self.db.executemany(
            "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    int(i),
                    f"{doc_id[:16]}-{seq:05d}",
                    doc_id,
                    seq,
                    c.text,
                    c.page,
                    c.heading,
                    c.offset,
                )
                for seq, (i, c) in enumerate(zip(ids, chunks, strict=True))
            ],
        )
        self.db.execute(
            "UPDATE counters SET value = ? WHERE name='next_id'", (next_id + len(chunks),)
        )
        self.add_source(source, doc_id, title)
        if len(chunks):
            faiss.normalize_L2(vectors)
            self.index.add_with_ids(vectors, ids)
        self.changed = True

    def add_source(self, path: str, doc_id: str, title: str | None = None) -> None:
        """Point a source path at a stored document (replacing what it pointed at).

        ``title`` is the name to show for it (an upload's original file name).
        """
        old = self.source_document(path)
        if old == doc_id:
            (current,) = self.db.execute(
                "SELECT title FROM sources WHERE path = ?", (path,)
            ).fetchone()
            if title is not None and title != current:
                self.db.execute("UPDATE sources SET title = ? WHERE path = ?", (title, path))
                self.changed = True
            return
        if old is not None:
            self.remove_source(path)
        self.db.execute("INSERT INTO sources VALUES (?, ?, ?, ?)", (path, doc_id, _now(), title))
        self.changed = True

    def remove_source(self, path: str) -> str | None:
        """Forget a source path; its document goes too when no other path names it.

        Returns:
            The id of the document deleted with it, if any.
        """
        doc_id = self.source_document(path)
        if doc_id is None:
            return None
        self.db.execute("DELETE FROM sources WHERE path = ?", (path,))
        self.changed = True
        (left,) = self.db.execute(
            "SELECT COUNT(*) FROM sources WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if left == 0:
            self.delete_document(doc_id)
            return doc_id
        return None

    def delete_document(self, doc_id: str) -> None:
        """Remove a document, all its sources, chunks and vectors."""
        ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        self._removed_ids.extend(ids)
        self.db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        self.db.execute("DELETE FROM sources WHERE doc_id = ?", (doc_id,))
        self.db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        self.changed = True

    # -- ending -----------------------------------------------------------------------

    def commit(self) -> None:
        """Write the generation, make it durable, then publish it with one rename."""
        if not self.changed:
            self.abort()
            return
        if self._removed_ids:
            self.index.remove_ids(np.asarray(self._removed_ids, dtype="int64"))
        self.db.commit()
        (n_docs,) = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()
        (n_chunks,) = self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        self.db.close()
        if n_chunks != self.index.ntotal:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise IndexCorruptError(
                self.index_dir, f"{n_chunks} chunks but {self.index.ntotal} vectors; not published"
            )
        faiss.write_index(self.index, str(self.dir / VECTORS))
        Manifest(
            embedding_model=self.store.model_id,
            dimension=self.dimension,
            generation=int(self.generation[1:]),
            documents=n_docs,
            chunks=n_chunks,
            published_at=_now(),
        ).write(self.dir / MANIFEST)
        for name in (META, VECTORS, MANIFEST):
            _fsync(self.dir / name)
        _fsync(self.dir)
        tmp = self.index_dir / f"{CURRENT}.tmp"
        with tmp.open("w", encoding="ascii") as fh:
            fh.write(self.generation + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.index_dir / CURRENT)
        _fsync(self.index_dir)
        logger.info(
            "published index generation %s: %d documents, %d chunks",
            self.generation,
            n_docs,
            n_chunks,
        )
        self._drop_old()

    def _drop_old(self) -> None:
        """Keep the new generation and the one before it (readers may still have it open)."""
        gens = self.store.generations()
        for gen in gens[:-2]:
            shutil.rmtree(self.index_dir / gen, ignore_errors=True)

    def abort(self) -> None:
        """Throw the unpublished generation away."""
        with contextlib.suppress(sqlite3.ProgrammingError):
            self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)
