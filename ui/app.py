"""Page setup: navigation over the chat, documents, batch, access, review and metrics pages."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from ui import access, batch, chat, documents, metrics, review
from ui.resources import Resources


def pages(res: Resources, *, default: str = "chat") -> list[st.Page]:
    """The pages ``res.caller`` may open: Review for editors and admins, Metrics for admins."""

    def page(render: Callable[[], None], title: str, icon: str, path: str) -> st.Page:
        return st.Page(
            render, title=title, icon=f":material/{icon}:", url_path=path, default=default == path
        )

    docs_page = page(lambda: documents.page(res), "Documents", "description", "documents")
    found = [
        page(lambda: chat.page(res, docs_page), "Chat", "chat", "chat"),
        docs_page,
        page(lambda: batch.page(res), "Batch", "checklist", "batch"),
        page(lambda: access.page(res), "Access", "admin_panel_settings", "access"),
    ]
    if res.service.review.can_review(res.caller):  # editors and admins
        found.append(page(lambda: review.page(res), "Review", "rate_review", "review"))
    if res.caller.is_admin:  # the service refuses the report to anyone else, too
        found.append(page(lambda: metrics.page(res), "Metrics", "monitoring", "metrics"))
    return found


def run(res: Resources, *, default: str = "chat") -> None:
    """Set up navigation and render the selected page."""
    st.navigation(pages(res, default=default)).run()
