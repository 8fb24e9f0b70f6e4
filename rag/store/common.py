"""What both stores do the same way, on top of their own ``reader()`` and ``writer()``.

``FaissStore`` and ``PostgresStore`` differ in how they keep the index and hand out read
views and write transactions; every store-level call is one of those views or writers
(so it reads one consistent snapshot), and langchain-core's ``VectorStore`` interface is
a thin layer over them. That layer lives here once.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from rag.store import base, collections

if TYPE_CHECKING:
    from rag.store.faiss import ChunkRecord, DocumentInfo
    from rag.store.scan import Scanner


class ViewStore(VectorStore):
    """A store whose reads go through ``reader()`` views and writes through ``writer()``.

    Subclasses provide ``reader``, ``writer``, ``exists``, ``_embeddings`` and ``scanner``;
    their views provide the reads named here and ``scanned_with``.
    """

    _embeddings: Embeddings
    scanner: Scanner | None

    @abstractmethod
    def reader(self) -> contextlib.AbstractContextManager[Any]:
        """A read view of one consistent snapshot (see the subclasses)."""

    @abstractmethod
    def writer(
        self, on_wait: Callable[[float], None] | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """A write transaction, published when its block ends (see the subclasses)."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether an index has been published."""

    @property
    def embeddings(self) -> Embeddings:
        """The embedding model queries are embedded with."""
        return self._embeddings

    def documents(self, within: frozenset[str] | None = None) -> list[DocumentInfo]:
        """Every indexed document (of the collections ``within``; None: all), oldest first.

        Empty before the first ingestion.
        """
        if not self.exists():
            return []
        with self.reader() as view:
            return list(view.documents(within))

    def chunk_count(self) -> int:
        """Number of chunks in the index."""
        if not self.exists():
            return 0
        with self.reader() as view:
            return int(view.chunk_count())

    def all_chunks(self) -> list[ChunkRecord]:
        """Every stored chunk, in document order (for tests and exports)."""
        if not self.exists():
            return []
        with self.reader() as view:
            return list(view.all_chunks())

    def search_chunks_by_vector(
        self, vector: Sequence[float], k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks nearest ``vector`` with their cosine similarity, best first.

        ``within``: of these collections only (see the views).
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        with self.reader() as view:
            return list(view.search_chunks_by_vector(vector, k, within))

    def keyword_search(
        self, query: str, k: int = 4, within: frozenset[str] | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks that best match the query's words, best first (see the views)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        with self.reader() as view:
            return list(view.keyword_search(query, k, within))

    def similarities(self, vector: Sequence[float], chunk_ids: Sequence[int]) -> dict[int, float]:
        """Cosine similarity between ``vector`` and stored chunks, by internal chunk id.

        Ids are those of the published snapshot; use one ``reader()`` for a search and
        the similarities of its hits, so both come from the same snapshot.
        """
        if not chunk_ids:
            return {}
        with self.reader() as view:
            return dict(view.similarities(vector, chunk_ids))

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors of chunks, in order (see ``similarities``)."""
        with self.reader() as view:
            return np.asarray(view.vectors(chunk_ids))

    def search_chunks(self, query: str, k: int = 4) -> list[tuple[ChunkRecord, float]]:
        """The ``k`` chunks most similar to ``query``, best first."""
        return self.search_chunks_by_vector(self._embeddings.embed_query(query), k)

    def find_document(self, key: str, within: frozenset[str] | None = None) -> str:
        """The document id for an id, a unique id prefix (6+ characters) or a source path.

        Only documents of the collections ``within`` (None: all) are considered.

        Raises:
            DocumentNotFoundError: nothing, or more than one document, matches.
        """
        return base.find_document(self.documents(within), key)

    def ensure_scanned(self, on_wait: Callable[[float], None] | None = None) -> bool:
        """Scan an index its scanner has not scanned (older builds); True if it did.

        Its next writer would do it anyway; this runs one when nothing else is written.
        """
        if self.scanner is None or not self.exists():
            return False
        with self.reader() as view:
            if view.scanned_with == self.scanner.version:
                return False
        with self.writer(on_wait) as w:
            return bool(w.changed)

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
            return list(view.get_by_ids(ids, within))

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
        from rag.store.faiss import NewChunk, content_id  # the records both stores share

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
