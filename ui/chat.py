"""The chat page: conversations in the sidebar, streamed answers with citation cards.

Every question is stored the moment it is asked and its answer when the outcome is
known, so the page is always drawn from memory: answered, cut, stopped (the user pressed
Stop, or clicked elsewhere while it streamed) or failed (with the error and **Retry**).
The last answer can be regenerated; every answer can be copied with its sources.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from rag.chain import AnswerStream
from rag.errors import RagError, with_id
from rag.guard.output import LinkPolicy
from rag.llm.client import ModelStatus
from rag.memory import (
    CUT,
    FAILED,
    REFUSED,
    STOPPED,
    ConversationNotFoundError,
    Exchange,
    Message,
)
from ui.render import (
    answer_details,
    citation_cards,
    escape_markdown,
    guard_stream,
    sanitize_answer,
    show_error,
)
from ui.resources import CallerChunks, Resources
from ui.source import show_source
from ui.state import SessionState, session, widget_value

logger = logging.getLogger(__name__)
SETTLE_S = 5.0  # longest a new run waits for an interrupted answer to be stored
EXAMPLE = "Ask a question about your documents"
STREAMING_NOTE = (
    "Answering… The question box is off until this answer ends. **Stop** keeps what has arrived."
)


def page(res: Resources, documents_page: StreamlitPage) -> None:
    """Render the chat page."""
    state = session()
    st.title("Chat")
    _conversation(res, state, documents_page)
    _sidebar(res, state)  # last, so a conversation started just now is listed


def _conversation(res: Resources, state: SessionState, documents_page: StreamlitPage) -> None:
    try:
        has_documents = bool(res.service.documents(caller=res.caller))
    except RagError as exc:
        show_error(exc, res.service.record_error)
        return
    if not has_documents:
        st.info(
            "No documents are indexed yet, so there is nothing to answer from. "
            "Add some on the documents page first."
        )
        st.page_link(documents_page, label="Add documents", icon=":material/upload_file:")
        return
    # "disable": a second question cannot be sent while an answer streams (it would
    # silently end the first); the box comes back when the answer ends or is stopped.
    question = st.chat_input(EXAMPLE, submit_mode="disable")
    _settle(state)
    answering, state.answering = state.answering, None
    if question and question.strip():
        answering = _store_question(res, state, question)
    exchanges: list[Exchange] = []
    if state.conversation_id is not None:
        try:
            exchanges = res.service.exchanges(state.conversation_id, caller=res.caller)
        except RagError:
            exchanges = []
    for i, exchange in enumerate(exchanges):
        with st.chat_message("user"):
            st.markdown(escape_markdown(exchange.question.content))
        if exchange.question.id == answering and state.conversation_id is not None:
            _answer(res, state, state.conversation_id, exchange.question.id)
            st.rerun()  # draw the stored outcome, with its buttons, and free the box
        _show_answer(res, state, exchange, last=i == len(exchanges) - 1)


def _settle(state: SessionState) -> None:
    """Let an answer this session was streaming store its outcome before the page reads it.

    Streamlit starts the new run at once when the page is clicked (Stop, Retry, another
    conversation); the interrupted run stores what arrived at its next poll.
    """
    feed, state.in_flight = state.in_flight, None
    if isinstance(feed, AnswerFeed) and not feed.settled.is_set():
        feed.stop()
        if not feed.settled.wait(SETTLE_S):
            logger.warning("the interrupted answer did not settle within %.0f s", SETTLE_S)


def _store_question(res: Resources, state: SessionState, question: str) -> int:
    """Store a new question (starting a conversation if needed); returns its id."""
    try:
        state.conversation_id, asked = res.service.store_question(
            question, caller=res.caller, conversation_id=state.conversation_id
        )
    except ConversationNotFoundError:  # deleted from another tab meanwhile: a new one
        state.conversation_id, asked = res.service.store_question(question, caller=res.caller)
    return asked


def _answer(res: Resources, state: SessionState, conversation_id: str, question_id: int) -> None:
    """Stream the answer to a stored question; the engine stores the outcome.

    Pressing Stop (or anything else that reruns the page) interrupts this run at the
    next poll, within a quarter second even while the model has not started: what
    arrived is then stored as stopped.
    """
    with st.chat_message("assistant"):
        st.button("Stop", key="stop", icon=":material/stop_circle:", type="secondary")
        st.caption(STREAMING_NOTE)
        status = st.empty()
        slot = st.empty()
        try:
            with st.spinner("Loading the models…"):
                stream = res.service.retry(
                    conversation_id, question_id, caller=res.caller, collections=state.collections
                )
        except RagError as exc:  # no engine: the question still gets its outcome
            res.service.record_error(exc)
            res.service.store_outcome(
                conversation_id, question_id, "", caller=res.caller, outcome=FAILED,
                error=with_id(exc),
            )  # fmt: skip
            return
        feed = AnswerFeed(stream)
        state.in_flight = feed
        try:
            with slot.container():
                view = st.empty()
                # The sources are not known while the answer streams: the allow-list only.
                live = LinkPolicy.for_answer(res.settings.link_allowlist)
                for markdown in guard_stream(feed.pieces(lambda note: _tick(status, note)), live):
                    view.markdown(markdown)
        except RagError as exc:  # stored as failed by the engine; the rerun shows it
            logger.info("answer failed: %s", exc)
        finally:
            if not feed.finished:  # interrupted: keep what arrived, end the request
                feed.stop()
                text = "".join(feed.shown).strip()
                res.service.store_outcome(
                    conversation_id, question_id, text, caller=res.caller,
                    meta={"stopped": True}, outcome=STOPPED,
                )  # fmt: skip
            feed.settled.set()


def _tick(status: Any, note: str | None) -> None:
    # Every poll writes to the page: that is where Streamlit notices Stop.
    if note:
        status.caption(escape_markdown(note))
    else:
        status.empty()


class AnswerFeed:
    """An answer stream read in a worker thread, so the page can poll it.

    The page's thread wakes every ``poll_s`` while waiting for the model, shows the
    latest notice (waiting in line, restarting, elapsed time) and so notices Stop even
    before the first word. ``stop`` ends the stream at its next piece; the engine then
    stores what arrived as stopped.
    """

    def __init__(self, stream: AnswerStream, poll_s: float = 0.25) -> None:
        self.stream = stream
        self.poll_s = poll_s
        self.shown: list[str] = []
        self.finished = False
        self.settled = threading.Event()  # set once the page has stored or left the outcome
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._notice: str | None = None
        self._started = time.monotonic()
        stream.on_status = self._status  # called from the model's threads
        self._thread = threading.Thread(target=self._read, name="answer-feed", daemon=True)
        self._thread.start()

    def _status(self, notice: ModelStatus) -> None:
        self._notice = notice.message

    def _read(self) -> None:
        try:
            for piece in self.stream:
                if self._stop.is_set():
                    break
                self._events.put(("piece", piece))
        except Exception as exc:  # noqa: BLE001 - handed to the page's thread, which raises it
            self._events.put(("error", exc))
        finally:
            if self._stop.is_set():
                self.stream.close()
            self._events.put(("end", None))

    def stop(self) -> None:
        """End the stream at its next piece (the engine stores it as stopped)."""
        self._stop.set()

    def pieces(self, tick: Callable[[str | None], None]) -> Iterator[str]:
        """The answer's pieces; ``tick(note)`` runs on every poll (note: None once text flows)."""
        while True:
            try:
                kind, value = self._events.get(timeout=self.poll_s)
            except queue.Empty:
                waited = time.monotonic() - self._started
                note = None
                if not self.shown:
                    notice = self._notice or "waiting for the model"
                    note = f"{notice[:1].upper()}{notice[1:]}… {waited:.0f} s"
                tick(note)
                continue
            if kind == "piece":
                if not self.shown:
                    tick(None)
                self.shown.append(value)
                yield value
            elif kind == "error":
                self.finished = True
                raise value
            else:
                self.finished = True
                return


