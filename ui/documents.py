"""The documents page: upload, see what is indexed, delete and re-index.

Uploads and re-indexing run in the server's one background ingestion thread
(``Resources.ingest_runner``); the page shows their progress with a fragment that polls the
job every second and shows the per-file results when it ends. So the page never waits for
a slow parse or for another ingestion to publish, and other users keep reading and asking.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from ingest.detect import SUPPORTED_SUFFIXES, Kind, detect_kind
from ingest.pipeline import IngestPipeline, IngestReport
from rag.errors import IngestError, RagError
from rag.store.faiss import DocumentInfo, FaissStore, content_id
from rag.text import safe_label
from ui.resources import IngestJob, Resources
from ui.state import SessionState, UploadResult, session

logger = logging.getLogger(__name__)

ACCEPTED = ["pdf", "docx", "md", "markdown", "html", "htm", "txt"]
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


def page(res: Resources) -> None:
    """Render the documents page."""
    state = session()
    st.title("Documents")
    busy = state.ingest_job is not None
    if busy:
        _progress(res)
    else:
        _upload(res, state)
    _results(state)
    try:
        docs = res.store.documents()
    except RagError as exc:
        st.error(str(exc))
        return
    if not docs:
        if not busy:
            st.info("Nothing is indexed yet. Upload PDF, Word, Markdown, HTML or text files above.")
        return
    _table(res, state, docs, busy=busy)


def _upload(res: Resources, state: SessionState) -> None:
    limit = res.settings.upload_max_mb
    # The widget takes files up to the server's transport cap (server.maxUploadSize), not
    # up to our limit: a file the widget refuses only gets a tooltip, while one we refuse
    # gets a result line that says why.
    files = st.file_uploader(
        f"Add documents (PDF, DOCX, Markdown, HTML, text; up to {limit} MB each)",
        type=ACCEPTED,
        accept_multiple_files=True,
        key=f"uploader-{state.uploader_nonce}",
    )
    if files and st.button("Add to index", type="primary", icon=":material/upload:"):
        prepared = prepare_uploads(res, [(f.name, f.getvalue()) for f in files])
        state.uploader_nonce += 1  # clears the uploader
        if prepared.saved:
            state.upload_results = []
            state.job_label = _job_label("Adding", list(prepared.saved.values()))
            state.ingest_job = start_job(res, lambda p: index_uploads(prepared, p))
        else:
            state.upload_results = list(prepared.results.values())
        st.rerun()


def start_job(res: Resources, work: Callable[[IngestPipeline], list[UploadResult]]) -> str:
    """Run ``work`` in the background ingestion thread; returns the job's id.

    The pipeline is built here, in the page's thread (shared resources are created there),
    and reports its progress to the job.
    """
    job = IngestJob()
    pipeline = res.pipeline(job.progress)
    return res.ingest_runner.submit(job, lambda: work(pipeline))


@st.fragment(run_every=1.0)
def _progress(res: Resources) -> None:
    """The running job's progress, polled each second; its results once it ends."""
    state = session()
    job = res.ingest_runner.get(state.ingest_job) if state.ingest_job else None
    if job is None:  # collected already, or the server restarted
        state.ingest_job = None
        st.rerun()
        return
    if job.done():
        state.ingest_job = None
        state.job_label = ""
        try:
            state.upload_results = res.ingest_runner.collect(job.id)
        except Exception as exc:
            # The background thread's boundary: index_uploads turns RagError into results,
            # so this is a bug; show it with its type rather than lose it.
            logger.exception("background ingestion failed")
            state.upload_results = [UploadResult("(ingestion)", "failed", _error_text(exc))]
        st.rerun()
        return
    value, text = describe(job)
    if state.job_label:
        st.caption(state.job_label)
    st.progress(value, text=text)


def _job_label(verb: str, names: list[str]) -> str:
    """'Re-indexing manual.pdf and 2 more': the caption over a job's progress bar."""
    if not names:
        return ""
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"{verb} {names[0]}{more}"


def _error_text(exc: BaseException) -> str:
    return safe_label(f"{type(exc).__name__}: {exc}")


def describe(job: IngestJob) -> tuple[float, str]:
    """The progress bar's value and label for a job."""
    if not job.started():
        return 0.0, "Waiting for the ingestion ahead of this one to finish…"
    wait = job.stage("wait")
    files_done, files_total = job.stage("parse") or (0, 0)
    value = min(0.95, files_done / files_total) if files_total else 0.0
    if wait is not None:
        return value, f"Waiting for another ingestion to publish… {wait[0]} s"
    parts = [f"File {min(files_done + 1, max(files_total, 1))} of {max(files_total, 1)}"]
    read = job.stage("read")
    if read is not None and read[0]:
        parts.append(f"{read[0]:,} characters read")
    embed = job.stage("embed")
    if embed is not None:
        parts.append(f"{embed[0]:,} passage{'' if embed[0] == 1 else 's'} embedded")
    published = job.stage("publish")
    if published is not None and published[0]:
        parts.append(f"{published[0]:,} saved")
    return min(0.95, value), " · ".join(parts)  # full only once the results are in


@dataclass
class PreparedUploads:
    """Uploads checked and saved under generated names, ready to index."""

    results: dict[str, UploadResult] = field(default_factory=dict)
    saved: dict[Path, str] = field(default_factory=dict)  # stored file -> display name


def ingest_uploads(res: Resources, files: list[tuple[str, bytes]]) -> list[UploadResult]:
    """Store uploads under generated names, check their type by content, and index them."""
    return index_uploads(prepare_uploads(res, files), res.pipeline(lambda *_: None))


