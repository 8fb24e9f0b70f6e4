"""The documents page: upload, see what is indexed, delete and re-index."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import streamlit as st

from ingest.detect import SUPPORTED_SUFFIXES, Kind, detect_kind
from rag.errors import IngestError, RagError
from rag.store import DocumentInfo, content_id
from ui.resources import Resources
from ui.state import SessionState, UploadResult, session

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
    return (name or "upload")[:120]


def page(res: Resources) -> None:
    """Render the documents page."""
    state = session()
    st.title("Documents")
    _upload(res, state)
    _results(state)
    try:
        docs = res.store.documents()
    except RagError as exc:
        st.error(str(exc))
        return
    if not docs:
        st.info("Nothing is indexed yet. Upload PDF, Word, Markdown, HTML or text files above.")
        return
    _table(res, state, docs)


def _upload(res: Resources, state: SessionState) -> None:
    limit = res.settings.upload_max_mb
    files = st.file_uploader(
        f"Add documents (PDF, DOCX, Markdown, HTML, text; up to {limit} MB each)",
        type=ACCEPTED,
        accept_multiple_files=True,
        key=f"uploader-{state.uploader_nonce}",
        max_upload_size=limit,
    )
    if files and st.button("Add to index", type="primary", icon=":material/upload:"):
        state.upload_results = ingest_uploads(res, [(f.name, f.getvalue()) for f in files])
        state.uploader_nonce += 1  # clears the uploader
        st.rerun()


def ingest_uploads(res: Resources, files: list[tuple[str, bytes]]) -> list[UploadResult]:
    """Store uploads under generated names, check their type by content, and index them."""
    results: dict[str, UploadResult] = {}
    saved: dict[Path, str] = {}
    uploads = res.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    try:
        known: dict[str, str] = {d.id: d.name for d in res.store.documents()}
    except RagError:
        known = {}
    limit = res.settings.upload_max_mb * 1024 * 1024
    for browser_name, data in files:
        name = display_name(browser_name)
        if len(data) > limit:
            results[name] = UploadResult(name, "failed", f"larger than {limit // 2**20} MB")
            continue
        doc_id = content_id(data)
        if doc_id in known:
            results[name] = UploadResult(name, "unchanged", f"already indexed as {known[doc_id]}")
            continue
        known[doc_id] = name  # a second copy in the same upload is not stored twice
        # The browser's extension is only a hint for the content check (a text file named
        # .pdf is refused); the stored name is generated either way.
        hint = Path(name).suffix.lower()
        tmp = uploads / f"{uuid.uuid4().hex}{hint if hint in SUPPORTED_SUFFIXES else '.part'}"
        tmp.write_bytes(data)
        try:
            kind = detect_kind(tmp)
        except IngestError as exc:
            tmp.unlink()
            results[name] = UploadResult(name, "failed", exc.reason)
            continue
        path = tmp.with_suffix(_SUFFIX[kind])
        tmp.rename(path)
        saved[path] = name
        results[name] = UploadResult(name, "added")
    if saved:
        bar = st.progress(0.0, text="Reading files…")

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "parse":
                value, label = 0.3 * done / max(total, 1), "Reading files"
            else:
                value, label = 0.3 + 0.7 * done / max(total, 1), "Embedding passages"
            bar.progress(min(1.0, value), text=f"{label}: {done} of {total}")

        try:
            report = res.pipeline(progress).run(list(saved), titles=saved)
        except RagError as exc:
            for path, name in saved.items():
                path.unlink(missing_ok=True)
                results[name] = UploadResult(name, "failed", str(exc))
        else:
            for outcome in report.files:
                path = Path(outcome.path)
                name = saved.get(path, path.name)
                results[name] = UploadResult(name, outcome.status, outcome.reason or "")
                if outcome.status == "failed":
                    path.unlink(missing_ok=True)
        bar.empty()
    return list(results.values())


def _results(state: SessionState) -> None:
    if not state.upload_results:
        return
    failed = [r for r in state.upload_results if r.status == "failed"]
    ok = len(state.upload_results) - len(failed)
    if failed:
        st.warning(f"{ok} file(s) indexed, {len(failed)} failed.")
    else:
        st.success(f"{ok} file(s) indexed.")
    st.dataframe(
        [{"file": r.name, "result": r.status, "reason": r.reason} for r in state.upload_results],
        hide_index=True,
        use_container_width=True,
    )


def _rows(docs: list[DocumentInfo]) -> list[dict[str, Any]]:
    return [
        {
            "name": d.name,
            "pages": d.pages,
            "chunks": d.chunks,
            "added": d.ingested_at.replace("T", " ").replace("+00:00", " UTC"),
            "also as": ", ".join(d.titles[1:]),
        }
        for d in docs
    ]


def _table(res: Resources, state: SessionState, docs: list[DocumentInfo]) -> None:
    st.subheader(f"Indexed ({len(docs)})")
    st.dataframe(_rows(docs), hide_index=True, use_container_width=True)
    names = {d.id: f"{d.name} ({d.id[:8]})" for d in docs}
    chosen = st.multiselect("Select documents", options=list(names), format_func=lambda i: names[i])
    left, right, _ = st.columns([1, 1, 4])
    if left.button("Delete", icon=":material/delete:", disabled=not chosen):
        try:
            removed = delete_documents(res, [d for d in docs if d.id in chosen])
        except RagError as exc:
            st.error(str(exc))
            return
        state.upload_results = [UploadResult(n, "removed") for n in removed]
        st.rerun()
    if right.button("Re-index", icon=":material/refresh:", disabled=not chosen):
        paths = [Path(p) for d in docs if d.id in chosen for p in d.sources if Path(p).is_file()]
        if not paths:
            st.error("The files of the selected documents are gone; delete them instead.")
            return
        try:
            report = res.pipeline(lambda *_: None).run(paths, force=True)
        except RagError as exc:
            st.error(str(exc))
            return
        state.upload_results = [
            UploadResult(Path(f.path).name, f.status, f.reason or "") for f in report.files
        ]
        st.rerun()


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
    return [d.name for d in docs]
