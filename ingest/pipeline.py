"""The ingestion pipeline: files -> blocks -> chunks -> batched embeddings -> one publish.

One run is one write transaction: either every change of the run is published, or (on a
crash or an unexpected error) none is. A file that fails to load is reported and skipped;
whatever the index held for it before stays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from langchain_core.embeddings import Embeddings

from ingest.chunking import Chunk, TokenChunker
from ingest.loaders import LoadedDocument, iter_files, load
from rag.errors import IngestError
from rag.store import FaissStore, IndexWriter, NewChunk, content_id

logger = logging.getLogger(__name__)


class Progress(Protocol):
    """Receives progress of the two long stages, 'parse' (files) and 'embed' (chunks)."""

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units of ``stage``."""
        ...


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class FileOutcome:
    """What happened to one file."""

    path: str
    status: str  # added | updated | unchanged | failed | removed
    reason: str | None = None
    chunks: int = 0


@dataclass
class IngestReport:
    """The summary of one run."""

    files: list[FileOutcome] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    def count(self, status: str) -> int:
        """Number of files with this status."""
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> list[FileOutcome]:
        """Files that could not be ingested."""
        return [f for f in self.files if f.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat ingest --json`` prints."""
        return {
            "added": self.count("added"),
            "updated": self.count("updated"),
            "unchanged": self.count("unchanged"),
            "removed": self.count("removed"),
            "failed": [{"path": f.path, "reason": f.reason} for f in self.failed],
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Pending:
    doc_id: str
    source: str
    doc: LoadedDocument
    chunks: list[Chunk]
    outcome: FileOutcome
    title: str | None = None
    extra_sources: list[tuple[str, str | None]] = field(default_factory=list)


class IngestPipeline:
    """Ingests files into a store; collaborators are passed in."""

    def __init__(
        self,
        store: FaissStore,
        embeddings: Embeddings,
        chunker: TokenChunker,
        *,
        batch_size: int = 256,
        loader: Callable[[Path], LoadedDocument] = load,
        progress: Progress = _no_progress,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.store = store
        self.embeddings = embeddings
        self.chunker = chunker
        self.batch_size = batch_size
        # Chunks gathered before embedding: enough to sort by length across many batches
        # (sorting the whole flush keeps padding, and so embedding time, down).
        self.flush_every = batch_size * 32
        self.loader = loader
        self.progress = progress
        self._titles: dict[str, str] = {}
        self._force = False

    def run(
        self,
        paths: Sequence[Path],
        *,
        prune: bool = False,
        force: bool = False,
        titles: Mapping[Path, str] | None = None,
    ) -> IngestReport:
        """Ingest files and folders (recursively); with ``prune``, forget vanished files.

        ``force`` re-reads and re-embeds files even when unchanged (after changing the
        chunking, say). ``titles`` gives display names for files, such as the original name
        of an upload stored under a generated one.

        Raises:
            IngestError: a given path does not exist (nothing is written then).
            StoreError: the index cannot be opened or is locked.
        """
        started = time.perf_counter()
        files = list(iter_files([Path(p) for p in paths]))
        self._titles = {str(Path(p).resolve()): t for p, t in (titles or {}).items()}
        self._force = force
        report = IngestReport()
        with self.store.writer() as writer:
            pending: dict[str, _Pending] = {}
            pending_chunks = 0
            for n, (path, _explicit) in enumerate(files, 1):
                outcome = self._one(writer, path, pending)
                report.files.append(outcome)
                if outcome.status == "failed":
                    logger.info("failed: %s: %s", outcome.path, outcome.reason)
                pending_chunks = sum(len(p.chunks) for p in pending.values())
                if pending_chunks >= self.flush_every:
                    self._flush(writer, pending, report)
                self.progress("parse", n, len(files))
            self._flush(writer, pending, report)
            if prune:
                for source in sorted(writer.sources()):
                    if not Path(source).exists():
                        writer.remove_source(source)
                        report.files.append(FileOutcome(source, "removed"))
        report.seconds = time.perf_counter() - started
        return report

    def _one(self, writer: IndexWriter, path: Path, pending: dict[str, _Pending]) -> FileOutcome:
        key = str(path.resolve())
        try:
            data = path.read_bytes()
        except OSError as exc:
            return FileOutcome(key, "failed", f"cannot read file: {exc.strerror or exc}")
        doc_id = content_id(data)
        title = self._titles.get(key)
        current = writer.source_document(key)
        status = "updated" if current is not None else "added"
        if doc_id in pending:
            pending[doc_id].extra_sources.append((key, title))
            return FileOutcome(key, status)
        if current == doc_id and not self._force:
            writer.add_source(key, doc_id, title)
            return FileOutcome(key, "unchanged")
        if writer.has_document(doc_id) and not self._force:
            writer.add_source(key, doc_id, title)
            return FileOutcome(key, status)
        try:
            doc = self.loader(path)
            chunks = self.chunker.split(doc.blocks)
        except IngestError as exc:
            return FileOutcome(key, "failed", exc.reason)
        if not chunks:
            return FileOutcome(key, "failed", "no text found")
        others: list[tuple[str, str | None]] = []
        if writer.has_document(doc_id):  # forced: replace the stored copy, keep its names
            others = [s for s in writer.document_sources(doc_id) if s[0] != key]
            title = title or dict(writer.document_sources(doc_id)).get(key)
            writer.delete_document(doc_id)
            status = "updated"
        outcome = FileOutcome(key, status, chunks=len(chunks))
        pending[doc_id] = _Pending(doc_id, key, doc, chunks, outcome, title, others)
        return outcome

    def _flush(
        self, writer: IndexWriter, pending: dict[str, _Pending], report: IngestReport
    ) -> None:
        """Embed every pending chunk in batches, then store the pending documents."""
        if not pending:
            return
        texts = [c.text for p in pending.values() for c in p.chunks]
        # Embed in order of length so each batch pads little, then put vectors back in place.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        matrix: np.ndarray | None = None
        started = time.perf_counter()
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            vectors = np.asarray(
                self.embeddings.embed_documents([texts[i] for i in batch]), dtype="float32"
            )
            if matrix is None:
                matrix = np.empty((len(texts), vectors.shape[1]), dtype="float32")
            matrix[batch] = vectors
            logger.debug("embedded batch of %d chunks", len(batch))
            self.progress("embed", report.chunks + start + len(batch), report.chunks + len(texts))
        report.embed_seconds += time.perf_counter() - started
        assert matrix is not None  # pending is never empty here
        at = 0
        for item in pending.values():
            n = len(item.chunks)
            writer.add_document(
                item.doc_id,
                kind=item.doc.kind.value,
                pages=item.doc.pages,
                source=item.source,
                chunks=[NewChunk(c.text, c.page, c.heading, c.offset) for c in item.chunks],
                vectors=matrix[at : at + n],
                title=item.title,
            )
            for extra, title in item.extra_sources:
                writer.add_source(extra, item.doc_id, title)
            at += n
        report.chunks += len(texts)
        pending.clear()
