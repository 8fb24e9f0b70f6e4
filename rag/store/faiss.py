"""The document index: FAISS segments for vectors, one SQLite database for everything else.

Layout of an index folder::

    CURRENT              name of the published generation (g000042), replaced atomically
    manifests/g000042.json  what that generation is: model, counts, its vector segments
    segments/seg000017.faiss  immutable vector segments (``rag.store.segments``)
    meta.sqlite          documents, sources, chunks and their keyword index, in WAL mode;
                         every row carries the generations that added and removed it
                         (``rag.store.meta``)
    writer.lock          held (flock) by the one process writing
    compact.lock         held by the one process compacting

A writer adds its vectors as a new small segment and its rows tagged with the generation
it builds, commits the database, writes the manifest and publishes it by renaming
``CURRENT``: the cost of an ingestion grows with what it changes, not with the index. A
crash at any moment leaves ``CURRENT`` on the old generation, which reads exactly as
before: rows of unpublished generations are invisible to it and rolled back by the next
writer; segment files are never modified. Deletions are recorded (a row's
``removed_gen``), and the vectors they leave behind are skipped by searches until a
compaction merges segments without them. Readers switch generations by loading only the
new segments (memory-mapped). Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from rag.errors import (
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexUnwritableError,
)
from rag.store import collections, meta, scan, segments
from rag.store.common import ViewStore
from rag.store.scan import ChunkScan
from rag.store.segments import Segment, SegmentInfo

logger = logging.getLogger(__name__)

FORMAT_VERSION = 4
CURRENT = "CURRENT"
MANIFESTS = "manifests"
SEGMENTS = "segments"
META = "meta.sqlite"
LOCK = "writer.lock"
COMPACT_LOCK = "compact.lock"
_GEN = re.compile(r"^g(\d{6,})$")
_MANIFEST_FILE = re.compile(r"^(g\d{6,})\.json$")
_SEGMENT_FILE = re.compile(r"^(seg\d{6,})\.faiss$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _gen_number(name: str) -> int:
    return int(name[1:])


def _gen_name(number: int) -> str:
    return f"g{number:06d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Every file operation a writer performs goes through these module functions: one place
# that touches the disk, and the seams the tests use to fail a step (a full disk, say).


def _connect_writable(path: Path) -> sqlite3.Connection:
    db = meta.connect(str(path), readonly=False)
    db.execute("PRAGMA synchronous = FULL")  # a commit survives a power cut
    return db


def _connect_readonly(path: Path) -> sqlite3.Connection:
    return meta.connect(str(path), readonly=True)


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _write_index(index: Any, path: Path) -> None:
    segments.write_index(index, path)


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
META_LOST = (
    "the text and metadata of every generation live in it: restore the index folder from a "
    "backup or ingest the documents again into a new index folder"
)


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
    """What a generation is: the model it was built with, its counts and its segments."""

    embedding_model: str
    dimension: int
    format_version: int = FORMAT_VERSION
    generation: int = 0
    documents: int = 0
    chunks: int = 0
    published_at: str = ""
    segments: tuple[SegmentInfo, ...] = ()
    scanned_with: str | None = None  # scanner version every chunk was scanned with

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Load and check a manifest file."""
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["segments"] = tuple(SegmentInfo.from_json(s) for s in data.get("segments", []))
        return cls(**fields)

    def write(self, path: Path) -> None:
        """Write the manifest as JSON."""
        data = dict(self.__dict__)
        data["segments"] = [s.to_json() for s in self.segments]
        _write_text(path, json.dumps(data, indent=2) + "\n")

    @property
    def segment_names(self) -> list[str]:
        """Names of the generation's segments."""
        return [s.name for s in self.segments]

    @property
    def vectors(self) -> int:
        """Vectors in its segments, tombstoned ones included."""
        return sum(s.count for s in self.segments)


def _first_source_select(gen: int) -> str:
    return f"""
SELECT c.id, c.chunk_id, c.doc_id, c.text, c.page, c.heading, c.char_offset, s.path, s.title
FROM chunks c
JOIN sources s ON s.rid = (
    SELECT s2.rid FROM sources s2 WHERE s2.doc_id = c.doc_id AND {meta.live("s2", gen)}
    ORDER BY s2.added_at, s2.rid LIMIT 1
)
WHERE {meta.live("c", gen)}"""


def _partial_rows(db: sqlite3.Connection, gen: int) -> dict[str, tuple[str, int]]:
    """doc_id -> (source, chunks stored) of each partial document of generation ``gen``."""
    rows = db.execute(
        "SELECT doc_id, partial_source, chunks FROM documents d "
        f"WHERE partial_source IS NOT NULL AND {meta.live('d', gen)}"
    )
    return {doc_id: (source, done) for doc_id, source, done in rows}


def _documents(
    db: sqlite3.Connection,
    gen: int,
    scanned: bool,
    within: frozenset[str] | None = None,
) -> list[DocumentInfo]:
    """The documents of generation ``gen`` (of the collections ``within``), oldest first."""
    sources: dict[str, list[str]] = {}
    titles: dict[str, list[str]] = {}
    for path, doc_id, title in db.execute(
        f"SELECT path, doc_id, title FROM sources s WHERE {meta.live('s', gen)} "
        "ORDER BY added_at, rid"
    ):
        sources.setdefault(doc_id, []).append(path)
        titles.setdefault(doc_id, []).append(title or Path(path).name)
    found = scan.summaries(db, gen) if scanned else None
    condition, args = "1", list[str]()
    if within is not None:
        condition, args = collections.sql_filter(within, "d.collection")
    out = []
    for doc_id, kind, pages, chunks, ingested_at, collection, partial in db.execute(
        "SELECT doc_id, kind, pages, chunks, ingested_at, collection, partial_source "
        f"FROM documents d WHERE {meta.live('d', gen)} AND {condition} "
        "ORDER BY ingested_at, rid",  # same second: in the order they were stored
        args,
    ):
        if partial is not None and doc_id not in sources:
            # A partial new version of a file is listed under the file's path, which still
            # names the complete old version until the new one is complete.
            sources[doc_id] = [partial]
            titles[doc_id] = [Path(partial).name]
        summary = None if found is None else found.get(doc_id, scan.GuardSummary())
        out.append(
            DocumentInfo(
                id=doc_id,
                kind=kind,
                sources=sources.get(doc_id, []),
                titles=titles.get(doc_id, []),
                pages=pages,
                chunks=chunks,
                ingested_at=ingested_at,
                complete=partial is None,
                pii=None if summary is None else summary.pii,
                flagged=0 if summary is None else summary.flagged,
                collection=collection,
            )
        )
    return out


def _dead_ids(db: sqlite3.Connection, gen: int, names: Iterable[str] | None = None) -> np.ndarray:
    """Chunk ids gone in ``gen`` whose rows are still kept (their vectors in ``names``).

    ``names``: only those whose vectors are in these segments; None: all of them (every
    one is still in the keyword index until purged).
    """
    sql = "SELECT id FROM chunks WHERE removed_gen IS NOT NULL AND removed_gen <= ?"
    args: list[Any] = [gen]
    if names is not None:
        names = sorted(set(names))
        if not names:
            return np.zeros(0, dtype=np.int64)
        sql += f" AND segment IN ({','.join('?' * len(names))})"
        args.extend(names)
    return np.asarray([r[0] for r in db.execute(sql, args)], dtype=np.int64)


