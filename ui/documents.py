"""The documents page: upload, see what is indexed, delete and re-index.

Uploads and re-indexing are ingestion jobs on the server's job queue (``JobService``), with
ids, progress and results kept in the queue's store: the page follows its job with a
fragment that polls it every second and shows the per-file results when it ends. So the
page never waits for a slow parse or for another ingestion to publish, other users keep
reading and asking, and closing the tab or restarting the server loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import streamlit as st

from rag.errors import RagError
from rag.service.documents import UploadResult, display_name, summary
from rag.store.faiss import DocumentInfo
from rag.text import safe_label
from ui.access import collections_section
from ui.render import escape_markdown, show_error
from ui.resources import Resources
from ui.state import SessionState, session

logger = logging.getLogger(__name__)

ACCEPTED = ["pdf", "docx", "md", "markdown", "html", "htm", "txt"]


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
        docs = res.service.documents(caller=res.caller)
    except RagError as exc:
        show_error(exc, res.service.record_error)
        return
    if docs:
        _table(res, state, docs, busy=busy)
    elif not busy:
        st.info("Nothing is indexed yet. Upload PDF, Word, Markdown, HTML or text files above.")
    collections_section(res)


def _upload(res: Resources, state: SessionState) -> None:
    limit = res.settings.upload_max_mb
    editable = res.service.access.editable(res.caller)
    if not editable:
        st.info("You may read and ask about these documents; adding or changing them is not "
                "open to you.")  # fmt: skip
        return
    names = {c.id: c.name for c in editable}
    default = res.service.access.default_collection(res.caller)
    target = default if default in names else next(iter(names))
    if len(names) > 1:
        target = st.selectbox(
            "Add to collection",
            options=list(names),
            index=list(names).index(target),
            format_func=lambda cid: safe_label(names[cid]),
            key="upload-collection",
        )
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
        uploads = [(f.name, f.getvalue()) for f in files]
        state.uploader_nonce += 1  # clears the uploader
        label = _job_label("Adding", [display_name(name) for name, _ in uploads])
        _start(
            res,
            state,
            label,
            lambda jobs: jobs.submit_ingest(uploads, caller=res.caller, collection=target),
        )
        st.rerun()


def _start(res: Resources, state: SessionState, label: str, submit: Callable[[Any], Any]) -> None:
    """Submit an ingestion job; the page follows it by its id (it survives the tab)."""
    try:
        info = submit(_jobs(res))
    except RagError as exc:
        state.upload_results = [UploadResult("(ingestion)", "failed", safe_label(str(exc)))]
        return
    state.upload_results = []
    state.delete_pending = []
    state.job_label = label
    state.ingest_job = info.id


def _jobs(res: Resources) -> Any:
    if res.jobs is None:
        raise RagError("this server has no job queue to index uploads with")
    return res.jobs()


@st.fragment(run_every=1.0)
def _progress(res: Resources) -> None:
    """The running job's progress, polled each second; its results once it ends."""
    state = session()
    try:
        info = (
            _jobs(res).get(state.ingest_job, caller=res.caller).to_json()
            if state.ingest_job
            else None
        )
    except RagError as exc:  # forgotten (a new data folder) or the queue is unreadable
        logger.warning("cannot follow ingestion job %s: %s", state.ingest_job, exc)
        info = None
    if info is None:
        state.ingest_job = None
        st.rerun()
        return
    if info["state"] in ("done", "failed", "cancelled"):
        state.ingest_job = None
        state.job_label = ""
        rows = _jobs(res).results(info["id"], caller=res.caller)
        state.upload_results = [UploadResult(**row) for row in rows]
        failures = [e["error"] for e in info["errors"] if "index" not in e]
        state.upload_results += [
            UploadResult("(ingestion)", "failed", safe_label(str(f))) for f in failures
        ]
        st.rerun()
        return
    value, text = describe(info)
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


