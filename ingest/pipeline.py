"""The ingestion pipeline: files -> streamed blocks -> chunks -> embeddings -> checkpoints.

Parsing, chunking and embedding happen without the index lock. What has been embedded is
published in short write transactions ("checkpoints"): every ``checkpoint_chunks`` chunks
and once at the end, so a second ingestion waits seconds, not for a whole run, and a run
that is interrupted (Ctrl-C, kill -9, a crash) keeps every checkpoint it published. A run
with nothing to write never takes the lock.

A document larger than a checkpoint is published in parts and marked partial until its last
chunk is stored; the next run over the same file re-reads it (chunking is deterministic),
skips the chunks already stored without embedding them, and completes it (or reads it again
from the start when the stored part was cut differently). A changed file's old version stays
searchable until the new version is complete. A forced re-read of a stored complete document
keeps all its new chunks until its end and replaces the old copy in one transaction, so
searches see the old copy, whole, until then, and a failure leaves it as it was.

A file that fails (unreadable, unsupported, a parser limit, an error part way through) is
reported with its reason and the run goes on. Its chunks embedded since the last checkpoint
are dropped; what earlier checkpoints published of it stays, marked partial, and whatever
the index held for it before the run stays too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from langchain_core.embeddings import Embeddings

from ingest.chunking import Chunk, TokenChunker
from ingest.detect import Kind, opaque_binary
from ingest.files import FoundFile, iter_files, os_reason
from ingest.loaders import Opener, no_text_reason, open_stream
from rag.errors import IngestError
from rag.store.base import Store, StoreWriter
from rag.store.collections import DEFAULT_COLLECTION, document_id
from rag.store.faiss import DocumentInfo, NewChunk
from rag.store.scan import ChunkScan, scan_text
from rag.text import safe_label

logger = logging.getLogger(__name__)

_READ_BYTES = 1 << 20


class Progress(Protocol):
    """Receives progress as (stage, done, total); a total of 0 means not known yet.

    Stages: ``parse`` (files done of all files), ``read`` (characters read from the current
    file), ``embed`` (chunks embedded in this run, of the chunks cut so far), ``publish``
    (chunks published in this run), ``wait`` (seconds waited for another ingestion to
    publish, of the most that will be waited).
    """

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units of ``stage``."""
        ...


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class FileOutcome:
    """What happened to one file.

    ``chunks`` counts the chunks embedded and stored for it by this run; ``resumed`` the
    chunks an earlier, interrupted run had stored, which were not embedded again.
    """

    path: str
    status: str  # added | updated | unchanged | failed | removed
    reason: str | None = None
    chunks: int = 0
    resumed: int = 0


@dataclass
class IngestReport:
    """The summary of one run."""

    files: list[FileOutcome] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    checkpoints: int = 0
    waited_seconds: float = 0.0

    def count(self, status: str) -> int:
        """Number of files with this status."""
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> list[FileOutcome]:
        """Files that could not be ingested."""
        return [f for f in self.files if f.status == "failed"]

    @property
    def resumed(self) -> list[FileOutcome]:
        """Files whose ingestion continued where an interrupted run stopped."""
        return [f for f in self.files if f.resumed and f.status != "failed"]

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