class _Generation:
    """A published generation opened for reading, shared by the views that pin it.

    Its segments are shared with the store's other generations (a new generation loads only
    the segments it adds). Pins and flags change only under the owning store's lock.
    """

    def __init__(
        self,
        name: str,
        identity: tuple[int, ...] | None,
        manifest: Manifest,
        loaded: list[Segment],
        dead: np.ndarray,
    ) -> None:
        self.name = name
        self.number = _gen_number(name)
        # Which manifest file this is, not just its name: a repaired index may reuse a name.
        self.identity = identity
        self.manifest = manifest
        self.segments = loaded
        self.dead = dead  # chunk ids gone in this generation whose rows are still kept
        self.pins = 0
        self.retired = False
        self.cache: dict[Any, Any] = {}  # derived from the generation (it never changes)
        self.cache_lock = threading.Lock()


def _identity(path: Path) -> tuple[int, ...] | None:
    """Which file this is: its inode, when it was written and its size.

    An inode may be reused once its file is deleted, so the inode alone is not enough.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


_ADMISSION_CACHE = 16  # admissions (collection filters) kept per generation


class StoreView:
    """One published generation, pinned for the length of a query: every read agrees.

    Built by ``FaissStore.reader()``; usable only inside that ``with`` block. Its reads
    run in one SQLite read transaction.
    """

    def __init__(self, generation: _Generation, db: sqlite3.Connection, store: FaissStore) -> None:
        self._gen = generation
        self._db: sqlite3.Connection | None = db
        self._store = store

    @property
    def generation(self) -> str:
        """Name of the pinned generation (``g000007``)."""
        return self._gen.name

    @property
    def published_at(self) -> str:
        """When the pinned generation was published (see ``StoreReader.published_at``)."""
        return self._gen.manifest.published_at

    @property
    def manifest(self) -> Manifest:
        """What the pinned generation was built with."""
        return self._gen.manifest

    @property
    def scanned_with(self) -> str | None:
        """The scanner version every chunk of the generation was scanned with (None: not)."""
        return self._gen.manifest.scanned_with

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError("this view of the index is closed; use it inside store.reader()")
        return self._db

    def close(self) -> sqlite3.Connection | None:
        """End the view; returns its connection for the pool (``reader()`` does this)."""
        db, self._db = self._db, None
        return db

    def chunk_count(self) -> int:
        """Number of chunks in the generation."""
        self._conn()
        return self._gen.manifest.chunks

    def documents(self, within: frozenset[str] | None = None) -> list[DocumentInfo]:
        """Every indexed document (of the collections ``within``), oldest first."""
        scanned = self._gen.manifest.scanned_with is not None
        return _documents(self._conn(), self._gen.number, scanned, within)

    def all_chunks(self) -> list[ChunkRecord]:
        """Every stored chunk, in document order."""
        sql = _first_source_select(self._gen.number) + " ORDER BY c.doc_id, c.seq"
        rows = self._conn().execute(sql).fetchall()
        return self._flagged([ChunkRecord(*row) for row in rows])

    def _flagged(self, records: list[ChunkRecord]) -> list[ChunkRecord]:
        """The records with the injection flags ingestion gave them."""
        flags = scan.chunk_flags(self._conn(), [r.id for r in records], self._gen.number)
        return [replace(r, flags=flags[r.id]) if r.id in flags else r for r in records]

    def flagged_count(self) -> int:
        """Chunks flagged at ingestion for instruction-like text."""
        return scan.flagged_count(self._conn(), self._gen.number)

    def chunk_text(self, doc_id: str, seq: int) -> str | None:
        """The text of a document's chunk number ``seq`` (partial documents included)."""
        row = (
            self._conn()
            .execute(
                f"SELECT text FROM chunks c WHERE doc_id = ? AND seq = ? "
                f"AND {meta.live('c', self._gen.number)}",
                (doc_id, seq),
            )
            .fetchone()
        )
        return row[0] if row else None

    def records(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        """Chunks by internal id (unknown ids are left out)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        sql = _first_source_select(self._gen.number) + f" AND c.id IN ({marks})"
        rows = self._conn().execute(sql, [int(i) for i in ids]).fetchall()
        return {r.id: r for r in self._flagged([ChunkRecord(*row) for row in rows])}

    def _admission(self, within: frozenset[str] | None) -> collections.Admission:
        """What searches of this generation may return (cached per ``within``)."""
        gen = self._gen
        key = ("admission", within)
        found = gen.cache.get(key)
        if found is None:
            found = collections.admission(
                self._store._codes, self._conn(), gen.number, within, gen.dead,
                gen.manifest.chunks,
            )  # fmt: skip
            with gen.cache_lock:
                if len([k for k in gen.cache if k[0] == "admission"]) >= _ADMISSION_CACHE:
                    for old in [k for k in gen.cache if k[0] in ("admission", "allowed")]:
                        gen.cache.pop(old, None)
                gen.cache[key] = found
        assert isinstance(found, collections.Admission)
        return found

    def _allowed(
        self, within: frozenset[str] | None, seg: Segment
    ) -> tuple[np.ndarray | None, int]:
        """Positions of ``seg`` a search may return (None: all) and how many."""
        key = ("allowed", within, seg.info.name)
        found = self._gen.cache.get(key)
        if found is None:
            allowed = self._admission(within).positions(seg.labels)
            count = seg.count if allowed is None else int(np.count_nonzero(allowed))
            found = (allowed, count)
            with self._gen.cache_lock:
                self._gen.cache[key] = found
        return found

    def search_chunks_by_vector(
        self, vector: Sequence[float], k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks nearest ``vector`` with their cosine similarity, best first.

        ``within``: only chunks of these collections (None: all), filtered inside the
        search, so there are ``k`` of them whenever the collections hold ``k``. Large
        segments are searched approximately (``segments.ANN_KIND``), small ones exactly.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        self._conn()
        if self._gen.manifest.chunks == 0:
            return []
        query = np.asarray([vector], dtype="float32")
        faiss.normalize_L2(query)
        # One query searches on one thread: questions run in parallel threads (batch runs,
        # several users), and OpenMP threads on top of them only contend. Measured for one
        # query over 12k / 200k vectors: 2.1 / 30.6 ms on 2 threads, 0.8 / 17.3 ms on one.
        # (The setting belongs to the calling thread.)
        faiss.omp_set_num_threads(1)
        found_scores, found_ids = [], []
        for seg in self._gen.segments:
            allowed, admitted = self._allowed(within, seg)
            scores, ids = seg.search(query, k, allowed, admitted)
            found_scores.append(scores)
            found_ids.append(ids)
        if not found_scores:
            return []
        scores = np.concatenate(found_scores)
        ids = np.concatenate(found_ids)
        order = np.argsort(-scores, kind="stable")[:k]
        hits = [(int(ids[i]), min(1.0, max(-1.0, float(scores[i])))) for i in order]
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
        known = self._gen.cache.setdefault("match_counts", {})
        terms = collections.discriminating(db, terms, self._gen.manifest.chunks, known)
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        # Rows a writer committed for a generation it has not published yet (rare, brief).
        unseen = frozenset(
            r[0]
            for r in db.execute("SELECT id FROM chunks WHERE added_gen > ?", (self._gen.number,))
        )
        rows = collections.keyword_rows(
            db, self._admission(within), unseen, (KEYWORD_HEADING_WEIGHT, match), k
        )
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
        """The stored (normalised) vectors of chunks, in order.

        Raises:
            KeyError: a chunk id is not in this generation's segments.
        """
        self._conn()
        ids = np.asarray([int(c) for c in chunk_ids], dtype=np.int64)
        out = np.zeros((len(ids), self._gen.manifest.dimension), dtype=np.float32)
        todo = np.ones(len(ids), dtype=bool)
        for seg in reversed(self._gen.segments):  # newest first
            if not todo.any():
                break
            pos = seg.positions(ids)
            hit = todo & (pos >= 0)
            if hit.any():
                out[hit] = seg.vectors_at(pos[hit])
                todo &= ~hit
        if todo.any():
            raise KeyError(f"chunk {int(ids[todo][0])} is not in generation {self._gen.name}")
        return out

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
            condition, args = collections.sql_filter(within, "c.collection")
        rows = db.execute(
            _first_source_select(self._gen.number)
            + f" AND c.chunk_id IN ({marks}) AND {condition}",
            [*ids, *args],
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
    removed: list[str]  # leftover generations deleted


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
    generations: list[str]  # every generation manifest present, oldest first
    leftovers: list[str]  # generations newer than the published one: left by crashed writers
    segments: list[dict[str, Any]] = field(default_factory=list)  # name, count, kind, dead

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat index status --json`` prints."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class CompactionReport:
    """What one compaction did."""

    merged: list[str]  # segments replaced
    into: str  # the segment that replaced them
    kind: str
    vectors: int  # vectors in the new segment
    dropped: int  # tombstoned vectors left out
    seconds: float
    generation: str  # the generation that published it


_PIN_ATTEMPTS = 50


class FaissStore(ViewStore):
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
        auto_compact: bool = True,
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
        # Merge segments in a background thread when a publish leaves them due (bench and
        # tests turn it off to compact when they choose).
        self.auto_compact = auto_compact
        self._current: _Generation | None = None
        self._segments: dict[str, Segment] = {}  # loaded segments, shared by generations
        self._codes = collections.IdCodes()
        self._idle: list[sqlite3.Connection] = []  # pooled read connections
        self._lock = threading.Lock()  # guards _current, pins, the pool and _segments
        self._open_lock = threading.Lock()  # one thread opens a new generation at a time
        self._compacting = threading.Lock()  # one compaction thread per store

    # -- reading ----------------------------------------------------------------------

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

    def _manifest_path(self, generation: str) -> Path:
        return self.index_dir / MANIFESTS / f"{generation}.json"

    def segment_path(self, name: str) -> Path:
        """The file of a segment."""
        return self.index_dir / SEGMENTS / f"{name}.faiss"

    def _read_manifest(self, generation: str) -> Manifest:
        """A generation's manifest, checked against our model.

        Raises:
            FileNotFoundError: it is missing.
            IndexCorruptError: it is unreadable or of another format.
            IndexMismatchError: it was built with another embedding model.
        """
        path = self._manifest_path(generation)
        try:
            manifest = Manifest.read(path)
        except FileNotFoundError:
            if (self.index_dir / generation / "manifest.json").is_file():
                raise IndexCorruptError(self.index_dir, _OLD_FORMAT) from None
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptError(self.index_dir, f"bad {path.name}: {exc}") from exc
        self.check_manifest(manifest)
        return manifest

    def _load_segments(self, manifest: Manifest) -> list[Segment]:
        """The manifest's segments, loading only those not loaded yet.

        Raises:
            FileNotFoundError: a segment file is missing.
            IndexCorruptError: one is unreadable or does not match the manifest.
        """
        out = []
        for info in manifest.segments:
            with self._lock:
                seg = self._segments.get(info.name)
            if seg is None or seg.info != info:
                try:
                    seg = segments.read_segment(info, self.segment_path(info.name))
                except ValueError as exc:
                    raise IndexCorruptError(self.index_dir, str(exc)) from exc
                if seg.index.d != manifest.dimension:
                    raise IndexCorruptError(
                        self.index_dir, f"{info.name} has dimension {seg.index.d}"
                    )
            out.append(seg)
        return out

    def _check_meta(self, db: sqlite3.Connection, manifest: Manifest) -> None:
        """The database must hold the generation the manifest describes.

        Raises:
            IndexCorruptError: it is unreadable or disagrees with the manifest.
        """
        gen = manifest.generation
        try:
            db.execute(_first_source_select(gen) + " LIMIT 0").fetchall()
            (n_chunks,) = db.execute(
                f"SELECT COUNT(*) FROM chunks c WHERE {meta.live('c', gen)}"
            ).fetchone()
            dead = len(_dead_ids(db, gen, manifest.segment_names))
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(self.index_dir, f"bad {META}: {exc}; {META_LOST}") from exc
        if n_chunks != manifest.chunks or manifest.vectors - dead != n_chunks:
            raise IndexCorruptError(
                self.index_dir,
                f"g{gen:06d} lists {manifest.chunks} chunks and {manifest.vectors - dead} live "
                f"vectors, {META} has {n_chunks}",
            )

    def _verify(self, generation: str) -> Manifest:
        """Check a generation fully: manifest, every segment, the database agreeing.

        Raises:
            FileNotFoundError: a file of the generation is missing.
            IndexCorruptError: a file is unreadable, or the files disagree.
            IndexMismatchError: it was built with another embedding model.
        """
        manifest = self._read_manifest(generation)
        self._load_segments(manifest)
        db = self._open_db(readonly=True)
        try:
            db.execute("BEGIN")
            self._check_meta(db, manifest)
        finally:
            db.close()
        return manifest

    def _open_db(self, *, readonly: bool) -> sqlite3.Connection:
        path = self.index_dir / META
        if not path.is_file():
            raise FileNotFoundError(2, "missing", str(path))
        try:
            return _connect_readonly(path) if readonly else _connect_writable(path)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(self.index_dir, f"bad {META}: {exc}; {META_LOST}") from exc

    def _published_base(self) -> tuple[str | None, Manifest | None]:
        """The published generation, checked, for a writer to start from.

        With no ``CURRENT`` but an intact generation on disk (a run killed between writing
        its manifest and publishing, or ``CURRENT`` deleted by hand), that generation is
        published first: it is complete, so this is the state after that run, and nothing
        intact is ever thrown away. Segments are checked to be there, not loaded (a writer
        does not read vectors).

        Raises:
            IndexCorruptError: ``CURRENT`` names a missing or broken generation (nothing is
                deleted then; the message says how to repair).
        """
        base = self.current_generation()
        if base is None:
            intact = self._newest_intact(self.generations())
            if intact is None:
                return None, None
            logger.warning("%s was missing; publishing the intact generation %s", CURRENT, intact)
            try:
                _publish(self.index_dir, intact)
            except OSError as exc:
                raise self._unwritable(exc, intact) from exc
            base = intact
        try:
            manifest = self._read_manifest(base)
            self._check_segment_files(manifest)
        except FileNotFoundError as exc:
            raise IndexCorruptError(
                self.index_dir, f"{CURRENT} names {base}, but {exc.filename} is missing; "
                f"{REPAIR_HINT}",
            ) from exc  # fmt: skip
        except IndexCorruptError as exc:
            raise self._repairable(exc) from exc
        return base, manifest

    def _check_segment_files(self, manifest: Manifest) -> None:
        """Check that the manifest's segment files are there, whole (by size).

        Raises:
            FileNotFoundError: one is missing.
            IndexCorruptError: one has another size than written.
        """
        for info in manifest.segments:
            try:
                info.check_file(self.segment_path(info.name))
            except ValueError as exc:
                raise IndexCorruptError(self.index_dir, str(exc)) from exc

    def _repairable(self, exc: IndexCorruptError) -> IndexCorruptError:
        """The error with the way out added, unless repair cannot help."""
        if exc.reason.startswith("format version") or META_LOST in exc.reason:
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
        meanwhile, inside one read transaction of the database.

        Raises:
            IndexNotFoundError: nothing has been published yet.
            IndexCorruptError: the published generation is missing or broken.
        """
        gen, db = self._pin()
        view = StoreView(gen, db, self)
        try:
            yield view
        finally:
            self._unpin(gen, view.close())

    def _pin(self) -> tuple[_Generation, sqlite3.Connection]:
        for _ in range(_PIN_ATTEMPTS):
            name = self.current_generation()
            if name is None:
                raise IndexNotFoundError(self.index_dir)
            identity = _identity(self._manifest_path(name))
            gen: _Generation | None = None
            with self._lock:
                if self._serves(name, identity):
                    gen = self._current
                    assert gen is not None
                    gen.pins += 1
            if gen is None:
                gen = self._install()
                if gen is None:
                    continue  # replaced and removed while we opened it: read CURRENT again
            db = self._read_connection(gen)
            if db is not None:
                return gen, db
            self._unpin(gen, None)  # purged under it: CURRENT moved on twice meanwhile
        raise IndexCorruptError(
            self.index_dir, f"{CURRENT} kept changing while it was read; try again"
        )

    def _read_connection(self, gen: _Generation) -> sqlite3.Connection | None:
        """A pooled connection in a read transaction that still holds ``gen`` (else None)."""
        with self._lock:
            db = self._idle.pop() if self._idle else None
        try:
            if db is None:
                db = self._open_db(readonly=True)
            db.execute("BEGIN")
            oldest = meta.counter(db, "oldest_readable")
        except FileNotFoundError as exc:
            raise IndexCorruptError(
                self.index_dir, f"{exc.filename} is missing; {META_LOST}"
            ) from exc
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            raise IndexCorruptError(self.index_dir, f"bad {META}: {exc}; {META_LOST}") from exc
        if gen.number < oldest:
            db.execute("ROLLBACK")
            with self._lock:
                self._idle.append(db)
            return None
        return db

    def _install(self) -> _Generation | None:
        """Open the generation ``CURRENT`` names now and serve it; returned pinned.

        Returns None when it vanished while being opened (a newer one replaced it).
        """
        with self._open_lock:
            name = self.current_generation()
            if name is None:
                raise IndexNotFoundError(self.index_dir)
            identity = _identity(self._manifest_path(name))
            with self._lock:
                if self._serves(name, identity):
                    gen = self._current
                    assert gen is not None
                    gen.pins += 1
                    return gen
            try:
                manifest = self._read_manifest(name)
                loaded = self._load_segments(manifest)
                dead = self._read_dead(manifest)
            except FileNotFoundError as exc:
                if self.current_generation() == name:
                    raise IndexCorruptError(
                        self.index_dir,
                        f"{CURRENT} names {name}, but {exc.filename} is missing; {REPAIR_HINT}",
                    ) from exc
                return None
            except IndexCorruptError as exc:
                raise self._repairable(exc) from exc
            gen = _Generation(name, identity, manifest, loaded, dead)
            logger.debug("opened index generation %s", name)
            with self._lock:
                old, self._current = self._current, gen
                gen.pins += 1
                if old is not None:
                    old.retired = True
                # Keep the segments of the generations still served; the rest stay alive
                # for as long as a pinned generation references them.
                # Pinned older generations hold their own segments.
                self._segments = {s.info.name: s for s in loaded}
            return gen

    def _read_dead(self, manifest: Manifest) -> np.ndarray:
        db = self._open_db(readonly=True)
        try:
            db.execute("BEGIN")
            return _dead_ids(db, manifest.generation)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(self.index_dir, f"bad {META}: {exc}; {META_LOST}") from exc
        finally:
            db.close()

    def _serves(self, name: str, identity: tuple[int, ...] | None) -> bool:
        """Whether the open generation is the one named, in the same file (under the lock)."""
        gen = self._current
        return (
            gen is not None
            and identity is not None
            and gen.name == name
            and gen.identity == identity
        )

    def _unpin(self, gen: _Generation, db: sqlite3.Connection | None) -> None:
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")  # ends the read transaction
        with self._lock:
            gen.pins -= 1
            if db is not None:
                self._idle.append(db)

    def close(self) -> None:
        """Release the open generation and pooled connections (open views keep theirs)."""
        with self._lock:
            old, self._current = self._current, None
            if old is not None:
                old.retired = True
            idle, self._idle = self._idle, []
            self._segments = {}
            self._codes = collections.IdCodes()
        for db in idle:
            db.close()

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

    def generations(self) -> list[str]:
        """Generation manifests present on disk, oldest first (published or not)."""
        folder = self.index_dir / MANIFESTS
        if not folder.is_dir():
            return []
        names = [m.group(1) for p in folder.iterdir() if (m := _MANIFEST_FILE.match(p.name))]
        return sorted(names, key=_gen_number)

    # -- checking and repairing -------------------------------------------------------

    def repair(self) -> RepairReport:
        """Point ``CURRENT`` at the newest intact generation and remove crashed leftovers.

        Takes the writer lock (waiting like a writer). When the published generation is
        intact, only what crashed writers left behind is removed. Rows of generations after
        the one published are rolled back.

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
                    checked = ", ".join(gens) or "no generation"
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
            removed = [g for g in gens if _gen_number(g) > _gen_number(current)]
            db = self._open_db(readonly=False)
            try:
                db.execute("BEGIN IMMEDIATE")
                meta.roll_back_unpublished(db, _gen_number(current))
                db.execute("COMMIT")
            finally:
                db.close()
            for gen in removed:
                logger.info("repair: removing leftover generation %s", gen)
                segments.remove_quietly(self._manifest_path(gen))
            self._remove_unreferenced(self._retained(current))
            segments.remove_quietly(self.index_dir / f"{CURRENT}.tmp")
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

    def _retained(self, published: str) -> list[Manifest]:
        """The manifests kept beside the published one: it and the one before (if readable)."""
        kept = []
        number = _gen_number(published)
        for name in (published, _gen_name(number - 1)):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, IndexCorruptError,
                                     IndexMismatchError):  # fmt: skip
                kept.append(self._read_manifest(name))
        return kept

    def _remove_unreferenced(self, kept: Sequence[Manifest]) -> None:
        """Delete manifests older than those kept and segment files none of them uses.

        Temporary segment files are left to a compaction still building them.
        """
        if not kept:
            return
        oldest = min(m.generation for m in kept)
        for gen in self.generations():
            if _gen_number(gen) < oldest:
                segments.remove_quietly(self._manifest_path(gen))
        used = {name for m in kept for name in m.segment_names}
        folder = self.index_dir / SEGMENTS
        if not folder.is_dir():
            return
        compacting = self._compaction_running()
        for path in folder.iterdir():
            m = _SEGMENT_FILE.match(path.name)
            unused = m is not None and m.group(1) not in used
            if unused or (path.name.endswith(".tmp") and not compacting):
                segments.remove_quietly(path)

    def status(self) -> IndexStatus:
        """Published generation, counts, model, segments and disk use of the index.

        Raises:
            IndexNotFoundError: nothing has been published yet.
            IndexCorruptError: the published generation is missing or broken.
        """
        with self.reader() as view:
            manifest, generation = view.manifest, view.generation
            documents, chunks = len(view.documents()), view.chunk_count()
            dead = self._dead_by_segment(view._conn(), manifest)
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
            leftovers=[g for g in gens if _gen_number(g) > _gen_number(generation)],
            segments=[{**s.to_json(), "dead": dead.get(s.name, 0)} for s in manifest.segments],
        )

    @staticmethod
    def _dead_by_segment(db: sqlite3.Connection, manifest: Manifest) -> dict[str, int]:
        """Tombstoned vectors per segment of a generation."""
        rows = db.execute(
            "SELECT segment, COUNT(*) FROM chunks WHERE removed_gen IS NOT NULL "
            "AND removed_gen <= ? GROUP BY segment",
            (manifest.generation,),
        )
        names = set(manifest.segment_names)
        return {name: int(n) for name, n in rows if name in names}

    # -- compaction -------------------------------------------------------------------

    def _compaction_running(self) -> bool:
        """Whether some process holds the compaction lock."""
        try:
            fd = os.open(self.index_dir / COMPACT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return True  # cannot tell: assume so, and leave its files alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # releases it if we took it
        return False

    def compaction_due(self) -> list[str]:
        """Segments a compaction would merge now ([]: none due)."""
        if not self.exists():
            return []
        with self.reader() as view:
            dead = self._dead_by_segment(view._conn(), view.manifest)
            return [s.name for s in segments.plan_compaction(view.manifest.segments, dead)]

    def compact(
        self, *, threads: int = 0, on_wait: Callable[[float], None] | None = None
    ) -> CompactionReport | None:
        """Merge the segments that are due into one approximate segment, minus tombstones.

        The new segment is built outside the writer lock, from immutable segments of the
        published generation; the lock is taken only to publish it (the generation keeps
        every row, and chunks deleted meanwhile stay tombstoned). Returns None when nothing
        was due, or another process is compacting. ``threads``: OpenMP threads for the
        build (0: FAISS's default, every core).

        Raises:
            IndexUnwritableError: the segment could not be written (nothing is published).
        """
        with self._compacting:  # after this process's background compaction, if any
            return self._compact_once(threads, on_wait)

    def compact_all(self, *, threads: int = 0) -> list[CompactionReport]:
        """Compact until nothing is due (what ``ragchat index compact`` runs)."""
        done = []
        while (report := self.compact(threads=threads)) is not None:
            done.append(report)
        return done

    def _compact_once(
        self, threads: int, on_wait: Callable[[float], None] | None
    ) -> CompactionReport | None:
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.index_dir / COMPACT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise IndexUnwritableError(self.index_dir, _disk_reason(exc)) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another process is compacting
            return self._compact_locked(threads, on_wait)
        finally:
            os.close(fd)

    def _compact_locked(
        self, threads: int, on_wait: Callable[[float], None] | None
    ) -> CompactionReport | None:
        started = time.monotonic()
        if not self.exists():
            return None
        with self.reader() as view:
            manifest = view.manifest
            dead_by_segment = self._dead_by_segment(view._conn(), manifest)
            plan = segments.plan_compaction(manifest.segments, dead_by_segment)
            if not plan:
                return None
            chosen = {s.name for s in plan}
            parts = [s for s in view._gen.segments if s.info.name in chosen]
            dead = view._gen.dead
            vectors, ids = [], []
            for seg in parts:
                keep = ~np.isin(seg.labels, dead)
                vectors.append(seg.vectors_at(np.flatnonzero(keep)))
                ids.append(seg.labels[keep])
        all_vectors = np.concatenate(vectors) if vectors else np.zeros((0, manifest.dimension))
        all_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        del vectors
        kind = segments.ANN_KIND
        logger.info("compacting %d segments (%d vectors) into one", len(plan), len(all_ids))
        index = segments.build_index(kind, all_vectors, all_ids, threads=threads)
        del all_vectors
        folder = self.index_dir / SEGMENTS
        tmp = folder / f"compact-{os.getpid()}-{threading.get_ident()}.faiss.tmp"
        try:
            _write_index(index, tmp)
        except OSError as exc:
            segments.remove_quietly(tmp)
            raise self._unwritable(exc, "a compacted segment") from exc
        count = int(index.ntotal)
        del index
        try:
            with self.writer(on_wait) as w:
                into = w.replace_segments(plan, tmp, kind, count, manifest.generation)
                generation = w.generation
        finally:
            segments.remove_quietly(tmp)
        if into is None:
            return None
        dropped = sum(s.count for s in plan) - count
        report = CompactionReport(
            merged=sorted(chosen), into=into, kind=kind, vectors=count, dropped=dropped,
            seconds=time.monotonic() - started, generation=generation,
        )  # fmt: skip
        logger.info("compacted %s into %s (%d vectors, %d dropped) in %.1f s",
                    ", ".join(report.merged), into, count, dropped, report.seconds)  # fmt: skip
        return report

    def _after_publish(self, manifest: Manifest) -> None:
        """Start a background compaction when one is due (one thread per store)."""
        if not self.auto_compact:
            return
        if not segments.plan_compaction(manifest.segments, {}):
            return
        if not self._compacting.acquire(blocking=False):
            return

        def run() -> None:
            try:
                self._compact_once(0, None)
            except Exception:  # a background task: log, the next publish tries again
                logger.exception("background compaction of %s failed", self.index_dir)
            finally:
                self._compacting.release()

        threading.Thread(target=run, name="ragchat-compact", daemon=True).start()

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
    """Changes for one new generation; built by ``FaissStore.writer()`` under the lock.

    Its rows go into the database inside one transaction, tagged with the generation; its
    vectors into one new segment, written at commit.
    """

    def __init__(self, store: FaissStore) -> None:
        self.store = store
        self.index_dir = store.index_dir
        # Check the published generation before touching anything, so a writer never removes
        # the only intact copy when CURRENT names a missing or broken one.
        self._base, self._base_manifest = store._published_base()
        base_no = _gen_number(self._base) if self._base else 0
        self.gen = base_no + 1
        self.generation = _gen_name(self.gen)
        self.changed = False
        self._new_ids: list[np.ndarray] = []
        self._new_vectors: list[np.ndarray] = []
        self._dropped_new: set[int] = set()  # chunks this writer added, then deleted
        self._segment: str | None = None  # the segment this writer's vectors go to
        self._segments: list[SegmentInfo] = list(
            self._base_manifest.segments if self._base_manifest else ()
        )
        self._chunks = self._base_manifest.chunks if self._base_manifest else 0
        self._new_files: list[Path] = []
        if self._base_manifest is not None:
            self.dimension = self._base_manifest.dimension
        else:
            self.dimension = store.dimension
        # The generations kept beside the new one: their segments must stay on disk.
        self._kept = store._retained(self._base) if self._base is not None else []
        try:
            self._clean_stale()
            self.db = self._begin()
        except (OSError, sqlite3.Error) as exc:
            if _is_disk_error(exc):
                raise store._unwritable(exc, self.generation) from exc
            raise

    def _begin(self) -> sqlite3.Connection:
        """Open the database (created with the first generation) and begin the transaction."""
        (self.index_dir / SEGMENTS).mkdir(parents=True, exist_ok=True)
        (self.index_dir / MANIFESTS).mkdir(parents=True, exist_ok=True)
        path = self.index_dir / META
        fresh = not path.exists()
        try:
            db = _connect_writable(path)
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(self.index_dir, f"bad {META}: {exc}; {META_LOST}") from exc
        try:
            if fresh or not _has_schema(db):
                meta.create(db)
            db.execute("BEGIN IMMEDIATE")
            base_no = self.gen - 1
            undone = meta.roll_back_unpublished(db, base_no)
            if undone:
                logger.info("rolled back %d rows of unpublished generations", undone)
            if base_no > 1 and self._base is not None:
                meta.purge(db, base_no - 1, {n for m in self._kept for n in m.segment_names})
            scanner = self.store.scanner
            self.scanning = scanner is not None
            scanned = self._base_manifest.scanned_with if self._base_manifest else None
            if scanner is not None and self._base_manifest is not None:
                if scanned != scanner.version:
                    scan.rescan(db, scanner, self.gen)
                    self.changed = True  # a rescan is worth publishing on its own
            elif scanner is None and scanned is not None:
                self.changed = True  # the new generation no longer claims to be scanned
        except sqlite3.DatabaseError as exc:
            db.close()
            if _is_disk_error(exc):
                raise
            raise IndexCorruptError(self.index_dir, f"bad {META}: {exc}; {META_LOST}") from exc
        except BaseException:
            db.close()
            raise
        return db

    def _clean_stale(self) -> None:
        """Remove manifests of generations crashed writers never published, and old files.

        Runs once the published generation has been checked (or, with no ``CURRENT``, once
        no generation was found intact), so it never removes the only good copy.
        """
        base_no = _gen_number(self._base) if self._base else 0
        for gen in self.store.generations():
            if _gen_number(gen) > base_no:
                logger.info("removing unpublished index generation %s", gen)
                segments.remove_quietly(self.store._manifest_path(gen))
        self.store._remove_unreferenced(self._kept)

    # -- queries inside the transaction ---------------------------------------------

    def _live(self, alias: str) -> str:
        return meta.live(alias, self.gen)

    def source_document(self, path: str) -> str | None:
        """The document id a source path currently points at."""
        row = self.db.execute(
            f"SELECT doc_id FROM sources s WHERE path = ? AND {self._live('s')}", (path,)
        ).fetchone()
        return row[0] if row else None

    def has_document(self, doc_id: str) -> bool:
        """Whether a document with this content is stored."""
        return self._document_row(doc_id) is not None

    def _document_row(self, doc_id: str) -> tuple[Any, ...] | None:
        """(rid, kind, pages, chunks, ingested_at, collection, partial_source, added_gen)."""
        row: tuple[Any, ...] | None = self.db.execute(
            "SELECT rid, kind, pages, chunks, ingested_at, collection, partial_source, added_gen "
            f"FROM documents d WHERE doc_id = ? AND {self._live('d')}",
            (doc_id,),
        ).fetchone()
        return row

    def sources(self) -> dict[str, str]:
        """Every source path with its document id."""
        return dict(self.db.execute(f"SELECT path, doc_id FROM sources s WHERE {self._live('s')}"))

    def document_sources(self, doc_id: str) -> list[tuple[str, str | None]]:
        """(path, title) of each source of a document, oldest first."""
        rows = self.db.execute(
            f"SELECT path, title FROM sources s WHERE doc_id = ? AND {self._live('s')} "
            "ORDER BY added_at, rid",
            (doc_id,),
        )
        return [(r[0], r[1]) for r in rows]

    def chunk_ids(self, doc_id: str) -> list[str]:
        """Chunk ids of a document in order."""
        rows = self.db.execute(
            f"SELECT chunk_id FROM chunks c WHERE doc_id = ? AND {self._live('c')} ORDER BY seq",
            (doc_id,),
        )
        return [r[0] for r in rows]

    def doc_ids_of_chunks(self, chunk_ids: Sequence[str]) -> list[str]:
        """Documents owning the given chunk ids."""
        marks = ",".join("?" * len(chunk_ids))
        rows = self.db.execute(
            f"SELECT DISTINCT doc_id FROM chunks c WHERE chunk_id IN ({marks}) "
            f"AND {self._live('c')}",
            list(chunk_ids),
        )
        return [r[0] for r in rows]

    def documents(self, within: frozenset[str] | None = None) -> list[DocumentInfo]:
        """Documents as this transaction sees them (of the collections ``within``)."""
        return _documents(self.db, self.gen, self.scanning, within)

    def collection_of(self, doc_id: str) -> str:
        """The collection a stored document is in."""
        row = self._document_row(doc_id)
        return str(row[5]) if row else collections.DEFAULT_COLLECTION

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
            "INSERT INTO documents (doc_id, kind, pages, chunks, ingested_at, collection, "
            "partial_source, added_gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (doc_id, kind, pages, len(chunks), _now(), collection,
             None if complete else source, self.gen),
        )  # fmt: skip
        self._insert_chunks(doc_id, 0, chunks, vectors, collection)
        if complete:
            self.add_source(source, doc_id, title)
        else:
            current = self.source_document(source)
            if current is None or self.partial_chunks(current) is not None:
                self.add_source(source, doc_id, title)  # replaces an older partial version
        self.changed = True

    def _update_document(self, doc_id: str, chunks: int, partial_source: str | None) -> None:
        """A new version of a document's row (changed in place if this writer added it)."""
        row = self._document_row(doc_id)
        assert row is not None
        rid, kind, pages, _, ingested_at, collection, _, added_gen = row
        if added_gen == self.gen:
            self.db.execute(
                "UPDATE documents SET chunks = ?, partial_source = ? WHERE rid = ?",
                (chunks, partial_source, rid),
            )
            return
        meta.retire(self.db, "documents", "rid", rid, self.gen)
        self.db.execute(
            "INSERT INTO documents (doc_id, kind, pages, chunks, ingested_at, collection, "
            "partial_source, added_gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (doc_id, kind, pages, chunks, ingested_at, collection, partial_source, self.gen),
        )

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
        row = self._document_row(doc_id)
        if row is None or row[6] is None:
            raise ValueError(f"document {doc_id} is not a partial document")
        done, source, collection = int(row[3]), str(row[6]), str(row[5])
        vectors = self._check_vectors(chunks, vectors)
        self._insert_chunks(doc_id, done, chunks, vectors, collection)
        total = done + len(chunks)
        self._update_document(doc_id, total, None if complete else source)
        if complete and self.source_document(source) != doc_id:
            self.add_source(source, doc_id)
        self.changed = True

    def partial_chunks(self, doc_id: str) -> int | None:
        """How many chunks of a partial document are stored; None unless it is partial."""
        row = self._document_row(doc_id)
        if row is None or row[6] is None:
            return None
        return int(row[3])

    def partial_documents(self) -> dict[str, tuple[str, int]]:
        """doc_id -> (source path, chunks stored) of every partial document."""
        return _partial_rows(self.db, self.gen)

    def _check_vectors(self, chunks: Sequence[NewChunk], vectors: np.ndarray) -> np.ndarray:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.array(vectors, dtype="float32", copy=True, order="C")
        if len(chunks) and (vectors.ndim != 2 or vectors.shape[1] != self.dimension):
            raise ValueError(f"vectors must have shape (n, {self.dimension})")
        return vectors

    def _insert_chunks(
        self,
        doc_id: str,
        first_seq: int,
        chunks: Sequence[NewChunk],
        vectors: np.ndarray,
        collection: str,
    ) -> None:
        """Chunk rows numbered from ``first_seq`` and their vectors (normalised here)."""
        if not chunks:
            return
        if self._segment is None:
            self._segment = segments.segment_name(meta.take(self.db, "next_segment", 1))
        first = meta.take(self.db, "next_id", len(chunks))
        ids = np.arange(first, first + len(chunks), dtype="int64")
        self.db.executemany(
            "INSERT INTO chunks (id, chunk_id, doc_id, seq, text, page, heading, char_offset, "
            "collection, segment, added_gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (int(i), f"{doc_id[:16]}-{seq:05d}", doc_id, seq, c.text, c.page, c.heading,
                 c.offset, collection, self._segment, self.gen)
                for seq, (i, c) in enumerate(zip(ids, chunks, strict=True), first_seq)
            ],
        )  # fmt: skip
        scanner = self.store.scanner
        if self.scanning and scanner is not None:
            scan.store_scans(
                self.db,
                [
                    (int(i), c.scan or scanner(scan.scan_text(c.text, c.heading)))
                    for i, c in zip(ids, chunks, strict=True)
                ],
                self.gen,
            )
        faiss.normalize_L2(vectors)
        self._new_ids.append(ids)
        self._new_vectors.append(vectors)
        self._chunks += len(chunks)

    def add_source(self, path: str, doc_id: str, title: str | None = None) -> None:
        """Point a source path at a stored document (replacing what it pointed at).

        ``title`` is the name to show for it (an upload's original file name).
        """
        row = self.db.execute(
            f"SELECT rid, doc_id, title, added_at, added_gen FROM sources s "
            f"WHERE path = ? AND {self._live('s')}",
            (path,),
        ).fetchone()
        if row is not None and row[1] == doc_id:
            rid, _, current, added_at, added_gen = row
            if title is not None and title != current:
                if added_gen == self.gen:
                    self.db.execute("UPDATE sources SET title = ? WHERE rid = ?", (title, rid))
                else:
                    meta.retire(self.db, "sources", "rid", rid, self.gen)
                    self.db.execute(
                        "INSERT INTO sources (path, doc_id, added_at, title, added_gen) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (path, doc_id, added_at, title, self.gen),
                    )
                self.changed = True
            return
        if row is not None:
            self.remove_source(path)
        self.db.execute(
            "INSERT INTO sources (path, doc_id, added_at, title, added_gen) VALUES (?, ?, ?, ?, ?)",
            (path, doc_id, _now(), title, self.gen),
        )
        self.changed = True

    def remove_source(self, path: str) -> str | None:
        """Forget a source path; its document goes too when no other path names it.

        Returns:
            The id of the document deleted with it, if any.
        """
        row = self.db.execute(
            f"SELECT rid, doc_id FROM sources s WHERE path = ? AND {self._live('s')}", (path,)
        ).fetchone()
        if row is None:
            return None
        rid, doc_id = row
        meta.retire(self.db, "sources", "rid", rid, self.gen)
        self.changed = True
        (left,) = self.db.execute(
            f"SELECT COUNT(*) FROM sources s WHERE doc_id = ? AND {self._live('s')}", (doc_id,)
        ).fetchone()
        if left == 0:
            self.delete_document(doc_id)
            return str(doc_id)
        return None

    def delete_document(self, doc_id: str) -> None:
        """Remove a document, all its sources, chunks and vectors (recorded, not rewritten)."""
        g = self.gen
        ids = [
            r[0]
            for r in self.db.execute(
                f"SELECT id FROM chunks c WHERE doc_id = ? AND {self._live('c')}", (doc_id,)
            )
        ]
        if ids:
            self._chunks -= len(ids)
            own = [
                r[0]
                for r in self.db.execute(
                    "SELECT id FROM chunks WHERE doc_id = ? AND added_gen = ?", (doc_id, g)
                )
            ]
            self._dropped_new.update(own)
            for batch in _batches(ids, 500):
                marks = ",".join("?" * len(batch))
                self.db.execute(
                    f"UPDATE chunk_guard SET removed_gen = ? WHERE id IN ({marks}) "
                    "AND removed_gen IS NULL AND added_gen < ?",
                    (g, *batch, g),
                )
                self.db.execute(
                    f"DELETE FROM chunk_guard WHERE id IN ({marks}) AND added_gen = ?", (*batch, g)
                )
            self.db.execute("DELETE FROM chunks WHERE doc_id = ? AND added_gen = ?", (doc_id, g))
            self.db.execute(
                "UPDATE chunks SET removed_gen = ? WHERE doc_id = ? AND removed_gen IS NULL",
                (g, doc_id),
            )
        for table in ("sources", "documents"):
            self.db.execute(f"DELETE FROM {table} WHERE doc_id = ? AND added_gen = ?", (doc_id, g))
            self.db.execute(
                f"UPDATE {table} SET removed_gen = ? WHERE doc_id = ? AND removed_gen IS NULL",
                (g, doc_id),
            )
        self.changed = True

    def replace_segments(
        self, old: Sequence[SegmentInfo], built: Path, kind: str, count: int, built_at: int
    ) -> str | None:
        """Put a compacted segment in place of ``old`` (built from generation ``built_at``).

        Returns its name, or None when ``old`` is no longer all published (another
        compaction replaced some of them): nothing changes then.
        """
        if not set(old) <= set(self._segments):
            return None
        name = segments.segment_name(meta.take(self.db, "next_segment", 1))
        path = self.store.segment_path(name)
        _replace(built, path)
        self._new_files.append(path)
        # Every chunk alive when it was built has its vector there now.
        names = [s.name for s in old]
        marks = ",".join("?" * len(names))
        self.db.execute(
            f"UPDATE chunks SET segment = ? WHERE segment IN ({marks}) "
            "AND (removed_gen IS NULL OR removed_gen > ?)",
            (name, *names, built_at),
        )
        at = min(self._segments.index(s) for s in old)
        kept = [s for s in self._segments if s not in old]
        kept.insert(min(at, len(kept)), SegmentInfo(name, count, kind, path.stat().st_size))
        self._segments = kept
        self.changed = True
        return name

    # -- ending -----------------------------------------------------------------------

    def commit(self) -> None:
        """Write the new segment, commit the rows, then publish the manifest with one rename.

        Raises:
            IndexUnwritableError: a write failed (full disk, read-only...); nothing is
                published and ``CURRENT`` is untouched.
        """
        if not self.changed:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("COMMIT")  # the roll-back and purge (invisible to readers)
            self.db.close()
            return
        try:
            manifest = self._write_and_publish()
        except (OSError, sqlite3.Error) as exc:
            self.abort()
            if _is_disk_error(exc):
                raise self.store._unwritable(exc, self.generation) from exc
            raise
        except BaseException:
            self.abort()
            raise
        try:
            _fsync(self.index_dir)  # makes the rename durable; it is visible already
        except OSError as exc:
            logger.warning("published %s but could not sync the folder: %s", self.generation, exc)
        logger.info(
            "published index generation %s: %d documents, %d chunks in %d segments",
            self.generation,
            manifest.documents,
            manifest.chunks,
            len(manifest.segments),
        )
        self.store._remove_unreferenced(self.store._retained(self.generation))
        self.store._after_publish(manifest)

    def _write_segment(self) -> None:
        """Write this writer's vectors as one new flat segment (with small ones merged in)."""
        if self._new_ids:
            ids = np.concatenate(self._new_ids)
            vectors = np.concatenate(self._new_vectors)
            if self._dropped_new:
                keep = ~np.isin(ids, np.fromiter(self._dropped_new, dtype=np.int64))
                ids, vectors = ids[keep], vectors[keep]
        else:
            ids = np.zeros(0, dtype=np.int64)
            vectors = np.zeros((0, self.dimension), dtype=np.float32)
        merging = segments.plan_small_merge(self._segments)
        if merging:
            dead_ids = _dead_ids(self.db, self.gen)
            more_ids, more_vectors = [ids], [vectors]
            moved: list[int] = []
            for info in merging:
                seg = segments.read_segment(info, self.store.segment_path(info.name))
                keep = ~np.isin(seg.labels, dead_ids)
                more_ids.append(seg.labels[keep])
                moved.extend(seg.labels[keep].tolist())
                more_vectors.append(seg.vectors_at(np.flatnonzero(keep)))
            ids, vectors = np.concatenate(more_ids), np.concatenate(more_vectors)
        if not len(ids) and not merging:
            return
        if self._segment is None:
            self._segment = segments.segment_name(meta.take(self.db, "next_segment", 1))
        name = self._segment
        path = self.store.segment_path(name)
        self._new_files.append(path)
        _write_index(segments.build_index(segments.FLAT, vectors, ids), path)
        if merging:
            # By chunk id (the primary key): ``segment`` has no index, and a scan for the
            # merged segments' names read every row (~1.9 s at 1M chunks).
            self.db.executemany(
                "UPDATE chunks SET segment = ? WHERE id = ?", ((name, i) for i in moved)
            )
        self._segments = [s for s in self._segments if s not in merging]
        self._segments.append(SegmentInfo(name, len(ids), segments.FLAT, path.stat().st_size))

    def _write_and_publish(self) -> Manifest:
        """Write and sync the segment, commit, write the manifest, point ``CURRENT`` at it.

        Nothing before the final rename is visible to readers, so a failure at any step
        leaves the published index as it was.
        """
        self._write_segment()
        (n_docs,) = self.db.execute(
            f"SELECT COUNT(*) FROM documents d WHERE {self._live('d')}"
        ).fetchone()
        dead = len(_dead_ids(self.db, self.gen, [s.name for s in self._segments]))
        vectors = sum(s.count for s in self._segments)
        if vectors - dead != self._chunks:
            raise IndexCorruptError(
                self.index_dir,
                f"{self._chunks} chunks but {vectors - dead} live vectors; not published",
            )
        scanner = self.store.scanner
        manifest = Manifest(
            embedding_model=self.store.model_id,
            dimension=self.dimension,
            generation=self.gen,
            documents=int(n_docs),
            chunks=self._chunks,
            published_at=_now(),
            segments=tuple(self._segments),
            scanned_with=scanner.version if scanner is not None else None,
        )
        for path in self._new_files:
            _fsync(path)
        _fsync(self.index_dir / SEGMENTS)
        self.db.execute("COMMIT")
        path = self.store._manifest_path(self.generation)
        self._new_files.append(path)
        manifest.write(path)
        _fsync(self.index_dir / MANIFESTS)
        _publish(self.index_dir, self.generation)
        self._new_files = []
        with contextlib.suppress(sqlite3.Error):
            # Fold the write-ahead log back into the database and shrink it, so the folder
            # holds one copy of the data. Without waiting: a checkpoint that must truncate
            # waits for every reader to leave the log, which under steady queries meant
            # a publish stalled for the whole busy timeout (30 s). With no wait it copies
            # what no reader still needs; the next publish copies the rest.
            self.db.execute("PRAGMA busy_timeout = 0")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
        return manifest

    def abort(self) -> None:
        """Throw the unpublished generation away (rows rolled back, new files deleted)."""
        with contextlib.suppress(sqlite3.Error):
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            else:  # committed, then failed before publishing: undo the rows now
                self.db.execute("BEGIN IMMEDIATE")
                meta.roll_back_unpublished(self.db, self.gen - 1)
                self.db.execute("COMMIT")
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        for path in self._new_files:
            segments.remove_quietly(path)


def _batches(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _has_schema(db: sqlite3.Connection) -> bool:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunks'"
    ).fetchone()
    return row is not None


_OLD_FORMAT = (
    "format version 3 (one folder per generation), this ragchat reads 4; ingest the "
    "documents again into a new index folder"
)