def prepare_uploads(res: Resources, files: list[tuple[str, bytes]]) -> PreparedUploads:
    """Check size and type, skip content already indexed, and save the rest (fast).

    A file that cannot be saved (a full disk, say) is a failed result with the reason.
    """
    prepared = PreparedUploads()
    results, saved = prepared.results, prepared.saved
    uploads = res.uploads_dir
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
        known: dict[str, str] = {d.id: d.name for d in res.store.documents() if d.complete}
    except RagError:
        known = {}
    limit = res.settings.upload_max_mb * 1024 * 1024
    for browser_name, data in files:
        name = display_name(browser_name)
        if len(data) > limit:
            results[name] = UploadResult(name, "failed", _too_large(len(data), limit))
            continue
        doc_id = content_id(data)
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
        report = pipeline.run(list(saved), titles=saved)
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


def _stored(store: FaissStore) -> dict[str, DocumentInfo] | None:
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


def _results(state: SessionState) -> None:
    if not state.upload_results:
        return
    text = summary(state.upload_results)
    failed = sum(r.status == "failed" for r in state.upload_results)
    if failed == len(state.upload_results):
        st.error(text)
    elif failed:
        st.warning(text)
    else:
        st.success(text)
    st.dataframe(
        [{"file": r.name, "result": r.status, "reason": r.reason} for r in state.upload_results],
        hide_index=True,
        use_container_width=True,
    )


def _rows(docs: list[DocumentInfo]) -> list[dict[str, Any]]:
    return [
        {
            "name": safe_label(d.name),
            "pages": str(d.pages) if d.pages else "",  # only documents with pages have any
            # One type per column (Arrow refuses a column of numbers and text).
            "chunks": f"{d.chunks:,}"
            if d.complete
            else f"partial: {d.chunks:,} (re-index to finish)",
            "added": d.ingested_at.replace("T", " ").replace("+00:00", " UTC"),
            "also as": ", ".join(safe_label(t) for t in d.titles[1:]),
        }
        for d in docs
    ]


def _table(res: Resources, state: SessionState, docs: list[DocumentInfo], *, busy: bool) -> None:
    st.subheader(f"Indexed ({len(docs)})")
    st.dataframe(_rows(docs), hide_index=True, use_container_width=True)
    names = {d.id: f"{safe_label(d.name)} ({d.id[:8]})" for d in docs}
    chosen = st.multiselect("Select documents", options=list(names), format_func=lambda i: names[i])
    left, right, _ = st.columns([1, 1, 4])
    if left.button("Delete", icon=":material/delete:", disabled=not chosen):
        state.delete_pending = list(chosen)  # asks first, below
    if right.button("Re-index", icon=":material/refresh:", disabled=busy or not chosen):
        selected = [d for d in docs if d.id in chosen]
        titles = {Path(p): _title(d, p) for d in selected for p in d.sources if Path(p).is_file()}
        if not titles:
            st.error("The files of the selected documents are gone; delete them instead.")
            return
        paths = list(titles)
        state.upload_results = []
        state.delete_pending = []
        state.job_label = _job_label("Re-indexing", list(titles.values()))
        state.ingest_job = start_job(res, lambda p: reindex(p, paths, titles))
        st.rerun()
    _confirm_delete(res, state, docs)


def _title(doc: DocumentInfo, source: str) -> str:
    """The name a document has under one of its files: the upload's original name."""
    for path, title in zip(doc.sources, doc.titles, strict=False):
        if path == source and title:
            return safe_label(title)
    return safe_label(doc.name)


def _confirm_delete(res: Resources, state: SessionState, docs: list[DocumentInfo]) -> None:
    """The second step of Delete: name what goes and ask for a "Yes, delete"."""
    doomed = [d for d in docs if d.id in state.delete_pending]
    if not doomed:
        state.delete_pending = []
        return
    names = ", ".join(safe_label(d.name) for d in doomed)
    st.warning(
        f"Delete {len(doomed)} document{'' if len(doomed) == 1 else 's'} ({names})? Their "
        "passages leave the index and uploaded copies are removed from disk; this cannot "
        "be undone."
    )
    yes, no, _ = st.columns([1, 1, 4])
    if yes.button("Yes, delete", type="primary", icon=":material/delete_forever:"):
        state.delete_pending = []
        try:
            removed = delete_documents(res, doomed)
        except RagError as exc:
            st.error(str(exc))
            return
        state.upload_results = [UploadResult(n, "deleted") for n in removed]
        st.rerun()
    if no.button("Cancel"):
        state.delete_pending = []
        st.rerun()


def reindex(
    pipeline: IngestPipeline, paths: list[Path], names: dict[Path, str]
) -> list[UploadResult]:
    """Read and embed files again (runs in the background thread); one result per file.

    ``names`` are the files' display names (an upload's original name), kept as the
    documents' titles; a file read again says "re-indexed".
    """
    try:
        report = pipeline.run(paths, force=True, titles=names)
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


def delete_documents(res: Resources, docs: list[DocumentInfo]) -> list[str]:
    """Remove documents and their chunks; uploaded copies are deleted from disk too."""
    with res.store.writer() as writer:
        for doc in docs:
            writer.delete_document(doc.id)
    uploads = res.uploads_dir.resolve()
    for doc in docs:
        for source in doc.sources:
            path = Path(source)
            if path.parent.resolve() == uploads:
                path.unlink(missing_ok=True)
    return [safe_label(d.name) for d in docs]