def describe(job: dict[str, Any]) -> tuple[float, str]:
    """The progress bar's value and label for an ingestion job (``JobInfo.to_json()``)."""
    if job["state"] == "queued":
        return 0.0, "Waiting for the ingestion ahead of this one to finish…"
    stages = job.get("stages") or {}
    wait = stages.get("wait")
    files_done, files_total = stages.get("parse") or (0, job.get("total") or 0)
    value = min(0.95, files_done / files_total) if files_total else 0.0
    if wait is not None:
        return value, f"Waiting for another ingestion to publish… {wait[0]} s"
    parts = [f"File {min(files_done + 1, max(files_total, 1))} of {max(files_total, 1)}"]
    read = stages.get("read")
    if read is not None and read[0]:
        parts.append(f"{read[0]:,} characters read")
    embed = stages.get("embed")
    if embed is not None:
        parts.append(f"{embed[0]:,} passage{'' if embed[0] == 1 else 's'} embedded")
    published = stages.get("publish")
    if published is not None and published[0]:
        parts.append(f"{published[0]:,} saved")
    return min(0.95, value), " · ".join(parts)  # full only once the results are in


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


def _rows(docs: list[DocumentInfo], collections: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "name": safe_label(d.name),
            "collection": safe_label(collections.get(d.collection, d.collection)),
            "pages": str(d.pages) if d.pages else "",  # only documents with pages have any
            # One type per column (Arrow refuses a column of numbers and text).
            "chunks": f"{d.chunks:,}"
            if d.complete
            else f"partial: {d.chunks:,} (re-index to finish)",
            "added": d.ingested_at.replace("T", " ").replace("+00:00", " UTC"),
            "also as": ", ".join(safe_label(t) for t in d.titles[1:]),
            "personal data": _pii_cell(d),
            "flagged chunks": "" if d.pii is None else str(d.flagged or ""),
        }
        for d in docs
    ]


def _pii_cell(d: DocumentInfo) -> str:
    if d.pii is None:
        return "not scanned"
    return ", ".join(f"{kind} ({n})" for kind, n in sorted(d.pii.items()))


def _table(res: Resources, state: SessionState, docs: list[DocumentInfo], *, busy: bool) -> None:
    st.subheader(f"Indexed ({len(docs)})")
    flagged = [d for d in docs if d.flagged]
    if flagged:
        named = ", ".join(safe_label(d.name) for d in flagged[:5]) + (
            ", …" if len(flagged) > 5 else ""
        )
        kept = (
            "they are kept out of answers and searches (RAG_QUARANTINE)."
            if res.settings.quarantine
            else "RAG_QUARANTINE=true keeps them out of answers and searches."
        )
        st.warning(
            f"{len(flagged)} document{'' if len(flagged) == 1 else 's'} hold instruction-like "
            f"text that may try to steer the model ({escape_markdown(named)}). Citations of "
            f"such passages are marked; {kept}",
            icon=":material/gpp_maybe:",
        )
    collections = {c.id: c.name for c in res.service.access.collections(res.caller)}
    st.dataframe(_rows(docs, collections), hide_index=True, use_container_width=True)
    names = {d.id: f"{safe_label(d.name)} ({d.id[:8]})" for d in docs}
    chosen = st.multiselect("Select documents", options=list(names), format_func=lambda i: names[i])
    left, right, _ = st.columns([1, 1, 4])
    if left.button("Delete", icon=":material/delete:", disabled=not chosen):
        state.delete_pending = list(chosen)  # asks first, below
    if right.button("Re-index", icon=":material/refresh:", disabled=busy or not chosen):
        selected = [d for d in docs if d.id in chosen]
        label = _job_label("Re-indexing", [safe_label(d.name) for d in selected])
        _start(
            res,
            state,
            label,
            lambda jobs: jobs.submit_reindex([d.id for d in selected], caller=res.caller),
        )
        st.rerun()
    _confirm_delete(res, state, docs)


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
            removed = res.service.delete_documents([d.id for d in doomed], caller=res.caller)
        except RagError as exc:
            show_error(exc, res.service.record_error)
            return
        state.upload_results = [UploadResult(safe_label(d.name), "deleted") for d in removed]
        st.rerun()
    if no.button("Cancel"):
        state.delete_pending = []
        st.rerun()
