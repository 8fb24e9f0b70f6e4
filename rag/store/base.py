"""The store interface the rest of ragchat uses, whichever backend holds the index.

Two backends implement it: ``rag.store.faiss.FaissStore`` (FAISS and SQLite in a folder,
one machine) and ``rag.store.postgres.PostgresStore`` (Postgres with pgvector, shared by
several machines). Both pass the contract suite in ``tests/contract.py``. The records they
exchange (``ChunkRecord``, ``DocumentInfo``, ``NewChunk``, ``Manifest``) are the
dataclasses of ``rag.store.faiss``.

The shape: a ``Store`` hands out read views (``reader()``: one consistent snapshot for a
whole query) and write transactions (``writer()``: one writer at a time, published
atomically when its block ends without error, nothing published otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from rag.errors import DocumentNotFoundError
from rag.store import collections

if TYPE_CHECKING:
    from rag.store.faiss import (
        ChunkRecord,
        DocumentInfo,
        IndexStatus,
        Manifest,
        NewChunk,
        RepairReport,
    )
    from rag.store.postgres import PostgresRepair, PostgresStatus
    from rag.store.scan import Scanner

Within = frozenset[str] | None  # collections a read may see (None: all of them)


class StoreReader(Protocol):
    """One consistent snapshot of the index, for the length of a ``with store.reader()``."""

    @property
    def generation(self) -> str:
        """Name of the snapshot's published state (``g000007``)."""
        ...

    @property
    def published_at(self) -> str:
        """When the snapshot's state was published (with ``generation``, names it uniquely).

        A generation's name alone may come back: an index built again from nothing
        starts at ``g000001`` again, a repair goes back to an earlier generation.
        """
        ...

    @property
    def manifest(self) -> Manifest:
        """What the index was built with, and its counts."""
        ...

    def chunk_count(self) -> int:
        """Number of chunks (and vectors)."""
        ...

    def documents(self, within: Within = None) -> list[DocumentInfo]:
        """Every document (of the collections ``within``), oldest first."""
        ...

    def all_chunks(self) -> list[ChunkRecord]:
        """Every chunk, in document order."""
        ...

    def flagged_count(self) -> int:
        """Chunks flagged at ingestion for instruction-like text."""
        ...

    def chunk_text(self, doc_id: str, seq: int) -> str | None:
        """The text of a document's chunk number ``seq`` (partial documents included)."""
        ...

    def records(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        """Chunks by internal id (unknown ids are left out)."""
        ...

    def search_chunks_by_vector(
        self, vector: Sequence[float], k: int = 4, within: Within = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` nearest chunks with their cosine similarity in [-1, 1], best first.

        ``within`` filters inside the search: ``k`` hits whenever the collections hold ``k``.
        """
        ...

    def keyword_search(
        self, query: str, k: int = 4, within: Within = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks that best match the query's words (OR-ed), best first.

        The score is higher-is-better on the backend's own scale (BM25, a text-search rank).
        """
        ...

    def similarities(self, vector: Sequence[float], chunk_ids: Sequence[int]) -> dict[int, float]:
        """Cosine similarity between ``vector`` and stored chunks, by internal chunk id."""
        ...

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors of chunks, in order."""
        ...

    def get_by_ids(self, ids: Sequence[str], within: Within = None) -> list[Document]:
        """Chunks by chunk id in the order asked (unknown ones and those outside skipped)."""
        ...


class StoreWriter(Protocol):
    """One write transaction; built by ``Store.writer()`` while it holds the writer lock."""

    dimension: int
    changed: bool  # something was written (a writer with no change publishes nothing)

    def source_document(self, path: str) -> str | None:
        """The document id a source path names."""
        ...

    def has_document(self, doc_id: str) -> bool:
        """Whether a document with this id is stored."""
        ...

    def sources(self) -> dict[str, str]:
        """Every source path with its document id."""
        ...

    def document_sources(self, doc_id: str) -> list[tuple[str, str | None]]:
        """(path, title) of each source of a document, oldest first."""
        ...

    def chunk_ids(self, doc_id: str) -> list[str]:
        """Chunk ids of a document in order."""
        ...

    def doc_ids_of_chunks(self, chunk_ids: Sequence[str]) -> list[str]:
        """Documents owning the given chunk ids."""
        ...

    def documents(self, within: Within = None) -> list[DocumentInfo]:
        """Documents as this transaction sees them."""
        ...

    def collection_of(self, doc_id: str) -> str:
        """The collection a stored document is in."""
        ...

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
        """Store a new document (``complete=False``: its first chunks only)."""
        ...

    def append_chunks(
        self, doc_id: str, chunks: Sequence[NewChunk], vectors: np.ndarray, *, complete: bool
    ) -> None:
        """Add the next chunks of a partial document; ``complete`` when they are its last."""
        ...

    def partial_chunks(self, doc_id: str) -> int | None:
        """How many chunks of a partial document are stored; None unless it is partial."""
        ...

    def partial_documents(self) -> dict[str, tuple[str, int]]:
        """doc_id -> (source path, chunks stored) of every partial document."""
        ...

    def add_source(self, path: str, doc_id: str, title: str | None = None) -> None:
        """Point a source path at a stored document (replacing what it pointed at)."""
        ...

    def remove_source(self, path: str) -> str | None:
        """Forget a source path; returns the id of a document deleted with it."""
        ...

    def delete_document(self, doc_id: str) -> None:
        """Remove a document, its sources, chunks and vectors."""
        ...


class Store(Protocol):
    """The index: read views, write transactions and the few whole-index operations."""

    scanner: Scanner | None  # scans each chunk written (injection, personal data); None: off
    lock_timeout_s: float  # how long a writer waits for another one

    @property
    def embeddings(self) -> Embeddings:
        """The embedding model queries are embedded with."""
        ...

    @staticmethod
    def relevance(score: float) -> float:
        """Cosine similarity in [-1, 1] as a relevance in [0, 1]."""
        ...

    def reader(self) -> contextlib.AbstractContextManager[StoreReader]:
        """A consistent read view, usable inside the ``with`` block.

        Raises:
            IndexNotFoundError: nothing has been published yet.
        """
        ...

    def writer(
        self, on_wait: Callable[[float], None] | None = None
    ) -> contextlib.AbstractContextManager[StoreWriter]:
        """A write transaction, published atomically when the block ends without error.

        ``on_wait`` is called about once a second while another writer holds the lock.

        Raises:
            IndexLockedError: another writer held the lock for ``lock_timeout_s``.
            IndexMismatchError: the index was built with another embedding model.
        """
        ...

    def exists(self) -> bool:
        """Whether anything has been published."""
        ...

    def snapshot(self) -> Manifest:
        """Open the index now, so a missing or unreadable one fails early."""
        ...

    def documents(self, within: Within = None) -> list[DocumentInfo]:
        """Every document (of the collections ``within``), oldest first; [] when empty."""
        ...

    def chunk_count(self) -> int:
        """Number of chunks in the index (0 when empty)."""
        ...

    def all_chunks(self) -> list[ChunkRecord]:
        """Every stored chunk, in document order."""
        ...

    def search_chunks_by_vector(
        self, vector: Sequence[float], k: int = 4, within: Within = None
    ) -> list[tuple[ChunkRecord, float]]:
        """See ``StoreReader.search_chunks_by_vector``."""
        ...

    def keyword_search(
        self, query: str, k: int = 4, within: Within = None
    ) -> list[tuple[ChunkRecord, float]]:
        """See ``StoreReader.keyword_search``."""
        ...

    def similarities(self, vector: Sequence[float], chunk_ids: Sequence[int]) -> dict[int, float]:
        """See ``StoreReader.similarities``."""
        ...

    def get_by_ids(self, ids: Sequence[str], /, within: Within = None) -> list[Document]:
        """Stored chunks by chunk id (unknown ids, and chunks outside ``within``, skipped)."""
        ...

    def find_document(self, key: str, within: Within = None) -> str:
        """The document id for an id, a unique id prefix (6+ characters) or a source path."""
        ...

    def ensure_scanned(self, on_wait: Callable[[float], None] | None = None) -> bool:
        """Scan an index its scanner has not scanned; True if it did."""
        ...

    def status(self) -> IndexStatus | PostgresStatus:
        """Counts, model and disk use, for ``ragchat index status``."""
        ...

    def repair(self) -> RepairReport | PostgresRepair:
        """Recover from an interrupted writer, for ``ragchat index repair``."""
        ...

    def close(self) -> None:
        """Let go of what the store holds open (it opens it again when next used)."""
        ...

    def add_texts(
        self, texts: Any, metadatas: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> list[str]:
        """Store each text as a one-chunk document (langchain's ``VectorStore``)."""
        ...

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents owning these chunk ids (langchain's ``VectorStore``)."""
        ...


def find_document(docs: Sequence[DocumentInfo], key: str) -> str:
    """The id of the one document among ``docs`` that ``key`` names: id, prefix or path.

    Raises:
        DocumentNotFoundError: nothing, or more than one document, matches.
    """
    path = str(Path(key).expanduser().resolve())
    for doc in docs:
        if doc.id == key or path in doc.sources or key in doc.sources:
            return doc.id
    if len(key) >= 6:
        matches = [d.id for d in docs if d.id.startswith(key)]
        if len(matches) == 1:
            return matches[0]
    raise DocumentNotFoundError(key)
