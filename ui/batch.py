"""The batch page: run a file of questions as one job, follow it, download the answers.

The job runs on the server's queue (``JobService``), not in this page: closing the tab
does not stop it, and the page finds it again in the list of recent runs. While a job
runs, a fragment polls it every second; when it ends, the page shows its results.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from rag.access.principal import Principal
from rag.errors import RagError
from rag.service.export import results_csv, results_jsonl
from rag.text import safe_label
from ui.render import show_error
from ui.resources import Resources
from ui.state import session

TERMINAL = ("done", "failed", "cancelled")
_STATE_LABEL = {
    "queued": "Queued",
    "running": "Running",
    "done": "Finished",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
HELP = (
    "A CSV file with a `question` column, or a JSON Lines file with one "
    '`{"question": ...}` object a line. Optional fields: `sources` and `pages` (the files '
    "and pages that should be cited; in CSV separated by `;`) and `reference_answer`. When "
    "they are given, the run also reports retrieval and citation metrics, as `ragchat eval` "
    "does."
)


def page(res: Resources) -> None:
    """Render the batch page."""
    st.title("Batch questions")
    if res.jobs is None:
        st.info("Batch runs need the job queue, which this server has not started.")
        return
    try:
        jobs = res.jobs()
    except RagError as exc:
        show_error(exc, res.service.record_error)
        return
    state = session()
    _submit(jobs, res, state)
    if state.batch_job:
        try:
            info = jobs.get(state.batch_job, caller=res.caller).to_json()
        except RagError as exc:  # forgotten (a new data folder), or the queue is down
            show_error(exc, res.service.record_error)
            state.batch_job = None
        else:
            if info["state"] in TERMINAL:
                _finished(jobs, info, res.caller)
            else:
                _running(jobs, info["id"], res.caller)
    _recent(jobs, state, res.caller)


def _submit(jobs: Any, res: Resources, state: Any) -> None:
    st.markdown(HELP)
    upload = st.file_uploader(
        "Questions (CSV or JSON Lines)",
        type=["csv", "jsonl", "json"],
        key=f"batch-upload-{state.batch_nonce}",
    )
    concurrency = st.number_input(
        "Questions answered at once",
        min_value=1,
        max_value=64,
        value=res.settings.batch_concurrency,
        help="More is faster when the model endpoint can serve several questions at once.",
    )
    if upload is not None and st.button("Run", type="primary", icon=":material/play_arrow:"):
        try:
            info = jobs.submit_batch_file(
                upload.name, upload.getvalue(), caller=res.caller, concurrency=int(concurrency)
            )
        except RagError as exc:  # a file with no usable question: nothing was queued
            show_error(exc, res.service.record_error)
            return
        state.batch_job = info.id
        state.batch_nonce += 1  # clears the uploader
        st.rerun()


@st.fragment(run_every=1.0)
def _running(jobs: Any, job_id: str, caller: Principal) -> None:
    """Progress of a queued or running job, polled each second; the page reruns at the end."""
    try:
        info = jobs.get(job_id, caller=caller).to_json()
    except RagError as exc:
        show_error(exc, None)
        return
    if info["state"] in TERMINAL:
        st.rerun()  # the whole page: it shows the results
        return
    _progress(info)
    if st.button("Cancel", icon=":material/stop:", key=f"cancel-{job_id}"):
        jobs.cancel(job_id, caller=caller)
        st.rerun()


def _progress(info: dict[str, Any]) -> None:
    done, total = int(info["done"]), int(info["total"])
    label = f"{_STATE_LABEL.get(info['state'], info['state'])}: {done} of {total} questions"
    st.progress(done / total if total else 0.0, text=label)
    _errors(info)


def _errors(info: dict[str, Any]) -> None:
    errors = info.get("errors") or []
    if not errors:
        return
    with st.expander(f"Problems ({len(errors)})", expanded=info["state"] in TERMINAL):
        for error in errors:
            where = f"line {error['line']}" if "line" in error else f"question {error['index'] + 1}"
            field = f"{error['field']} " if error.get("field") else ""
            st.text(f"{where}: {field}{safe_label(str(error.get('error', '')))}")


def _finished(jobs: Any, info: dict[str, Any], caller: Principal) -> None:
    job_id = info["id"]
    _progress(info)
    rows = jobs.results(job_id, caller=caller)
    if info["state"] == "cancelled":
        st.warning(f"Cancelled: {len(rows)} of {info['total']} questions were answered.")
    elif info["state"] == "failed":
        st.error("The run failed; the answers below are those that arrived.")
    else:
        answered = sum(1 for r in rows if not r.get("error"))
        st.success(f"{answered} of {info['total']} questions answered.")
    if info.get("metrics"):
        st.subheader("Metrics")
        st.caption("Over the questions that name the sources to cite, as `ragchat eval` reports.")
        st.table(
            [
                {"metric": k, "value": f"{v:.3f}" if isinstance(v, float) else str(v)}
                for k, v in info["metrics"].items()
                if not isinstance(v, dict | list)
            ]
        )
    left, right = st.columns(2)
    left.download_button(
        "Download answers (JSON Lines)",
        results_jsonl(rows),
        file_name=f"{job_id}.jsonl",
        mime="application/x-ndjson",
        icon=":material/download:",
    )
    right.download_button(
        "Download answers (CSV)",
        results_csv(rows),
        file_name=f"{job_id}.csv",
        mime="text/csv",
        icon=":material/download:",
    )
    if rows:
        st.dataframe(
            [
                {
                    "question": r.get("question", ""),
                    "answer": r.get("answer", ""),
                    "sources": len(r.get("citations") or []),
                    "error": r.get("error") or "",
                }
                for r in rows
            ],
            hide_index=True,
        )


def _recent(jobs: Any, state: Any, caller: Principal) -> None:
    runs = [j.to_json() for j in jobs.list(caller=caller) if j.to_json()["kind"] == "batch"][:20]
    if not runs:
        return
    st.subheader("Recent runs")
    for run in runs:
        label = (
            f"{run['created_at'][:16].replace('T', ' ')} — "
            f"{_STATE_LABEL.get(run['state'], run['state'])}, {run['done']} of {run['total']}"
        )
        if st.button(label, key=f"run-{run['id']}", disabled=run["id"] == state.batch_job):
            state.batch_job = run["id"]
            st.rerun()
