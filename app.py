"""ragchat web app entry point (the chat and documents pages arrive with the web app issue)."""

from __future__ import annotations

import streamlit as st

from rag.components import build_store
from rag.errors import RagError
from rag.settings import Settings


@st.cache_resource
def _settings() -> Settings:
    return Settings()


def _status_page() -> None:
    st.title("ragchat")
    settings = _settings()
    try:
        docs = build_store(settings).documents()
    except RagError as exc:
        st.error(str(exc))
        return
    if not docs:
        st.info(
            f"No documents indexed in {settings.resolved_index_dir} yet. "
            "Add some with `ragchat ingest PATH`."
        )
        return
    st.write(f"{len(docs)} documents indexed in `{settings.resolved_index_dir}`:")
    st.dataframe(
        [
            {"document": ", ".join(d.sources), "pages": d.pages, "chunks": d.chunks,
             "added": d.ingested_at}
            for d in docs
        ],
        hide_index=True,
    )  # fmt: skip


st.navigation([st.Page(_status_page, title="Documents", icon=":material/description:")]).run()
