"""The documents use cases: uploads, ingestion runs, re-indexing and deleting.

Every adapter (the documents page, the HTTP API, ingestion jobs) calls these; none of
them saves uploads or talks to the pipeline itself. Functions take a ``Library``: anything
with the store and the settings (the service, or the web app's resources).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ingest.detect import SUPPORTED_SUFFIXES, Kind, detect_kind
from ingest.pipeline import IngestPipeline, IngestReport
from rag.errors import IngestError, RagError
from rag.settings import Settings
from rag.store.base import Store
from rag.store.collections import DEFAULT_COLLECTION, document_id
from rag.store.faiss import DocumentInfo, content_id
from rag.text import safe_label

logger = logging.getLogger(__name__)


class Library(Protocol):
    """Where documents live: the index and the settings (for the uploads folder, limits)."""

    @property
    def store(self) -> Store:
        """The index."""
        ...

    @property
    def settings(self) -> Settings:
        """The settings."""
        ...


@dataclass
class UploadResult:
    """What happened to one uploaded file."""

    name: str
    status: str  # added | updated | unchanged | re-indexed | failed | removed | deleted
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        """The shape the API returns."""
        return {"name": self.name, "status": self.status, "reason": self.reason}


_SUFFIX = {
    Kind.PDF: ".pdf",
    Kind.DOCX: ".docx",
    Kind.HTML: ".html",
    Kind.MARKDOWN: ".md",
    Kind.TEXT: ".txt",
}


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")


def display_name(browser_name: str) -> str:
    """The browser's file name, only ever used as a label: no path, no control characters."""
    name = _UNSAFE.sub("_", browser_name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip()
    return safe_label(name or "upload", limit=120)


@dataclass
class PreparedUploads:
    """Uploads checked and saved under generated names, ready to index."""

    results: dict[str, UploadResult] = field(default_factory=dict)
    saved: dict[Path, str] = field(default_factory=dict)  # stored file -> display name
    collection: str = DEFAULT_COLLECTION  # the collection they go to


def uploads_dir(settings: Settings, collection: str) -> Path:
    """Where uploads to a collection are kept (the default collection's at the top)."""
    if collection == DEFAULT_COLLECTION:
        return settings.uploads_dir
    return settings.uploads_dir / collection


def prepare_uploads(
    res: Library, files: list[tuple[str, bytes]], collection: str = DEFAULT_COLLECTION
) -> PreparedUploads:
    """Check size and type, skip content already in ``collection``, save the rest (fast).

    A file that cannot be saved (a full disk, say) is a failed result with the reason.
    """
    prepared = PreparedUploads(collection=collection)
    results, saved = prepared.results, prepared.saved
    uploads = uploads_dir(res.settings, collection)
    try:
        uploads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("cannot create the uploads folder %s: %s", uploads, exc)
        for browser_name, _ in files:
            name = display_name(browser_name)
            results[name] = UploadResult(name, "failed", _save_error(exc))
        return prepared
    try:
        # A partial document (an interrupted ingestion) is not "already indexed".
        known: dict[str, str] = {
            d.id: d.name for d in res.store.documents(frozenset({collection})) if d.complete
        }
    except RagError:
        known = {}
    limit = res.settings.upload_max_mb * 1024 * 1024
    for browser_name, data in files:
        name = _unique(display_name(browser_name), results)
        if len(data) > limit:
            results[name] = UploadResult(name, "failed", _too_large(len(data), limit))
            continue
        doc_id = document_id(content_id(data), collection)
        if doc_id in known:
            results[name] = UploadResult(name, "unchanged", f"already indexed as {known[doc_id]}")
            continue
        # The browser's extension is only a hint for the content check (a text file named
        # .pdf is refused); the stored name is generated either way.
        hint = Path(name).suffix.lower()
        tmp = uploads / f"{uuid.uuid4().hex}{hint if hint in SUPPORTED_SUFFIXES else '.part'}"
        try:
            tmp.write_bytes(data)
            kind = detect_kind(tmp)
            path = tmp.with_suffix(_SUFFIX[kind])
            tmp.rename(path)
        except IngestError as exc:
            _discard(tmp)
            results[name] = UploadResult(name, "failed", exc.reason)
            continue
        except OSError as exc:
            logger.warning("cannot save upload %s: %s", name, exc)
            _discard(tmp)
            results[name] = UploadResult(name, "failed", _save_error(exc))
            continue
        known[doc_id] = name  # a second copy in the same upload is not stored twice
        saved[path] = name
        results[name] = UploadResult(name, "added")
    return prepared


def _unique(name: str, taken: dict[str, UploadResult]) -> str:
    """``name``, or ``report (2).pdf`` when another upload of this batch has that name.

    Results are keyed by name; two files called ``report.pdf`` (from two folders) must
    each keep their own outcome.
    """
    if name not in taken:
        return name
    path = Path(name)
    n = 2
    while f"{path.stem} ({n}){path.suffix}" in taken:
        n += 1
    return f"{path.stem} ({n}){path.suffix}"


def _too_large(size: int, limit: int) -> str:
    return (
        f"not indexed: {size / 2**20:,.1f} MB is larger than {limit // 2**20} MB, the "
        "largest file this app accepts (RAG_UPLOAD_MAX_MB)"
    )


def _save_error(exc: OSError) -> str:
    return safe_label(f"cannot save the upload: {exc.strerror or exc}")


def _discard(path: Path) -> None:
    """Remove a half-written upload; one that cannot be removed is only logged."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot remove %s: %s", path, exc)


def index_uploads(prepared: PreparedUploads, pipeline: IngestPipeline) -> list[UploadResult]:
    """Index saved uploads (slow: runs in the background thread); one result per file.

    A failed upload's saved file is deleted only when the index holds nothing of it: a
    file indexed in part keeps it, so Re-index can finish it. After a problem with the
    whole run (the index locked for too long, a full disk) each file's result says what
    the checkpoints published before it did for that file.
    """
    results, saved = prepared.results, prepared.saved
    if not saved:
        return list(results.values())
    names = {os.path.realpath(p): name for p, name in saved.items()}
    try:
        report = pipeline.run(list(saved), titles=saved, collection=prepared.collection)
    except RagError as exc:
        logger.warning("ingesting uploads stopped: %s", exc)
        reason = safe_label(str(exc))
        stored = _stored(pipeline.store)
        for key, name in names.items():
            doc = stored.get(key) if stored is not None else None
            if doc is not None and doc.complete:
                results[name] = UploadResult(name, "added")
            elif doc is not None:
                results[name] = UploadResult(name, "failed", f"{reason}{_partial_note(doc)}")
            else:
                results[name] = UploadResult(name, "failed", reason)
                if stored is not None:
                    _discard(Path(key))
        return list(results.values())
    for result in outcome_results(report, names):
        results[result.name] = result
    if report.failed:
        stored = _stored(pipeline.store)
        for outcome in report.failed:
            if stored is not None and outcome.path not in stored:
                _discard(Path(outcome.path))
    return list(results.values())


def _stored(store: Store) -> dict[str, DocumentInfo] | None:
    """Each path the index holds something for, with that document; None if unreadable."""
    try:
        docs = store.documents()
    except RagError as exc:
        logger.warning("cannot read the index to see what was stored: %s", exc)
        return None
    # Complete documents win: a path names its complete version while a newer one is partial.
    return {s: d for d in sorted(docs, key=lambda d: d.complete) for s in d.sources}


def _partial_note(doc: DocumentInfo) -> str:
    return (
        f" (the first {doc.chunks:,} chunks are in the index, marked partial; re-index to finish)"
    )


def outcome_results(report: IngestReport, names: dict[str, str]) -> list[UploadResult]:
    """One result per file of a report, named by ``names`` (real path -> display name)."""
    return [
        UploadResult(
            names.get(f.path, safe_label(Path(f.path).name)), f.status, safe_label(f.reason or "")
        )
        for f in report.files
    ]


# How each result status reads in the summary line, in the order it is listed.
_SUMMARY = {
    "added": "added to the index",
    "updated": "updated (new content replaced the old)",
    "re-indexed": "re-indexed",
    "unchanged": "unchanged (already indexed)",
    "deleted": "deleted",
    "removed": "removed (the file is gone)",
    "failed": "not indexed",
}


def summary(results: list[UploadResult]) -> str:
    """'1 file added to the index, 1 file not indexed.': what happened, counted by outcome."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = [*_SUMMARY, *sorted(set(counts) - set(_SUMMARY))]
    parts = [
        f"{counts[s]} file{'' if counts[s] == 1 else 's'} {_SUMMARY.get(s, s)}"
        for s in order
        if counts.get(s)
    ]
    return (", ".join(parts) or "Nothing to do") + "."


def reindex(
    pipeline: IngestPipeline,
    paths: list[Path],
    names: dict[Path, str],
    collection: str = DEFAULT_COLLECTION,
) -> list[UploadResult]:
    """Read and embed files again (runs in the background thread); one result per file.

    ``names`` are the files' display names (an upload's original name), kept as the
    documents' titles; a file read again says "re-indexed".
    """
    try:
        report = pipeline.run(paths, force=True, titles=names, collection=collection)
    except RagError as exc:
        return [
            UploadResult(name, "failed", safe_label(f"re-index stopped: {exc}"))
            for name in names.values()
        ]
    results = outcome_results(report, {os.path.realpath(p): name for p, name in names.items()})
    for r in results:
        if r.status in ("added", "updated"):
            r.status = "re-indexed"
    return results


def delete_documents(res: Library, docs: list[DocumentInfo]) -> list[str]:
    """Remove documents and their chunks; uploaded copies are deleted from disk too."""
    with res.store.writer() as writer:
        for doc in docs:
            writer.delete_document(doc.id)
    for doc in docs:
        uploads = uploads_dir(res.settings, doc.collection).resolve()
        for source in doc.sources:
            path = Path(source)
            if path.parent.resolve() == uploads:
                path.unlink(missing_ok=True)
    return [safe_label(d.name) for d in docs]
