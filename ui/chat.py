"""The chat page: conversations in the sidebar, streamed answers with citation cards."""

from __future__ import annotations

from typing import Any

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from rag.errors import RagError
from rag.memory import ConversationNotFoundError, Message
from ui.render import answer_details, citation_card, escape_markdown, guard_stream, sanitize_answer
from ui.resources import Resources
from ui.state import SessionState, session, widget_value

EXAMPLE = "Ask a question about your documents"


def page(res: Resources, documents_page: StreamlitPage) -> None:
    """Render the chat page."""
    state = session()
    st.title("Chat")
    _conversation(res, state, documents_page)
    _sidebar(res, state)  # last, so a conversation started just now is listed


def _conversation(res: Resources, state: SessionState, documents_page: StreamlitPage) -> None:
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
        try:
            messages = res.memory.messages(state.conversation_id)
        except RagError:
            messages = []
        for message in messages:
            _show(res, message)
    question = st.chat_input(EXAMPLE)
    if question:
        _ask(res, state, question)


def _open(state: SessionState, conversation_id: str | None) -> None:
    state.conversation_id = conversation_id


def _rename(res: Resources, conversation_id: str, key: str) -> None:
    title = str(widget_value(key) or "").strip()
    if title:
        res.memory.rename(conversation_id, title)


def _delete(res: Resources, state: SessionState, conversation_id: str) -> None:
    res.memory.delete(conversation_id)
    state.conversation_id = None


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
        conversations = res.memory.conversations()
        if conversations:
            st.caption("Conversations")
        for conv in conversations:
            st.button(
                conv.title,
                key=f"conv-{conv.id}",
                type="primary" if conv.id == state.conversation_id else "tertiary",
                use_container_width=True,
                on_click=_open,
                args=(state, conv.id),
            )
        current = next((c for c in conversations if c.id == state.conversation_id), None)
        if current is None:
            return
        with st.expander("This conversation"):
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
    if meta.get("cut"):
        st.warning(
            f"This answer was cut: {escape_markdown(str(meta['cut']))}. What arrived is shown.",
            icon=":material/content_cut:",
        )
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
    if state.conversation_id is not None:
        try:
            res.memory.get(state.conversation_id)
        except ConversationNotFoundError:  # deleted from another tab meanwhile
            state.conversation_id = None
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