def file_content_id(path: Path) -> str:
    """The document id of a file: SHA-256 of its bytes (as ``content_id``), read in 1 MB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while piece := fh.read(_READ_BYTES):
            digest.update(piece)
    return digest.hexdigest()


class IngestPipeline:
    """Ingests files into a store; collaborators are passed in.

    ``opener`` reads a file as a stream of blocks: ``ParserSandbox(...).open`` in the
    applications (a worker process with limits), the in-process ``open_stream`` by default.
    ``release_generation`` closes the store's open generation after each look at the index,
    so its FAISS index is not held in memory for the whole run; for the CLI, where no one
    else reads through this store object (a shared store would only reopen it).
    """

    def __init__(
        self,
        store: Store,
        embeddings: Embeddings,
        chunker: TokenChunker,
        *,
        batch_size: int = 256,
        checkpoint_chunks: int = 4096,
        opener: Opener = open_stream,
        progress: Progress = _no_progress,
        progress_interval_s: float = 0.25,
        release_generation: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if checkpoint_chunks < 1:
            raise ValueError("checkpoint_chunks must be at least 1")
        self.store = store
        self.embeddings = embeddings
        self.chunker = chunker
        self.batch_size = batch_size
        self.checkpoint_chunks = checkpoint_chunks
        # Chunks gathered before embedding: enough to sort by length across many batches
        # (sorting keeps padding, and so embedding time, down), never more than a checkpoint.
        self.embed_every = max(1, min(batch_size * 32, checkpoint_chunks))
        self.opener = opener
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.release_generation = release_generation
        self.last_report: IngestReport | None = None  # of the last run that finished

    def run(
        self,
        paths: Sequence[Path],
        *,
        prune: bool = False,
        force: bool = False,
        titles: Mapping[Path, str] | None = None,
        collection: str = DEFAULT_COLLECTION,
    ) -> IngestReport:
        """Ingest files and folders (recursively) into ``collection``.

        With ``prune``, files of that collection that vanished are forgotten.

        A file indexed in another collection is refused (delete it there first): a path
        names one document.

        ``force`` re-reads and re-embeds files even when unchanged (after changing the
        chunking, say). ``titles`` gives display names for files, such as the original name
        of an upload stored under a generated one.

        Raises:
            IngestError: a given path does not exist (nothing is written then).
            StoreError: the index cannot be opened, written, or stayed locked by another
                ingestion for ``lock_timeout_s``. Checkpoints published before stay.
        """
        found = list(iter_files([Path(p) for p in paths]))
        named = {os.path.realpath(p): t for p, t in (titles or {}).items()}
        report = _Run(self, force=force, titles=named, collection=collection).ingest(
            found, prune=prune
        )
        # An index from before the scan (or an older scanner) is scanned even when no file
        # changed, so what the documents page reports always covers every chunk.
        self.store.ensure_scanned()
        self.last_report = report
        return report


# -- one run ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Doc:
    """A document being read in this run."""

    doc_id: str
    key: str
    title: str | None
    outcome: FileOutcome
    kind: str = Kind.TEXT.value
    pages: int | None = None
    force: bool = False  # replace the stored copy (re-embed it from scratch)
    replace: bool = False  # the stored copy is complete: publish the new one only whole
    failed: bool = False  # its unpublished chunks are dropped
    dropped: bool = False  # another ingestion stored it meanwhile: ours are not needed


@dataclass(eq=False)
class _ChunkItem:
    doc: _Doc
    seq: int
    chunk: Chunk
    vector: np.ndarray | None = None
    scan: ChunkScan | None = None  # injected instructions and personal data found in it


@dataclass(eq=False)
class _Done:
    """The document's last chunk has been queued."""

    doc: _Doc


@dataclass(eq=False)
class _Name:
    """Point a path at a document that is (or will by then be) stored complete."""

    key: str
    doc_id: str
    title: str | None
    outcome: FileOutcome


@dataclass(eq=False)
class _DropStale:
    """Delete partial versions of a path that no longer match its content."""

    key: str
    keep: str


_Item = _ChunkItem | _Done | _Name | _DropStale


class _Index:
    """What the published index holds, as of the last look (a pinned read, or a checkpoint)."""

    def __init__(self, docs: list[DocumentInfo]) -> None:
        self.docs = {d.id: d for d in docs}
        self.by_source: dict[str, str] = {}
        self.titles: dict[str, str] = {}
        self.partials: dict[str, set[str]] = {}  # path -> partial documents filed under it
        for d in docs:
            if not d.complete:
                for source in d.sources:
                    self.partials.setdefault(source, set()).add(d.id)
        # Complete documents first: a path names its complete version while a new one is
        # partial.
        for d in sorted(docs, key=lambda d: not d.complete):
            for source, title in zip(d.sources, d.titles, strict=False):
                if source not in self.by_source:
                    self.by_source[source] = d.id
                    self.titles[source] = title

    def stale_partials(self, key: str, keep: str) -> bool:
        """Whether a partial document other than ``keep`` is filed under ``key``."""
        return bool(self.partials.get(key, set()) - {keep})