def copy_text(text: str, citations: list[dict[str, Any]]) -> str:
    """An answer as plain text with its [n] markers and the list of its sources."""
    lines = [text.strip()]
    if citations:
        lines.append("")
        lines.append("Sources:")
        for c in citations:
            name = c.get("title") or Path(str(c.get("source", ""))).name
            page = f", page {c['page']}" if c.get("page") is not None else ""
            lines.append(f"[{c['n']}] {name}{page}")
    return "\n".join(lines)


def _show_answer(res: Resources, state: SessionState, exchange: Exchange, *, last: bool) -> None:
    question_id = exchange.question.id
    answer = exchange.answer
    with st.chat_message("assistant"):
        if answer is not None and answer.outcome == REFUSED:
            # A guardrail's refusal is an answer in its own right, not a failure to retry.
            st.warning(escape_markdown(str(answer.error or "refused")), icon=":material/block:")
            return
        if answer is None or answer.outcome == FAILED:
            if answer is None:
                st.warning(
                    "This question has no answer: it was interrupted before one was stored.",
                    icon=":material/help:",
                )
            else:
                st.error(str(answer.error or "the answer failed"), icon=":material/error:")
            _action(state, "Retry", f"retry-{question_id}", question_id, ":material/refresh:")
            return
        if answer.meta.get("reviewed"):
            st.badge(
                "Reviewed answer",
                icon=":material/verified:",
                color="green",
                help="A reviewer wrote or checked this answer; it is given instead of the "
                "model's for this question while the documents it cites are unchanged.",
            )
        if answer.content:
            st.markdown(sanitize_answer(answer.content, link_policy(res, answer.meta)))
        if answer.outcome == STOPPED:
            st.info(
                "You stopped this answer; what had arrived is kept."
                if answer.content
                else "You stopped this answer before any text arrived.",
                icon=":material/stop_circle:",
            )
        _footer(res, state, answer, question_id, last=last)


