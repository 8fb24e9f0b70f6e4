"""Page setup: navigation over the chat, documents, batch, access, review and metrics pages."""

from __future__ import annotations

import streamlit as st

from ui import access, batch, chat, documents, metrics, review
from ui.resources import Resources


def pages(res: Resources, *, default: str = "chat") -> list[st.Page]:
    """The pages ``res.caller`` may open: Review for editors and admins, Metrics for admins."""
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
    found = [chat_page, docs_page, batch_page, access_page]
    if res.service.review.can_review(res.caller):  # editors and admins
        found.append(
            st.Page(
                lambda: review.page(res),
                title="Review",
                icon=":material/rate_review:",
                url_path="review",
                default=default == "review",
            )
        )
    if res.caller.is_admin:  # the service refuses the report to anyone else, too
        metrics_page = st.Page(
            lambda: metrics.page(res),
            title="Metrics",
            icon=":material/monitoring:",
            url_path="metrics",
            default=default == "metrics",
        )
        found.append(metrics_page)
    return found


def run(res: Resources, *, default: str = "chat") -> None:
    """Set up navigation and render the selected page."""
    st.navigation(pages(res, default=default)).run()