class _Run:
    """The state of one ``IngestPipeline.run``."""

    def __init__(
        self, pipeline: IngestPipeline, *, force: bool, titles: dict[str, str], collection: str
    ) -> None:
        self.collection = collection
        self.p = pipeline
        self.store = pipeline.store
        self.force = force
        self.titles = titles
        self.report = IngestReport()
        self.queue: list[_Item] = []
        self.unembedded: list[_ChunkItem] = []
        self.embedded_unwritten = 0
        self.embedded = 0
        self.cut = 0
        self.published = 0
        self.completed: set[str] = set()  # documents read whole in this run
        self.index = _Index(self.store.documents())  # one pinned read
        self._released()
        self._last_read_progress = 0.0

    def _released(self) -> None:
        """Let the store close the generation it opened for our read (see the pipeline)."""
        if self.p.release_generation:
            self.store.close()

    # -- the run ------------------------------------------------------------------------

    def ingest(self, found: list[FoundFile], *, prune: bool) -> IngestReport:
        started = time.perf_counter()
        total = len(found)
        for n, item in enumerate(found):
            self.p.progress("parse", n, total)
            outcome = self._file(item)
            self.report.files.append(outcome)
            if outcome.status == "failed":
                logger.info(
                    "failed: %s: %s", safe_label(outcome.path), safe_label(outcome.reason or "")
                )
        self.p.progress("parse", total, total)
        self._checkpoint()
        if prune:
            self._prune()
        self.report.seconds = time.perf_counter() - started
        return self.report

    def _file(self, item: FoundFile, *, force: bool | None = None) -> FileOutcome:
        key = item.key
        if item.problem is not None:
            return FileOutcome(key, "failed", item.problem)
        force = self.force if force is None else force
        try:
            refusal = self._refused_early(item.path)
            if refusal is not None:
                return FileOutcome(key, "failed", refusal)
            doc_id = document_id(file_content_id(item.path), self.collection)
        except OSError as exc:
            return FileOutcome(key, "failed", os_reason(exc))
        except IngestError as exc:
            return FileOutcome(key, "failed", exc.reason)
        title = self.titles.get(key)
        current = self.index.by_source.get(key)
        if current is not None and self.index.docs[current].collection != self.collection:
            return FileOutcome(
                key, "failed", "indexed in another collection; delete it there first"
            )
        info = self.index.docs.get(doc_id)
        same = current is None or (current == doc_id and not self.force)
        outcome = FileOutcome(key, "added" if same else "updated")
        if self.index.stale_partials(key, keep=doc_id):
            self._queue(_DropStale(key, doc_id))
        if doc_id in self.completed:  # the same content under another name in this run
            self._queue(_Name(key, doc_id, title, outcome))
            return outcome
        if info is not None and info.complete and not force:
            if current == doc_id:
                if title is not None and title != self.index.titles.get(key):
                    self._queue(_Name(key, doc_id, title, outcome))
                outcome.status = "unchanged"
                return outcome
            self._queue(_Name(key, doc_id, title, outcome))
            return outcome
        resume = info.chunks if info is not None and not info.complete and not force else 0
        doc = _Doc(
            doc_id,
            key,
            title,
            outcome,
            force=force and info is not None,
            replace=force and info is not None and info.complete,
        )
        if not self._read(item.path, doc, resume):
            # The stored part was cut differently (the chunk settings changed): start over.
            logger.warning("%s: stored part does not match; reading it again", safe_label(key))
            return self._file(item, force=True)
        return outcome

    def _refused_early(self, path: Path) -> str | None:
        """Let the parser judge binary-looking content before the file is hashed whole.

        A huge file of binary data (a 4 GiB sparse file named .txt) is then refused after
        reading its first bytes. PDF and ZIP content is binary by nature and is hashed first
        as usual, so unchanged documents are never parsed.

        Raises:
            IngestError: the file cannot be read (or is no regular file).
        """
        if not opaque_binary(path):
            return None
        try:
            stream = self.p.opener(path)
        except IngestError as exc:
            return exc.reason
        stream.close()
        return None

    def _read(self, path: Path, doc: _Doc, resume: int) -> bool:
        """Stream the file into the queue (its outcome says how that went).

        Returns:
            False when the chunks cut now do not match the part of it stored before (the
            chunk settings changed): nothing of it is queued then. True otherwise.
        """
        try:
            stream = self.p.opener(path)
        except IngestError as exc:
            self._fail(doc, exc.reason)
            return True
        except Exception as exc:
            # Parser boundary: a bug in one file's parser is that file's outcome (logged with
            # its traceback, reported with its type), not the end of the run.
            logger.exception("unexpected error opening %s", safe_label(doc.key))
            self._fail(doc, _unexpected(exc))
            return True
        doc.kind = stream.kind.value
        doc.pages = stream.pages
        last_stored = self._stored_text(doc.doc_id, resume - 1) if resume else None
        blocks = iter(stream.blocks)
        seq = chars = 0
        try:
            while not doc.dropped:
                # Only the parser is behind this boundary; our chunker, progress and store
                # calls below raise their errors (a bug there is not a file's failure).
                try:
                    block = next(blocks, None)
                except IngestError as exc:
                    self._fail(doc, exc.reason)
                    return True
                except Exception as exc:  # the parser boundary, as above
                    logger.exception("unexpected error reading %s", safe_label(doc.key))
                    self._fail(doc, _unexpected(exc))
                    return True
                if block is None:
                    break
                chars += len(block.text)
                self._read_progress(chars)
                for chunk in self.p.chunker.split([block]):
                    if seq == resume - 1 and chunk.text != last_stored:
                        return False
                    if seq >= resume:
                        self._add_chunk(doc, seq, chunk)
                    seq += 1
                    if doc.dropped:
                        break
        finally:
            stream.close()
        self.p.progress("read", chars, chars)
        if doc.dropped:
            return True
        if seq == 0:
            self._fail(doc, no_text_reason(stream.kind))
            return True
        if seq < resume:
            return False
        doc.outcome.resumed = resume
        self.completed.add(doc.doc_id)
        self._queue(_Done(doc))
        return True

    def _read_progress(self, chars: int) -> None:
        now = time.monotonic()
        if now - self._last_read_progress >= self.p.progress_interval_s:
            self._last_read_progress = now
            self.p.progress("read", chars, 0)

    def _stored_text(self, doc_id: str, seq: int) -> str | None:
        """The text of a stored chunk, read now (None when it is not stored)."""
        with self.store.reader() as view:
            text = view.chunk_text(doc_id, seq)
        self._released()
        return text

    def _fail(self, doc: _Doc, reason: str) -> None:
        """Mark a document failed and drop its unpublished chunks.

        ``outcome.chunks`` keeps counting what earlier checkpoints published of it.
        """
        doc.failed = True
        doc.outcome.status = "failed"
        doc.outcome.reason = reason
        stored = self._stored_part(doc)
        if stored:
            doc.outcome.reason += (
                f" (the first {stored:,} chunks stay in the index, marked partial)"
            )
        self.queue = [i for i in self.queue if not (isinstance(i, _ChunkItem) and i.doc is doc)]
        self.unembedded = [i for i in self.unembedded if i.doc is not doc]
        self.embedded_unwritten = sum(
            1
            for i in self.queue
            if isinstance(i, _ChunkItem) and i.vector is not None and not i.doc.replace
        )

    def _stored_part(self, doc: _Doc) -> int:
        info = self.index.docs.get(doc.doc_id)
        if info is None or info.complete:
            return 0
        return info.chunks

    # -- embedding ----------------------------------------------------------------------

    def _queue(self, item: _Item) -> None:
        self.queue.append(item)

    def _add_chunk(self, doc: _Doc, seq: int, chunk: Chunk) -> None:
        item = _ChunkItem(doc, seq, chunk)
        self.queue.append(item)
        self.unembedded.append(item)
        self.cut += 1
        if len(self.unembedded) >= self.p.embed_every:
            self._embed()
        if self.embedded_unwritten >= self.p.checkpoint_chunks:
            self._checkpoint()

    def _embed(self) -> None:
        items = [i for i in self.unembedded if not (i.doc.failed or i.doc.dropped)]
        self.unembedded = []
        if not items:
            return
        # Embed in order of length so each batch pads little.
        items.sort(key=lambda i: len(i.chunk.text))
        started = time.perf_counter()
        size = self.p.batch_size
        scanner = self.store.scanner
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            vectors = np.asarray(
                self.p.embeddings.embed_documents([i.chunk.text for i in batch]), dtype="float32"
            )
            for item, vector in zip(batch, vectors, strict=True):
                item.vector = vector
                # Scanned here, outside the writer's lock (the writer scans what comes unscanned).
                if scanner is not None:
                    item.scan = scanner(scan_text(item.chunk.text, item.chunk.heading))
            self.embedded += len(batch)
            logger.debug("embedded batch of %d chunks", len(batch))
            self.p.progress("embed", self.embedded, self.cut)
        self.report.embed_seconds += time.perf_counter() - started
        self.embedded_unwritten += len(items)

    # -- publishing ---------------------------------------------------------------------

    def _on_wait(self, seconds: float) -> None:
        self.report.waited_seconds = max(self.report.waited_seconds, seconds)
        self.p.progress("wait", int(seconds), int(self.store.lock_timeout_s))

    def _checkpoint(self) -> None:
        """Embed what is queued and publish it in one short write transaction.

        The chunks of a document that replaces a complete stored copy stay queued until
        its end, so the old copy stays whole (and searched) until the new one is.
        """
        self._embed()
        items, self.queue = self.queue, []
        self.embedded_unwritten = 0
        ended = {i.doc for i in items if isinstance(i, _Done)}
        live: list[_Item] = []
        for item in items:
            if isinstance(item, _ChunkItem | _Done) and _gone(item.doc):
                continue
            if isinstance(item, _ChunkItem) and item.doc.replace and item.doc not in ended:
                self.queue.append(item)
            else:
                live.append(item)
        if not live:
            return
        with self.store.writer(on_wait=self._on_wait) as writer:
            written = 0
            for kind, group in _segments(live):
                if kind == "chunks":
                    written += self._write_segment(writer, group)
                elif kind == "name":
                    for name in group:
                        assert isinstance(name, _Name)
                        self._write_name(writer, name)
                else:
                    for stale in group:
                        assert isinstance(stale, _DropStale)
                        _drop_stale_partials(writer, stale.key, stale.keep)
            index = _Index(writer.documents())
        self.index = index
        self.report.chunks += written
        self.report.checkpoints += 1
        self.published += written
        logger.info(
            "checkpoint %d: published %d chunks (%d in this run)",
            self.report.checkpoints,
            written,
            self.published,
        )
        self.p.progress("publish", self.published, self.cut)

    def _write_segment(self, w: StoreWriter, group: list[_Item]) -> int:
        """Store one document's next chunks (and its completion); returns chunks written."""
        first = group[0]
        doc = first.doc if isinstance(first, _ChunkItem | _Done) else None
        assert doc is not None
        if _gone(doc):
            return 0
        chunk_items = [i for i in group if isinstance(i, _ChunkItem)]
        complete = isinstance(group[-1], _Done)
        others: list[tuple[str, str | None]] = []
        if doc.force:  # replace the stored copy, keep its names
            others = [s for s in w.document_sources(doc.doc_id) if s[0] != doc.key]
            doc.title = doc.title or dict(w.document_sources(doc.doc_id)).get(doc.key)
            if w.has_document(doc.doc_id):
                w.delete_document(doc.doc_id)
            doc.force = False
        stored = w.partial_chunks(doc.doc_id)
        start = chunk_items[0].seq if chunk_items else None
        if w.has_document(doc.doc_id) and stored is None:
            # Another ingestion stored this content meanwhile: only name it.
            doc.dropped = True
            w.add_source(doc.key, doc.doc_id, doc.title)
            return 0
        if stored is None:  # not stored at all
            if start not in (0, None) or not chunk_items:
                self._lost_partial(doc)
                return 0
            _drop_stale_partials(w, doc.key, doc.doc_id)
            w.add_document(
                doc.doc_id,
                kind=doc.kind,
                pages=doc.pages,
                source=doc.key,
                chunks=[_new(i) for i in chunk_items],
                vectors=_matrix(chunk_items),
                title=doc.title,
                complete=complete,
                collection=self.collection,
            )
            for path, title in others:
                w.add_source(path, doc.doc_id, title)
            new = chunk_items
        else:
            if start is not None and stored < start:
                self._lost_partial(doc)
                return 0
            skip = max(0, stored - start) if start is not None else 0
            new = chunk_items[skip:]
            w.append_chunks(
                doc.doc_id,
                [_new(i) for i in new],
                _matrix(new, w.dimension),
                complete=complete,
            )
        if complete:
            w.add_source(doc.key, doc.doc_id, doc.title)
        doc.outcome.chunks += len(new)
        return len(new)

    def _lost_partial(self, doc: _Doc) -> None:
        doc.failed = True
        doc.outcome.status = "failed"
        doc.outcome.reason = (
            "its partly stored copy was deleted by someone else meanwhile; ingest it again"
        )

    def _write_name(self, w: StoreWriter, name: _Name) -> None:
        if w.has_document(name.doc_id) and w.partial_chunks(name.doc_id) is None:
            w.add_source(name.key, name.doc_id, name.title)
            return
        name.outcome.status = "failed"
        name.outcome.reason = "the copy of its content under another name was not stored"

    def _prune(self) -> None:
        ours = {d.id for d in self.index.docs.values() if d.collection == self.collection}
        gone = [s for s, d in self.index.by_source.items() if d in ours and not os.path.exists(s)]
        gone += [
            d.sources[0]
            for d in self.index.docs.values()
            if d.id in ours and not d.complete and d.sources and not os.path.exists(d.sources[0])
        ]
        if not gone:
            return
        with self.store.writer(on_wait=self._on_wait) as writer:
            for source, doc_id in sorted(writer.sources().items()):
                if not os.path.exists(source) and writer.collection_of(doc_id) == self.collection:
                    writer.remove_source(source)
                    self.report.files.append(FileOutcome(source, "removed"))
            for doc_id, (source, _) in writer.partial_documents().items():
                if writer.collection_of(doc_id) != self.collection:
                    continue
                if not os.path.exists(source) and not writer.document_sources(doc_id):
                    writer.delete_document(doc_id)
                    self.report.files.append(FileOutcome(source, "removed"))
            self.index = _Index(writer.documents())


