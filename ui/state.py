"""The only module that touches ``st.session_state``: per-browser-session state, typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from rag.service.documents import UploadResult

_KEY = "ragchat"


@dataclass
class SessionState:
    """Everything one browser session keeps between reruns."""

    conversation_id: str | None = None
    answering: int | None = None  # a stored question to answer on this run (retry, regenerate)
    in_flight: Any = None  # the ui.chat.AnswerFeed of the answer this session is streaming
    upload_results: list[UploadResult] = field(default_factory=list)
    uploader_nonce: int = 0
    notice: str | None = None
    ingest_job: str | None = None  # the background ingestion this session is waiting for
    job_label: str = ""  # what that ingestion does, e.g. "Re-indexing manual.pdf"
    delete_pending: list[str] = field(default_factory=list)  # ids awaiting "Yes, delete"
    batch_job: str | None = None  # the batch run the Batch page shows
    batch_nonce: int = 0
    # The collections the chat answers from (None: all the user may read).
    collections: list[str] | None = None
    # The Review page: the sources chosen for each item's correction (chunk ids, in the
    # order chosen: [1], [2], ...), and what the last review did (kind, message).
    review_sources: dict[int, list[str]] = field(default_factory=dict)
    review_notice: tuple[str, str] | None = None
    # The last passage search of each item's form (query, hits as JSON): a rerun (a box
    # ticked, a word typed in the answer) shows them again without searching again.
    review_hits: dict[int, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)


def session() -> SessionState:
    """This browser session's state (created on first use)."""
    if _KEY not in st.session_state:
        st.session_state[_KEY] = SessionState()
    state: SessionState = st.session_state[_KEY]
    return state


def widget_value(key: str) -> Any:
    """The current value of the widget with this key (None before it exists)."""
    return st.session_state.get(key)