def link_policy(res: Resources, meta: dict[str, Any] | None) -> LinkPolicy:
    """Where an answer's links may point: the allow-list and the passages it cites."""
    cites = (meta or {}).get("citations") or []
    return LinkPolicy.for_answer(
        res.settings.link_allowlist,
        # A passage flagged for instruction-like text vouches for no URL.
        [str(c.get("text", "")) for c in cites if not c.get("flags")],
        [str(c.get("source", "")) for c in cites],
    )


def _action(state: SessionState, label: str, key: str, question_id: int, icon: str) -> None:
    st.button(label, key=key, icon=icon, on_click=_answer_again, args=(state, question_id))


def _answer_again(state: SessionState, question_id: int) -> None:
    state.answering = question_id


def _footer(
    res: Resources, state: SessionState, message: Message, question_id: int, *, last: bool
) -> None:
    text, meta, message_id = message.content, message.meta, message.id
    if message.outcome == CUT or meta.get("cut"):
        st.warning(
            f"This answer was cut: {escape_markdown(str(meta.get('cut', '')))}. "
            "What arrived is shown.",
            icon=":material/content_cut:",
        )
    if meta.get("cached"):
        st.caption(
            ":material/bolt: From the cache: written earlier for the same question, "
            "from the same documents. Regenerate asks the model again."
        )
    citations = meta.get("citations") or []
    citation_cards(
        citations,
        text,
        key=f"citation-{message_id}",
        on_source=lambda c: show_source(CallerChunks(res.service, res.caller), c, text),
    )
    st.caption(answer_details(meta))
    actions = st.container(horizontal=True, key=f"actions-{message_id}")
    with actions:
        with st.popover("Copy", icon=":material/content_copy:", key=f"copy-{message_id}"):
            st.caption("The copy icon at the top right copies the answer and its sources.")
            st.code(copy_text(text, citations), language=None, wrap_lines=True)
        if last:
            _action(
                state, "Regenerate", f"regenerate-{question_id}", question_id,
                ":material/autorenew:",
            )  # fmt: skip
        key = f"feedback-{message_id}"
        st.feedback(
            "thumbs",
            key=key,
            default=message.feedback,
            on_change=lambda: res.service.set_feedback(
                message_id, widget_value(key), caller=res.caller
            ),
        )