def _gone(doc: _Doc) -> bool:
    return doc.failed or doc.dropped


def _unexpected(exc: Exception) -> str:
    return f"unexpected parser error: {type(exc).__name__}: {exc}"


def _segments(items: list[_Item]) -> Iterator[tuple[str, list[_Item]]]:
    """Consecutive items grouped: one document's chunks (ending with its _Done), or names."""
    group: list[_Item] = []
    kind = ""
    for item in items:
        if isinstance(item, _ChunkItem | _Done):
            this = "chunks"
            last = group[-1] if group else None
            split = isinstance(last, _Done) or (
                isinstance(last, _ChunkItem) and last.doc is not item.doc
            )
        else:
            this = "name" if isinstance(item, _Name) else "stale"
            split = False
        if group and (split or kind != this):
            yield kind, group
            group = []
        kind = this
        group.append(item)
    if group:
        yield kind, group


def _drop_stale_partials(w: StoreWriter, key: str, keep: str) -> None:
    """Delete partial versions filed under ``key`` that no other path names."""
    for doc_id, (source, _) in w.partial_documents().items():
        if source != key or doc_id == keep:
            continue
        names = [p for p, _ in w.document_sources(doc_id)]
        if not names or names == [key]:
            logger.info("dropping a partial older version of %s", safe_label(key))
            w.delete_document(doc_id)


def _new(item: _ChunkItem) -> NewChunk:
    chunk = item.chunk
    return NewChunk(chunk.text, chunk.page, chunk.heading, chunk.offset, scan=item.scan)


def _matrix(items: list[_ChunkItem], dimension: int | None = None) -> np.ndarray:
    if not items:
        return np.zeros((0, dimension or 1), dtype="float32")
    return np.stack([i.vector for i in items if i.vector is not None]).astype("float32")
