"""The chat page: conversations in the sidebar, streamed answers with citation cards."""

from __future__ import annotations

from typing import Any

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from rag.errors import RagError
from rag.memory import Message
from ui.render import answer_details, citation_card, escape_markdown, guard_stream, sanitize_answer
from ui.resources import Resources
from ui.state import SessionState, session, widget_value

EXAMPLE = "Ask a question about your documents"


def page(res: Resources, documents_page: StreamlitPage) -> None:
    """Render the chat page."""
    state = session()
    _sidebar(res, state)
    st.title("Chat")
    try:
        has_documents = bool(res.store.documents())
    except RagError as exc:
        st.error(str(exc))
        return
    if not has_documents:
        st.info(
            "No documents are indexed yet, so there is nothing to answer from. "
            "Add some on the documents page first."
        )
        st.page_link(documents_page, label="Add documents", icon=":material/upload_file:")
        return

    if state.conversation_id is not None:
        for message in res.memory.messages(state.conversation_id):
            _show(res, message)

    question = st.chat_input(EXAMPLE)
    if question:
        _ask(res, state, question)


def _sidebar(res: Resources, state: SessionState) -> None:
    with st.sidebar:
        if st.button("New chat", icon=":material/add:", use_container_width=True):
            state.conversation_id = None
        conversations = res.memory.conversations()
        if state.conversation_id is not None and not any(
            c.id == state.conversation_id for c in conversations
        ):
            state.conversation_id = None  # deleted in another session
        if conversations:
            st.caption("Conversations")
        for conv in conversations:
            current = conv.id == state.conversation_id
            if st.button(
                conv.title,
                key=f"conv-{conv.id}",
                type="primary" if current else "tertiary",
                use_container_width=True,
            ):
                state.conversation_id = conv.id
                st.rerun()
        if state.conversation_id is not None:
            conv = res.memory.get(state.conversation_id)
            with st.expander("This conversation"):
                title = st.text_input("Name", value=conv.title, key=f"title-{conv.id}")
                if title.strip() and title != conv.title:
                    res.memory.rename(conv.id, title)
                    st.rerun()
                if st.button("Delete conversation", icon=":material/delete:", key="delete-conv"):
                    res.memory.delete(conv.id)
                    state.conversation_id = None
                    st.rerun()


def _show(res: Resources, message: Message) -> None:
    with st.chat_message(message.role):
        if message.role == "user":
            st.markdown(escape_markdown(message.content))
            return
        st.markdown(sanitize_answer(message.content))
        _footer(res, message.id, message.content, message.meta, message.feedback)


def _footer(
    res: Resources, message_id: int, text: str, meta: dict[str, Any], feedback: int | None
) -> None:
    citations = meta.get("citations") or []
    if citations:
        columns = st.columns(min(len(citations), 3))
        for i, citation in enumerate(citations):
            with columns[i % len(columns)]:
                citation_card(citation, text, key=f"citation-{message_id}-{citation['n']}")
    left, right = st.columns([5, 1])
    left.caption(answer_details(meta))
    key = f"feedback-{message_id}"
    with right:
        st.feedback(
            "thumbs",
            key=key,
            default=feedback,
            on_change=lambda: res.memory.set_feedback(message_id, widget_value(key)),
        )


def _ask(res: Resources, state: SessionState, question: str) -> None:
    if state.conversation_id is None:
        state.conversation_id = res.memory.create(question.strip()[:60]).id
    with st.chat_message("user"):
        st.markdown(escape_markdown(question))
    with st.chat_message("assistant"):
        slot = st.empty()
        try:
            engine = res.engine()
            stream = engine.ask_in(state.conversation_id, question)
            with slot.container():
                st.write_stream(guard_stream(stream))
        except RagError as exc:
            st.error(str(exc), icon=":material/error:")
            return
        answer = stream.result
        if answer is None or answer.message_id is None:
            st.error("The answer ended early; please ask again.")
            return
        slot.markdown(sanitize_answer(answer.text))  # with markers ragchat attached, if any
        _footer(res, answer.message_id, answer.text, answer.meta(), None)
