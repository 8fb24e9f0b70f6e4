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
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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
from rag.store import collections, scan
from rag.store.scan import ChunkScan

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


# Every file operation a writer performs goes through these module functions: one place
# that touches the disk, and the seams the tests use to fail a step (a full disk, say).


def _copy_file(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


def _connect_writable(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    # immutable=1: no locks and no journal, since a published generation never changes.
    # A connection stays readable after a writer deletes the folder (the inode lives on).
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _write_index(index: Any, path: Path) -> None:
    # Through a Python file object, so a failed write raises OSError with its errno (FAISS's
    # own writer reports errors at close only on stderr).
    with path.open("wb") as fh:
        writer = faiss.PyCallbackIOWriter(fh.write)  # type: ignore[attr-defined]
        faiss.write_index(index, writer)
        fh.flush()
        os.fsync(fh.fileno())


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _publish(index_dir: Path, generation: str) -> None:
    """Point ``CURRENT`` at a generation with one atomic rename (the folder is synced after)."""
    tmp = index_dir / f"{CURRENT}.tmp"
    try:
        _write_text(tmp, generation + "\n")
        _replace(tmp, index_dir / CURRENT)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# SQLite result codes that mean the disk refused a write (full, read-only, gone, failing).
_DISK_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")


def _is_disk_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    name = getattr(exc, "sqlite_errorname", None) or ""
    return isinstance(exc, sqlite3.Error) and name.startswith(_DISK_ERRORS)


def _disk_reason(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text[:1].lower() + text[1:]


REPAIR_HINT = "run `ragchat index repair` to go back to the last intact generation"


def _disk_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += (Path(root) / name).stat().st_size
    return total


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
    flags: tuple[str, ...] = ()  # injection rules that fired on it at ingestion

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
        if self.flags:
            metadata["flags"] = list(self.flags)
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
    # False while only the first ``chunks`` of it are stored (an ingestion was interrupted,
    # or its file failed part way); the next ingestion of the file completes it.
    complete: bool = True
    # Kinds of personal data found with their counts; None: the index was not scanned.
    pii: dict[str, int] | None = None
    flagged: int = 0  # chunks with instruction-like text (see rag.guard.injection)
    collection: str = collections.DEFAULT_COLLECTION

    @property
    def name(self) -> str:
        """Display name: the first source's title or file name."""
        if self.titles:
            return self.titles[0]
        return Path(self.sources[0]).name if self.sources else self.id[:12]

    def guard_note(self) -> str:
        """What the ingestion scan found, in words ('' when nothing)."""
        if self.pii is None:
            return "not scanned for personal data or injected instructions (ingest again)"
        parts = []
        if self.pii:
            found = ", ".join(f"{kind} {n}" for kind, n in sorted(self.pii.items()))
            parts.append(f"personal data: {found}")
        if self.flagged:
            s = "" if self.flagged == 1 else "s"
            parts.append(f"{self.flagged} chunk{s} flagged for instruction-like text")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat docs list --json`` prints."""
        return {
            "id": self.id,
            "sources": self.sources,
            "pages": self.pages,
            "chunks": self.chunks,
            "ingested_at": self.ingested_at,
            "complete": self.complete,
            "pii": self.pii,
            "flagged_chunks": self.flagged,
            "collection": self.collection,
        }


@dataclass(frozen=True)
class NewChunk:
    """A chunk to store: its text and where it comes from in the document."""

    text: str
    page: int | None = None
    heading: str | None = None
    offset: int = 0
    scan: ChunkScan | None = None  # scanned already (outside the writer's lock); None: not yet


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
        _write_text(path, json.dumps(self.__dict__, indent=2) + "\n")


_CHUNK_SELECT = """
SELECT c.id, c.chunk_id, c.doc_id, c.text, c.page, c.heading, c.char_offset, s.path, s.title
FROM chunks c
JOIN sources s ON s.rowid = (
    SELECT s2.rowid FROM sources s2 WHERE s2.doc_id = c.doc_id
    ORDER BY s2.added_at, s2.rowid LIMIT 1
)
"""


# Documents stored in part, with the file they come from. Created by the first ingestion
# that publishes a partial document, so indexes without one keep their format version.
_PARTIAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS partial_documents (
    doc_id TEXT PRIMARY KEY REFERENCES documents(doc_id),
    source TEXT NOT NULL,
    chunks_done INTEGER NOT NULL
)
"""


def _partial_rows(db: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    """doc_id -> (source, chunks stored) of each partial document."""
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'partial_documents'"
    ).fetchone()
    if found is None:
        return {}
    rows = db.execute("SELECT doc_id, source, chunks_done FROM partial_documents")
    return {doc_id: (source, done) for doc_id, source, done in rows}


def _documents(db: sqlite3.Connection, within: frozenset[str] | None = None) -> list[DocumentInfo]:
    """The documents (of the collections ``within``; None: all), oldest first."""
    filed = collections.of_documents(db)
    sources: dict[str, list[str]] = {}
    titles: dict[str, list[str]] = {}
    for path, doc_id, title in db.execute(
        "SELECT path, doc_id, title FROM sources ORDER BY added_at, rowid"
    ):
        sources.setdefault(doc_id, []).append(path)
        titles.setdefault(doc_id, []).append(title or Path(path).name)
    partial = _partial_rows(db)
    found = scan.summaries(db)
    for doc_id, (path, _) in partial.items():
        # A partial new version of a file is listed under the file's path, which still names
        # the complete old version until the new one is complete.
        if doc_id not in sources:
            sources[doc_id] = [path]
            titles[doc_id] = [Path(path).name]
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
            pii=None if found is None else found.get(doc_id, scan.GuardSummary()).pii,
            flagged=0 if found is None else found.get(doc_id, scan.GuardSummary()).flagged,
            collection=filed.get(doc_id, collections.DEFAULT_COLLECTION),
        )
        for doc_id, kind, pages, chunks, ingested_at in db.execute(
            "SELECT doc_id, kind, pages, chunks, ingested_at FROM documents "
            "ORDER BY ingested_at, doc_id"
        )
        if within is None or filed.get(doc_id, collections.DEFAULT_COLLECTION) in within
    ]


class _Generation:
    """A published generation opened for reading, shared by the views that pin it.

    Its SQLite connections are pooled: a view takes one for itself and gives it back, so no
    connection is used by two threads at once. The generation is closed only when it is no
    longer the one this store serves and no view pins it, never under a running query.
    Pins, the pool and the flags change only under the owning store's lock.
    """

    def __init__(
        self, name: str, manifest: Manifest, index: Any, db_path: Path, db: sqlite3.Connection
    ) -> None:
        self.name = name
        # Which file this is, not just its name: a repaired index may reuse a name. The file
        # stays open through the pool, so its inode cannot be reused while we serve it.
        self.identity = _identity(db_path)
        self.manifest = manifest
        self.index = index
        self.db_path = db_path
        self.idle: list[sqlite3.Connection] = [db]
        self.pins = 0
        self.retired = False
        self.closed = False
        self.cache: dict[str, Any] = {}  # derived from the generation (it never changes)

    def detach(self) -> list[sqlite3.Connection]:
        """Mark closed and hand over the connections to close (under the store's lock)."""
        self.closed = True
        idle, self.idle = self.idle, []
        self.index = None
        return idle


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for db in connections:
        db.close()


class StoreView:
    """One published generation, pinned for the length of a query: every read agrees.

    Built by ``FaissStore.reader()``; usable only inside that ``with`` block.
    """

    def __init__(self, generation: _Generation, db: sqlite3.Connection) -> None:
        self._gen = generation
        self._db: sqlite3.Connection | None = db

    @property
    def generation(self) -> str:
        """Name of the pinned generation (``g000007``)."""
        return self._gen.name

    @property
    def manifest(self) -> Manifest:
        """What the pinned generation was built with."""
        return self._gen.manifest

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError("this view of the index is closed; use it inside store.reader()")
        return self._db

    def close(self) -> sqlite3.Connection | None:
        """End the view; returns its connection for the pool (``reader()`` does this)."""
        db, self._db = self._db, None
        return db

    def chunk_count(self) -> int:
        """Number of chunks (and vectors) in the generation."""
        self._conn()
        return int(self._gen.index.ntotal)

    def documents(self, within: frozenset[str] | None = None) -> list[DocumentInfo]:
        """Every indexed document (of the collections ``within``), oldest first."""
        return _documents(self._conn(), within)

    def all_chunks(self) -> list[ChunkRecord]:
        """Every stored chunk, in document order."""
        rows = self._conn().execute(_CHUNK_SELECT + " ORDER BY c.doc_id, c.seq").fetchall()
        return self._flagged([ChunkRecord(*row) for row in rows])

    def _flagged(self, records: list[ChunkRecord]) -> list[ChunkRecord]:
        """The records with the injection flags ingestion gave them."""
        flags = scan.chunk_flags(self._conn(), [r.id for r in records])
        return [replace(r, flags=flags[r.id]) if r.id in flags else r for r in records]

    def flagged_count(self) -> int:
        """Chunks flagged at ingestion for instruction-like text."""
        return scan.flagged_count(self._conn())

    def chunk_text(self, doc_id: str, seq: int) -> str | None:
        """The text of a document's chunk number ``seq`` (partial documents included)."""
        row = (
            self._conn()
            .execute("SELECT text FROM chunks WHERE doc_id = ? AND seq = ?", (doc_id, seq))
            .fetchone()
        )
        return row[0] if row else None

    def records(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        """Chunks by internal id (unknown ids are left out)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = (
            self._conn()
            .execute(_CHUNK_SELECT + f" WHERE c.id IN ({marks})", [int(i) for i in ids])
            .fetchall()
        )
        return {r.id: r for r in self._flagged([ChunkRecord(*row) for row in rows])}

    def search_chunks_by_vector(
        self, vector: Sequence[float], k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks nearest ``vector`` with their cosine similarity, best first.

        ``within``: only chunks of these collections (None: all), filtered inside the
        search, so there are ``k`` of them whenever the collections hold ``k``.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        db = self._conn()
        index = self._gen.index
        if index.ntotal == 0:
            return []
        query = np.asarray([vector], dtype="float32")
        faiss.normalize_L2(query)
        # One query searches on one thread: questions run in parallel threads (batch runs,
        # several users), and OpenMP threads on top of them only contend. Measured for one
        # query over 12k / 200k vectors: 2.1 / 30.6 ms on 2 threads, 0.8 / 17.3 ms on one.
        # (The setting belongs to the calling thread.)
        faiss.omp_set_num_threads(1)
        found = None
        if within is not None:
            codes = collections.position_codes(self._gen.cache, index, db)
            found = collections.filtered_search(index, codes, query, k, within)
        scores, ids = found if found is not None else index.search(query, min(k, index.ntotal))
        hits = [
            (int(i), min(1.0, max(-1.0, float(s))))
            for i, s in zip(ids[0], scores[0], strict=True)
            if i >= 0
        ]
        records = self.records([i for i, _ in hits])
        return [(records[i], s) for i, s in hits if i in records]

    def keyword_search(
        self, query: str, k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks that best match the query's words by BM25 (FTS5), best first.

        The score is FTS5's BM25 with the sign flipped (higher is better); the query's words
        are OR-ed, each quoted, so no user input is read as FTS5 syntax. ``within``: only
        chunks of these collections (None: all), filtered in the query.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        db = self._conn()
        terms = keyword_terms(query)
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        codes = None
        if within is not None:
            codes = collections.position_codes(self._gen.cache, self._gen.index, db)
        rows = collections.keyword_rows(db, codes, (KEYWORD_HEADING_WEIGHT, match), k, within)
        records = self.records([r[0] for r in rows])
        return [(records[i], float(s)) for i, s in rows if i in records]

    def similarities(self, vector: Sequence[float], chunk_ids: Sequence[int]) -> dict[int, float]:
        """Cosine similarity between ``vector`` and stored chunks, by internal chunk id."""
        self._conn()
        if not chunk_ids:
            return {}
        query = np.asarray([vector], dtype="float32")
        faiss.normalize_L2(query)
        stored = self.vectors(chunk_ids)
        return {
            int(cid): min(1.0, max(-1.0, float(np.dot(query[0], row))))
            for cid, row in zip(chunk_ids, stored, strict=True)
        }

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors of chunks, in order."""
        self._conn()
        index = self._gen.index
        return np.asarray([index.reconstruct(int(c)) for c in chunk_ids], dtype="float32")

    def get_by_ids(
        self, ids: Sequence[str], within: frozenset[str] | None = None
    ) -> list[Document]:
        """Stored chunks by chunk id, in the order asked (unknown ids are skipped).

        ``within``: only chunks of these collections (others are skipped like unknown ones).
        """
        if not ids:
            return []
        db = self._conn()
        marks = ",".join("?" * len(ids))
        condition, args = "1", list[str]()
        if within is not None:
            condition, args = collections.sql_filter(db, within, "c.doc_id")
        rows = db.execute(
            _CHUNK_SELECT + f" WHERE c.chunk_id IN ({marks}) AND {condition}", [*ids, *args]
        ).fetchall()
        by_id = {
            r.chunk_id: r.to_document() for r in self._flagged([ChunkRecord(*r) for r in rows])
        }
        return [by_id[i] for i in ids if i in by_id]


@dataclass(frozen=True)
class RepairReport:
    """What ``FaissStore.repair()`` found and did."""

    problem: str | None  # what was wrong with the published generation; None: nothing
    before: str | None  # the generation CURRENT named before (None: missing or unreadable)
    current: str  # the generation CURRENT names now
    removed: list[str]  # leftover generation folders deleted


@dataclass(frozen=True)
class IndexStatus:
    """The state of an index folder, for ``ragchat index status``."""

    index_dir: str
    generation: str
    published_at: str
    embedding_model: str
    dimension: int
    documents: int
    chunks: int
    disk_bytes: int
    generations: list[str]  # every generation folder present, oldest first
    leftovers: list[str]  # folders newer than the published one: left by crashed writers

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat index status --json`` prints."""
        return dict(self.__dict__)


_PIN_ATTEMPTS = 50


class FaissStore(VectorStore):
    """The ragchat index, readable by many threads and processes, written by one at a time.

    It offers langchain-core's ``VectorStore`` interface (so ``as_retriever()`` works), a
    ``reader()`` that pins one generation for a whole query, and an ``IndexWriter``
    transaction for the ingestion pipeline. One instance may be shared by threads.
    """

    def __init__(
        self,
        index_dir: Path,
        embeddings: Embeddings,
        *,
        model_id: str,
        dimension: int | None = None,
        lock_timeout_s: float = 600.0,
        scanner: scan.Scanner | None = None,
    ) -> None:
        if not model_id:
            raise ValueError("model_id must name the embedding model")
        if lock_timeout_s < 0:
            raise ValueError("lock_timeout_s must be >= 0")
        self.index_dir = Path(index_dir)
        self._embeddings = embeddings
        self.model_id = model_id
        self._dimension = dimension
        self.lock_timeout_s = lock_timeout_s
        # Scans each chunk written for injected instructions and personal data (None: off).
        self.scanner = scanner
        self._current: _Generation | None = None
        self._lock = threading.Lock()  # guards _current and every generation's pins and pool
        self._open_lock = threading.Lock()  # one thread opens a new generation at a time

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

    def _path_problem(self) -> str | None:
        """Why the index path cannot be a folder (a file in its place or on its way), if so."""
        for path in (self.index_dir, *self.index_dir.parents):
            if path.exists():
                return None if path.is_dir() else f"{path} is a file, not a folder"
        return None

    def exists(self) -> bool:
        """Whether an index has been published in the folder.

        Raises:
            IndexCorruptError: the index path is a file or cannot be read.
        """
        try:
            os.stat(self.index_dir / CURRENT)
        except FileNotFoundError:
            return False
        except OSError as exc:
            reason = self._path_problem() or f"cannot read it: {_disk_reason(exc)}"
            raise IndexCorruptError(self.index_dir, reason) from exc
        return True

    def current_generation(self) -> str | None:
        """Name of the published generation, or None before the first ingestion.

        Raises:
            IndexCorruptError: the index path is a file, or ``CURRENT`` is unreadable.
        """
        try:
            name = (self.index_dir / CURRENT).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            problem = self._path_problem()
            if problem:
                raise IndexCorruptError(self.index_dir, problem) from exc
            raise IndexCorruptError(
                self.index_dir, f"cannot read {CURRENT}: {exc}; {REPAIR_HINT}"
            ) from exc
        if not _GEN.match(name):
            raise IndexCorruptError(
                self.index_dir, f"{CURRENT} names no generation: {name!r}; {REPAIR_HINT}"
            )
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
                raise FileNotFoundError(errno.ENOENT, "missing", str(gen_dir / VECTORS)) from exc
            raise IndexCorruptError(self.index_dir, f"bad {VECTORS}: {exc}") from exc
        if not (gen_dir / META).is_file():
            raise FileNotFoundError(errno.ENOENT, "missing", str(gen_dir / META))
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

    def _verify(self, generation: str) -> tuple[Manifest, Any]:
        """Open a generation's three files and check that they agree; its manifest and index.

        Raises:
            FileNotFoundError: a file of the generation is missing.
            IndexCorruptError: a file is unreadable, or the files disagree.
            IndexMismatchError: it was built with another embedding model.
        """
        manifest, index, db = self._open_checked(generation)
        db.close()
        return manifest, index

    def _open_checked(self, generation: str) -> tuple[Manifest, Any, sqlite3.Connection]:
        """A generation's manifest, FAISS index and a read-only connection, checked to agree.

        Raises:
            FileNotFoundError: a file of the generation is missing.
            IndexCorruptError: a file is unreadable, or the files disagree.
            IndexMismatchError: it was built with another embedding model.
        """
        gen_dir = self.index_dir / generation
        manifest, index = self._read_generation(gen_dir)
        try:
            db = _connect_readonly(gen_dir / META)
        except sqlite3.OperationalError as exc:
            raise FileNotFoundError(errno.ENOENT, "missing", str(gen_dir / META)) from exc
        try:
            self.check_consistent(db, index)
        except BaseException:
            db.close()
            raise
        return manifest, index, db

    def _published_base(self) -> tuple[str | None, Manifest | None, Any]:
        """The published generation, fully checked, for a writer to start from.

        With no ``CURRENT`` but an intact generation on disk (a run killed between writing
        its last file and publishing, or ``CURRENT`` deleted by hand), that generation is
        published first: it is complete, so this is the state after that run, and nothing
        intact is ever thrown away.

        Raises:
            IndexCorruptError: ``CURRENT`` names a missing or broken generation (nothing is
                deleted then; the message says how to repair).
        """
        base = self.current_generation()
        if base is None:
            intact = self._newest_intact(self.generations())
            if intact is None:
                return None, None, None
            logger.warning("%s was missing; publishing the intact generation %s", CURRENT, intact)
            try:
                _publish(self.index_dir, intact)
            except OSError as exc:
                raise self._unwritable(exc, intact) from exc
            base = intact
        try:
            manifest, index = self._verify(base)
        except FileNotFoundError as exc:
            raise IndexCorruptError(
                self.index_dir, f"{CURRENT} names {base}, but {exc.filename} is missing; "
                f"{REPAIR_HINT}",
            ) from exc  # fmt: skip
        except IndexCorruptError as exc:
            raise self._repairable(exc) from exc
        return base, manifest, index

    def _repairable(self, exc: IndexCorruptError) -> IndexCorruptError:
        """The error with the way out added, unless the whole index has an old format."""
        if exc.reason.startswith("format version"):
            return IndexCorruptError(self.index_dir, exc.reason)
        return IndexCorruptError(self.index_dir, f"{exc.reason}; {REPAIR_HINT}")

    def _newest_intact(self, generations: Sequence[str]) -> str | None:
        """The newest of these generations whose files are all there and agree, if any."""
        for gen in reversed(generations):
            try:
                self._verify(gen)
            except (FileNotFoundError, IndexCorruptError) as exc:
                logger.info("generation %s is not intact: %s", gen, exc)
                continue
            return gen
        return None

    def _open(self, generation: str) -> _Generation:
        """Open a generation for reading (one pooled connection to start with)."""
        try:
            manifest, index, db = self._open_checked(generation)
        except IndexCorruptError as exc:
            raise self._repairable(exc) from exc
        logger.debug("opened index generation %s", generation)
        return _Generation(generation, manifest, index, self.index_dir / generation / META, db)

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

    @contextlib.contextmanager
    def reader(self) -> Iterator[StoreView]:
        """A read view of the published generation, pinned until the block ends.

        Every call on the view reads that one generation, whatever writers publish
        meanwhile; its files and connections stay open until the last view on it ends.

        Raises:
            IndexNotFoundError: nothing has been published yet.
            IndexCorruptError: the published generation is missing or broken.
        """
        gen, db = self._pin()
        view = StoreView(gen, db)
        try:
            yield view
        finally:
            self._unpin(gen, view.close())

    def _pin(self) -> tuple[_Generation, sqlite3.Connection]:
        for _ in range(_PIN_ATTEMPTS):
            name = self.current_generation()
            if name is None:
                raise IndexNotFoundError(self.index_dir)
            identity = _identity(self.index_dir / name / META)
            gen: _Generation | None = None
            db: sqlite3.Connection | None = None
            with self._lock:
                current = self._current
                if current is not None and self._serves(name, identity):
                    gen = current
                    gen.pins += 1
                    db = gen.idle.pop() if gen.idle else None
            if gen is None:
                gen = self._install()
                if gen is None:
                    continue  # replaced and removed while we opened it: read CURRENT again
                with self._lock:
                    db = gen.idle.pop() if gen.idle else None
            if db is not None:
                return gen, db
            try:
                return gen, _connect_readonly(gen.db_path)
            except sqlite3.OperationalError as exc:
                self._unpin(gen, None)
                if self.current_generation() == gen.name:
                    raise IndexCorruptError(
                        self.index_dir, f"{gen.db_path} cannot be opened: {exc}; {REPAIR_HINT}"
                    ) from exc
        raise IndexCorruptError(
            self.index_dir, f"{CURRENT} kept changing while it was read; try again"
        )

    def _install(self) -> _Generation | None:
        """Open the generation ``CURRENT`` names now and serve it; returned pinned.

        Returns None when it vanished while being opened (a newer one replaced it).
        """
        with self._open_lock:
            name = self.current_generation()
            if name is None:
                raise IndexNotFoundError(self.index_dir)
            identity = _identity(self.index_dir / name / META)
            with self._lock:
                gen = self._current
                if gen is not None and self._serves(name, identity):
                    gen.pins += 1
                    return gen
            try:
                gen = self._open(name)
            except FileNotFoundError as exc:
                if self.current_generation() == name:
                    raise IndexCorruptError(
                        self.index_dir,
                        f"{CURRENT} names {name}, but {exc.filename} is missing; {REPAIR_HINT}",
                    ) from exc
                return None
            with self._lock:
                old, self._current = self._current, gen
                gen.pins += 1
                closing = self._retire(old)
            _close_all(closing)
            return gen

    def _serves(self, name: str, identity: tuple[int, int] | None) -> bool:
        """Whether the open generation is the one named, in the same file (under the lock)."""
        gen = self._current
        return (
            gen is not None
            and identity is not None
            and gen.name == name
            and gen.identity == identity
        )

    def _retire(self, gen: _Generation | None) -> list[sqlite3.Connection]:
        """Mark a generation as no longer served; closed now if unpinned (under the lock)."""
        if gen is None:
            return []
        gen.retired = True
        return gen.detach() if gen.pins == 0 and not gen.closed else []

    def _unpin(self, gen: _Generation, db: sqlite3.Connection | None) -> None:
        closing = []
        with self._lock:
            gen.pins -= 1
            if db is not None:
                if gen.closed:
                    closing.append(db)
                else:
                    gen.idle.append(db)
            if gen.retired and gen.pins == 0 and not gen.closed:
                closing.extend(gen.detach())
        _close_all(closing)

    def close(self) -> None:
        """Release the open generation (views still open keep theirs until they end)."""
        with self._lock:
            old, self._current = self._current, None
            closing = self._retire(old)
        _close_all(closing)

    def snapshot(self) -> Manifest:
        """Open the published generation now, so a missing or broken index fails early.

        Returns:
            Its manifest.

        Raises:
            IndexNotFoundError: nothing has been published yet.
            IndexCorruptError: the published generation is missing or broken.
        """
        return self.manifest()

    def manifest(self) -> Manifest:
        """The manifest of the published generation."""
        with self.reader() as view:
            return view.manifest

    def documents(self, within: frozenset[str] | None = None) -> list[DocumentInfo]:
        """Every indexed document (of the collections ``within``; None: all), oldest first.

        Empty before the first ingestion.
        """
        if not self.exists():
            return []
        with self.reader() as view:
            return view.documents(within)

    def chunk_count(self) -> int:
        """Number of chunks (and vectors) in the index."""
        if not self.exists():
            return 0
        with self.reader() as view:
            return view.chunk_count()

    def all_chunks(self) -> list[ChunkRecord]:
        """Every stored chunk, in document order (for tests and exports)."""
        if not self.exists():
            return []
        with self.reader() as view:
            return view.all_chunks()

    def search_chunks_by_vector(
        self, vector: Sequence[float], k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks nearest ``vector`` with their cosine similarity, best first.

        ``within``: of these collections only (see ``StoreView``).
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        with self.reader() as view:
            return view.search_chunks_by_vector(vector, k, within)

    def keyword_search(
        self, query: str, k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks that best match the query's words by BM25; see ``StoreView``."""
        if k < 1:
            raise ValueError("k must be at least 1")
        with self.reader() as view:
            return view.keyword_search(query, k, within)

    def similarities(self, vector: Sequence[float], chunk_ids: Sequence[int]) -> dict[int, float]:
        """Cosine similarity between ``vector`` and stored chunks, by internal chunk id.

        Ids are those of the published generation; use one ``reader()`` for a search and
        the similarities of its hits, so both come from the same generation.
        """
        if not chunk_ids:
            return {}
        with self.reader() as view:
            return view.similarities(vector, chunk_ids)

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors of chunks, in order (see ``similarities``)."""
        with self.reader() as view:
            return view.vectors(chunk_ids)

    def search_chunks(self, query: str, k: int = 4) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks most similar to ``query``, best first."""
        return self.search_chunks_by_vector(self._embeddings.embed_query(query), k)

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

    def get_by_ids(
        self, ids: Sequence[str], /, within: frozenset[str] | None = None
    ) -> list[Document]:
        """Stored chunks by chunk id (unknown ids, and chunks outside ``within``, are skipped)."""
        if not ids or not self.exists():
            return []
        with self.reader() as view:
            return view.get_by_ids(ids, within)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Store each text as a one-chunk document; metadata may give source and page.

        ``collection=NAME`` (a keyword argument) files them in that collection.
        """
        collection = str(kwargs.get("collection") or collections.DEFAULT_COLLECTION)
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        if len(metadatas) != len(texts):
            raise ValueError("metadatas must have one entry per text")
        vectors = self._embeddings.embed_documents(texts)
        chunk_ids: list[str] = []
        with self.writer() as writer:
            for text, meta, vector in zip(texts, metadatas, vectors, strict=True):
                doc_id = collections.document_id(content_id(text.encode("utf-8")), collection)
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
                    collection=collection,
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
    def writer(self, on_wait: Callable[[float], None] | None = None) -> Iterator[IndexWriter]:
        """A write transaction: published atomically when the block ends without error.

        A second writer waits for the first to publish, for up to ``lock_timeout_s``.

        Args:
            on_wait: called about once a second, with the seconds waited so far, while
                another writer holds the lock.

        Raises:
            IndexLockedError: another writer held the lock for ``lock_timeout_s``.
            IndexCorruptError: the published generation is missing or broken.
            IndexUnwritableError: the folder cannot be written (a full disk, read-only...);
                nothing is published then, and the index stays as it was.
        """
        with self._locked(on_wait):
            writer = IndexWriter(self)
            try:
                yield writer
            except sqlite3.Error as exc:
                writer.abort()
                if _is_disk_error(exc):
                    raise self._unwritable(exc, writer.generation) from exc
                raise
            except BaseException:
                writer.abort()
                raise
            writer.commit()

    def ensure_scanned(self, on_wait: Callable[[float], None] | None = None) -> bool:
        """Scan an index its scanner has not scanned (older builds); True if it did.

        Its next writer would do it anyway; this runs one when nothing else is written.
        """
        if self.scanner is None or not self.exists():
            return False
        with self.reader() as view:
            if scan.scanned_with(view._conn()) == self.scanner.version:
                return False
        with self.writer(on_wait) as w:
            return w.changed

    @contextlib.contextmanager
    def _locked(self, on_wait: Callable[[float], None] | None) -> Iterator[None]:
        """Hold the writer lock (an flock on ``writer.lock``, released if we die) for the block."""
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            reason = self._path_problem() or _disk_reason(exc)
            raise IndexUnwritableError(self.index_dir, reason) from exc
        try:
            self._acquire(lock_fd, on_wait)
            yield
        finally:
            os.close(lock_fd)  # closing releases the flock

    def _acquire(self, fd: int, on_wait: Callable[[float], None] | None) -> None:
        started = time.monotonic()
        next_report = 1.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= self.lock_timeout_s:
                    raise IndexLockedError(self.index_dir, waited) from None
                if on_wait is not None and waited >= next_report:
                    on_wait(waited)
                    next_report = waited + 1.0
                time.sleep(min(0.1, self.lock_timeout_s - waited))
            else:
                return

    def _unwritable(self, exc: BaseException, generation: str) -> IndexUnwritableError:
        return IndexUnwritableError(
            self.index_dir,
            f"{_disk_reason(exc)} while writing {generation}; nothing was published, "
            "the index is as it was",
        )

    def generations(self) -> list[str]:
        """Generation folders present on disk, oldest first (published or not)."""
        if not self.index_dir.is_dir():
            return []
        names = [p.name for p in self.index_dir.iterdir() if p.is_dir() and _GEN.match(p.name)]
        return sorted(names, key=lambda n: int(n[1:]))

    # -- checking and repairing -------------------------------------------------------

    def repair(self) -> RepairReport:
        """Point ``CURRENT`` at the newest intact generation and remove crashed leftovers.

        Takes the writer lock (waiting like a writer). When the published generation is
        intact, only the folders crashed writers left behind are removed.

        Raises:
            IndexNotFoundError: the folder holds no index.
            IndexCorruptError: no intact generation is left to recover (nothing is deleted).
            IndexMismatchError: the index was built with another embedding model.
            IndexUnwritableError: ``CURRENT`` could not be rewritten (it is as it was).
        """
        problem = self._path_problem()
        if problem:
            raise IndexCorruptError(self.index_dir, problem)
        if not self.index_dir.is_dir():
            raise IndexNotFoundError(self.index_dir)
        with self._locked(None):
            gens = self.generations()
            before, problem = self._published_problem()
            if problem is None and before is not None:
                current = before
            else:
                if not gens and before is None and not self.exists():
                    raise IndexNotFoundError(self.index_dir)
                found = self._newest_intact(gens)
                if found is None:
                    checked = ", ".join(gens) or "no generation folder"
                    raise IndexCorruptError(
                        self.index_dir,
                        f"{problem}; nothing to recover: no intact generation ({checked}); "
                        "ingest the documents again into a new index folder",
                    )
                current = found
                try:
                    _publish(self.index_dir, current)
                    _fsync(self.index_dir)
                except OSError as exc:
                    raise IndexUnwritableError(
                        self.index_dir, f"{_disk_reason(exc)}; {CURRENT} is as it was"
                    ) from exc
                logger.info("repair: %s now names %s (%s)", CURRENT, current, problem)
            removed = [g for g in gens if int(g[1:]) > int(current[1:])]
            for gen in removed:
                logger.info("repair: removing leftover generation %s", gen)
                shutil.rmtree(self.index_dir / gen, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (self.index_dir / f"{CURRENT}.tmp").unlink()
        self.close()  # views of this store reopen what CURRENT names now
        return RepairReport(problem=problem, before=before, current=current, removed=removed)

    def _published_problem(self) -> tuple[str | None, str | None]:
        """The generation ``CURRENT`` names (if readable) and what is wrong with it (if any)."""
        try:
            before = self.current_generation()
        except IndexCorruptError as exc:
            return None, exc.reason.removesuffix(f"; {REPAIR_HINT}")
        if before is None:
            return None, f"{CURRENT} is missing"
        try:
            self._verify(before)
        except FileNotFoundError as exc:
            return before, f"{CURRENT} names {before}, but {exc.filename} is missing"
        except IndexCorruptError as exc:
            return before, f"{before} is broken: {exc.reason}"
        return before, None

    def status(self) -> IndexStatus:
        """Published generation, counts, model and disk use of the index.

        Raises:
            IndexNotFoundError: nothing has been published yet.
            IndexCorruptError: the published generation is missing or broken.
        """
        with self.reader() as view:
            manifest, generation = view.manifest, view.generation
            documents, chunks = len(view.documents()), view.chunk_count()
        gens = self.generations()
        return IndexStatus(
            index_dir=str(self.index_dir),
            generation=generation,
            published_at=manifest.published_at,
            embedding_model=manifest.embedding_model,
            dimension=manifest.dimension,
            documents=documents,
            chunks=chunks,
            disk_bytes=_disk_bytes(self.index_dir),
            generations=gens,
            leftovers=[g for g in gens if int(g[1:]) > int(generation[1:])],
        )

    def find_document(self, key: str, within: frozenset[str] | None = None) -> str:
        """The document id for an id, a unique id prefix (6+ characters) or a source path.

        Only documents of the collections ``within`` (None: all) are considered.

        Raises:
            DocumentNotFoundError: nothing, or more than one document, matches.
        """
        docs = self.documents(within)
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
        # Check the published generation before touching anything, so a writer never removes
        # the only intact copy when CURRENT names a missing or broken one.
        self._base, manifest, index = store._published_base()
        self._clean_stale()
        numbers = [int(n[1:]) for n in store.generations()]
        self.generation = f"g{(max(numbers) + 1 if numbers else 1):06d}"
        self.dir = self.index_dir / self.generation
        self.changed = False
        self._removed_ids: list[int] = []
        if manifest is not None:
            self.dimension = manifest.dimension
            self.index = index
        else:
            self.dimension = store.dimension
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
        try:
            self.db = self._create()
        except (OSError, sqlite3.Error) as exc:
            shutil.rmtree(self.dir, ignore_errors=True)
            if _is_disk_error(exc):
                raise store._unwritable(exc, self.generation) from exc
            raise

    def _create(self) -> sqlite3.Connection:
        """The new generation's folder and its metadata database (a copy of the base's)."""
        self.dir.mkdir()
        if self._base is not None:
            _copy_file(self.index_dir / self._base / META, self.dir / META)
        db = _connect_writable(self.dir / META)
        try:
            if self._base is None:
                db.executescript(_SCHEMA)
            # The folder is thrown away on failure, so no journal is needed for safety.
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            self.scanning, rescanned = scan.prepare(db, self.store.scanner)
            # A rescan is a change worth publishing even when nothing else is written.
            self.changed = rescanned
        except BaseException:
            db.close()
            raise
        return db

    def _clean_stale(self) -> None:
        """Remove generations left by crashed writers and all but one older generation.

        Runs once the published generation has been checked (or, with no ``CURRENT``, once
        no generation was found intact), so it never removes the only good copy.
        """
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

    def documents(self, within: frozenset[str] | None = None) -> list[DocumentInfo]:
        """Documents as this transaction sees them (of the collections ``within``)."""
        return _documents(self.db, within)

    def collection_of(self, doc_id: str) -> str:
        """The collection a stored document is in."""
        return collections.of_documents(self.db).get(doc_id, collections.DEFAULT_COLLECTION)

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
        complete: bool = True,
        collection: str = collections.DEFAULT_COLLECTION,
    ) -> None:
        """Store a new document with its chunks and their vectors, in ``collection``.

        With ``complete=False`` only the document's first chunks are given; more follow with
        ``append_chunks``. Such a partial document is listed under ``source`` at once, unless
        that path still names a complete document (an older version of the file): the old
        version then stays until the new one is complete, so a failed or interrupted
        ingestion never loses it.
        """
        if self.has_document(doc_id):
            raise ValueError(f"document {doc_id} is already stored")
        vectors = self._check_vectors(chunks, vectors)
        self.db.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?)",
            (doc_id, kind, pages, len(chunks), _now()),
        )
        collections.assign(self.db, doc_id, collection)
        self._insert_chunks(doc_id, 0, chunks, vectors)
        if complete:
            self.add_source(source, doc_id, title)
        else:
            self.db.execute(_PARTIAL_SCHEMA)
            self.db.execute(
                "INSERT INTO partial_documents VALUES (?, ?, ?)", (doc_id, source, len(chunks))
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
        self._insert_chunks(doc_id, done, chunks, vectors)
        total = done + len(chunks)
        self.db.execute("UPDATE documents SET chunks = ? WHERE doc_id = ?", (total, doc_id))
        if complete:
            (source,) = self.db.execute(
                "SELECT source FROM partial_documents WHERE doc_id = ?", (doc_id,)
            ).fetchone()
            self.db.execute("DELETE FROM partial_documents WHERE doc_id = ?", (doc_id,))
            if self.source_document(source) != doc_id:
                self.add_source(source, doc_id)
        else:
            self.db.execute(
                "UPDATE partial_documents SET chunks_done = ? WHERE doc_id = ?", (total, doc_id)
            )
        self.changed = True

    def partial_chunks(self, doc_id: str) -> int | None:
        """How many chunks of a partial document are stored; None unless it is partial."""
        row = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'partial_documents'"
        ).fetchone()
        if row is None:
            return None
        row = self.db.execute(
            "SELECT chunks_done FROM partial_documents WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        return int(row[0]) if row else None

    def partial_documents(self) -> dict[str, tuple[str, int]]:
        """doc_id -> (source path, chunks stored) of every partial document."""
        return _partial_rows(self.db)

    def _check_vectors(self, chunks: Sequence[NewChunk], vectors: np.ndarray) -> np.ndarray:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.ascontiguousarray(vectors, dtype="float32")
        if len(chunks) and (vectors.ndim != 2 or vectors.shape[1] != self.dimension):
            raise ValueError(f"vectors must have shape (n, {self.dimension})")
        return vectors

    def _insert_chunks(
        self, doc_id: str, first_seq: int, chunks: Sequence[NewChunk], vectors: np.ndarray
    ) -> None:
        """Chunk rows numbered from ``first_seq`` and their vectors (normalised here)."""
        (next_id,) = self.db.execute("SELECT value FROM counters WHERE name='next_id'").fetchone()
        ids = np.arange(next_id, next_id + len(chunks), dtype="int64")
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
                for seq, (i, c) in enumerate(zip(ids, chunks, strict=True), first_seq)
            ],
        )
        self.db.execute(
            "UPDATE counters SET value = ? WHERE name='next_id'", (next_id + len(chunks),)
        )
        scanner = self.store.scanner
        if self.scanning and scanner is not None:
            scan.store_scans(
                self.db,
                [
                    (int(i), c.scan or scanner(scan.scan_text(c.text, c.heading)))
                    for i, c in zip(ids, chunks, strict=True)
                ],
            )
        if len(chunks):
            faiss.normalize_L2(vectors)
            self.index.add_with_ids(vectors, ids)

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
        if self.partial_chunks(doc_id) is not None:
            self.db.execute("DELETE FROM partial_documents WHERE doc_id = ?", (doc_id,))
        self.db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        self.changed = True

    # -- ending -----------------------------------------------------------------------

    def commit(self) -> None:
        """Write the generation, make it durable, then publish it with one rename.

        Raises:
            IndexUnwritableError: a write failed (full disk, read-only...); the partial
                generation is removed and ``CURRENT`` is untouched.
        """
        if not self.changed:
            self.abort()
            return
        try:
            n_docs, n_chunks = self._write_and_publish()
        except (OSError, sqlite3.Error) as exc:
            self.abort()
            if _is_disk_error(exc):
                raise self.store._unwritable(exc, self.generation) from exc
            raise
        try:
            _fsync(self.index_dir)  # makes the rename durable; it is visible already
        except OSError as exc:
            logger.warning("published %s but could not sync the folder: %s", self.generation, exc)
        logger.info(
            "published index generation %s: %d documents, %d chunks",
            self.generation,
            n_docs,
            n_chunks,
        )
        self._drop_old()

    def _write_and_publish(self) -> tuple[int, int]:
        """Write and sync every file of the generation, then point ``CURRENT`` at it.

        Nothing before the final rename is visible to readers, so a failure at any step
        leaves the published index as it was.
        """
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
        _write_index(self.index, self.dir / VECTORS)
        Manifest(
            embedding_model=self.store.model_id,
            dimension=self.dimension,
            generation=int(self.generation[1:]),
            documents=n_docs,
            chunks=n_chunks,
            published_at=_now(),
        ).write(self.dir / MANIFEST)
        _fsync(self.dir / META)
        _fsync(self.dir)
        _publish(self.index_dir, self.generation)
        return n_docs, n_chunks

    def _drop_old(self) -> None:
        """Keep the new generation and the one before it (readers may still have it open).

        Readers in other processes that still pin an older one keep reading it: its vectors
        are in their memory and their open SQLite connection outlives the deleted file.
        """
        gens = self.store.generations()
        for gen in gens[:-2]:
            shutil.rmtree(self.index_dir / gen, ignore_errors=True)

    def abort(self) -> None:
        """Throw the unpublished generation away."""
        with contextlib.suppress(sqlite3.ProgrammingError):
            self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)