def _open(state: SessionState, conversation_id: str | None) -> None:
    state.conversation_id = conversation_id


def _rename(res: Resources, conversation_id: str, key: str) -> None:
    title = str(widget_value(key) or "").strip()
    if title:
        res.service.rename_conversation(conversation_id, title, caller=res.caller)


def _delete(res: Resources, state: SessionState, conversation_id: str) -> None:
    res.service.delete_conversation(conversation_id, caller=res.caller)
    state.conversation_id = None


def _zone() -> tzinfo:
    """The browser's time zone when Streamlit knows it, else UTC."""
    name = st.context.timezone
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def when(stamp: str, zone: tzinfo, today: datetime | None = None) -> str:
    """A stored UTC time as the sidebar shows it: "today 14:05", "yesterday 09:12", "3 Mar 2026"."""
    moment = datetime.fromisoformat(stamp).astimezone(zone)
    now = (today or datetime.now(UTC)).astimezone(zone)
    days = (now.date() - moment.date()).days
    if days == 0:
        return f"today {moment:%H:%M}"
    if days == 1:
        return f"yesterday {moment:%H:%M}"
    return f"{moment.day} {moment:%b %Y}"


def _sidebar(res: Resources, state: SessionState) -> None:
    # Buttons act in callbacks, which run before the next rerun renders the page.
    with st.sidebar:
        st.button(
            "New chat",
            icon=":material/add:",
            use_container_width=True,
            on_click=_open,
            args=(state, None),
        )
        _collection_picker(res, state)
        # those with at least one question
        conversations = res.service.conversations(caller=res.caller)
        if conversations:
            st.caption("Conversations")
        zone = _zone()
        for conv in conversations:
            st.button(
                escape_markdown(conv.title),
                key=f"conv-{conv.id}",
                type="primary" if conv.id == state.conversation_id else "tertiary",
                use_container_width=True,
                help=f"Started {when(conv.created_at, zone)} · last activity "
                f"{when(conv.updated_at, zone)} · {conv.questions} question(s)",
                on_click=_open,
                args=(state, conv.id),
            )
            st.caption(escape_markdown(when(conv.updated_at, zone)))
        current = next((c for c in conversations if c.id == state.conversation_id), None)
        if current is None:
            return
        with st.expander("This conversation"):
            st.caption(
                f"Started {escape_markdown(when(current.created_at, zone))}, last activity "
                f"{escape_markdown(when(current.updated_at, zone))}"
            )
            key = f"title-{current.id}"
            st.text_input(
                "Name", value=current.title, key=key, on_change=_rename, args=(res, current.id, key)
            )
            st.button(
                "Delete conversation",
                icon=":material/delete:",
                key="delete-conv",
                on_click=_delete,
                args=(res, state, current.id),
            )


def _collection_picker(res: Resources, state: SessionState) -> None:
    """Which of the user's collections answers come from (shown when there are several)."""
    readable = {c.id: c.name for c in res.service.access.collections(res.caller)}
    if len(readable) < 2:
        state.collections = None
        return
    chosen = st.multiselect(
        "Answer from",
        list(readable),
        default=[c for c in state.collections or readable if c in readable],
        format_func=lambda cid: escape_markdown(readable[cid]),
        key="chat-collections",
        help="The collections the next answers draw on; none chosen: all of them.",
    )
    state.collections = chosen if chosen and len(chosen) < len(readable) else None
