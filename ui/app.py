"""Page setup: navigation over the chat, documents, batch, access and review pages."""

from __future__ import annotations

import streamlit as st

from ui import access, batch, chat, documents, review
from ui.resources import Resources


def run(res: Resources, *, default: str = "chat") -> None:
    """Set up navigation and render the selected page."""
    docs_page = st.Page(
        lambda: documents.page(res),
        title="Documents",
        icon=":material/description:",
        url_path="documents",
        default=default == "documents",
    )
    chat_page = st.Page(
        lambda: chat.page(res, docs_page),
        title="Chat",
        icon=":material/chat:",
        url_path="chat",
        default=default == "chat",
    )
    batch_page = st.Page(
        lambda: batch.page(res),
        title="Batch",
        icon=":material/checklist:",
        url_path="batch",
        default=default == "batch",
    )
    access_page = st.Page(
        lambda: access.page(res),
        title="Access",
        icon=":material/admin_panel_settings:",
        url_path="access",
        default=default == "access",
    )
    pages = [chat_page, docs_page, batch_page, access_page]
    if res.service.review.can_review(res.caller):  # editors and admins
        pages.append(
            st.Page(
                lambda: review.page(res),
                title="Review",
                icon=":material/rate_review:",
                url_path="review",
                default=default == "review",
            )
        )
    st.navigation(pages).run()
