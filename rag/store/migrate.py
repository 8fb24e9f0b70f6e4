"""Copy an index into Postgres as it is: documents, names, collections, scans and vectors.

``ragchat index migrate --to postgresql://...`` runs this. Nothing is embedded or scanned
again: the stored vectors, injection flags and personal-data counts are copied, with each
document's chunk ids, ingestion time, source paths and titles, its collection and, for a
document stored in part, how far it got. The copy is one Postgres transaction, so an
interrupted migration leaves the target empty and can simply be run again; a target that
already holds documents is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import IndexNotFoundError, IndexUnwritableError
from rag.store.base import Store
from rag.store.faiss import ChunkRecord, DocumentInfo
from rag.store.postgres import PostgresStore

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (chunks copied, chunks in all)


@dataclass
class MigrationReport:
    """What a migration copied."""

    documents: int = 0
    chunks: int = 0
    sources: int = 0
    partial: int = 0  # documents stored in part (an interrupted ingestion), copied as such
    collections: dict[str, int] = field(default_factory=dict)  # collection -> documents
    scanned: bool = False  # scan results were copied (the source had been scanned)
    skipped: list[str] = field(default_factory=list)  # documents not copied, with the reason
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat index migrate --json`` prints."""
        return dict(self.__dict__)


def migrate_index(
    source: Store,
    target: PostgresStore,
    *,
    batch_chunks: int = 2048,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every document of ``source`` into the empty Postgres index ``target``.

    The source is first brought up to date with its scanner (``ensure_scanned``: a no-op
    when it was scanned with this version), so the copied scan results are current.

    Raises:
        IndexNotFoundError: the source holds no index.
        IndexUnwritableError: the target already holds documents, or Postgres refused.
        IndexMismatchError: either index was built with another embedding model.
    """
    if batch_chunks < 1:
        raise ValueError("batch_chunks must be at least 1")
    if not source.exists():
        raise IndexNotFoundError(getattr(source, "index_dir", "the source index"))
    started = time.perf_counter()
    report = MigrationReport()
    if source.scanner is not None:
        source.ensure_scanned()
    with source.reader() as view, target.writer() as writer:
        held = len(writer.documents())
        if held:
            raise IndexUnwritableError(
                target.label,
                f"it already holds {held} document{'' if held == 1 else 's'}; migrate into an "
                "empty database or schema (nothing was copied)",
            )
        docs = view.documents()
        chunks: dict[str, list[ChunkRecord]] = {}
        for record in view.all_chunks():
            chunks.setdefault(record.doc_id, []).append(record)
        report.scanned = bool(docs) and all(d.pii is not None for d in docs)
        scanned_with = source.scanner.version if report.scanned and source.scanner else None
        named = {path for d in docs if d.complete for path in d.sources}
        total = sum(len(chunks.get(d.id, [])) for d in docs)
        with writer.bulk_load(scanned_with):
            for doc in docs:
                records = chunks.get(doc.id, [])
                if len(records) != doc.chunks:
                    report.skipped.append(
                        f"{doc.name} ({doc.id[:12]}): {len(records)} of its {doc.chunks} chunks "
                        "are readable (a partial new version of a file whose old version is "
                        "stored); ingest the file again after the migration"
                    )
                    continue
                rows = _sources(doc, named)
                writer.copy_document(
                    doc,
                    records,
                    _vectors(view, records, batch_chunks),
                    partial_source=None if doc.complete else doc.sources[0],
                    sources=rows,
                )
                report.documents += 1
                report.chunks += len(records)
                report.sources += len(rows)
                report.partial += not doc.complete
                report.collections[doc.collection] = report.collections.get(doc.collection, 0) + 1
                if progress is not None:
                    progress(report.chunks, total)
    report.seconds = time.perf_counter() - started
    logger.info(
        "migrated %d documents, %d chunks into %s in %.1f s",
        report.documents,
        report.chunks,
        target.label,
        report.seconds,
    )
    return report


def _sources(doc: DocumentInfo, named: set[str]) -> list[tuple[str, str | None]]:
    """The (path, title) rows naming ``doc`` in the source index, oldest first.

    A partial document whose path still names a complete older version has no row of its
    own (it is listed under that path only until it is complete). A title equal to the
    file's name is the default, stored as none.
    """
    if not doc.complete and doc.sources and doc.sources[0] in named:
        return []
    return [
        (path, None if title == Path(path).name else title)
        for path, title in zip(doc.sources, doc.titles, strict=True)
    ]


def _vectors(view: Any, records: list[ChunkRecord], batch: int) -> Any:
    import numpy as np

    ids = [r.id for r in records]
    parts = [view.vectors(ids[i : i + batch]) for i in range(0, len(ids), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype="float32")
