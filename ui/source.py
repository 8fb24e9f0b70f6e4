"""The source view of a citation: the PDF page as an image, or the document's section.

A PDF page is rendered offline with pypdfium2 and the cited passage is found in the page's
own text layer, so the translucent highlight sits over the words the passage came from.
HTML, Markdown, text and DOCX sources show the chunks under the cited chunk's heading,
the cited one highlighted. If the file is gone, the stored chunks are shown with a note.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import streamlit as st
from langchain_core.documents import Document

from rag.text import split_sentences
from ui.pdf_page import PageRenderError, render_isolated
from ui.render import cited_claims, escape_markdown, passage_markdown

logger = logging.getLogger(__name__)

SECTION_WINDOW = 40  # chunks looked at on each side of the cited one for its section
_CHUNK_ID = re.compile(r"^(?P<doc>[0-9a-f]+)-(?P<seq>\d+)$")


class ChunkSource(Protocol):
    """What the source view needs of the store: chunks by id (``FaissStore`` is one)."""

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Stored chunks by chunk id, in the order asked (unknown ids are skipped)."""
        ...


def section_chunks(store: ChunkSource, chunk_id: str) -> tuple[list[Document], int]:
    """The chunks of the cited chunk's section, in order, and the cited one's position.

    The section is the run of neighbouring chunks of the same document under the same
    heading (at most ``SECTION_WINDOW`` on each side). Unknown ids give ``([], -1)``.
    """
    match = _CHUNK_ID.match(chunk_id)
    if match is None:
        docs = store.get_by_ids([chunk_id])
        return docs, 0 if docs else -1
    prefix, seq = match["doc"], int(match["seq"])
    width = len(match["seq"])
    ids = [
        f"{prefix}-{s:0{width}d}"
        for s in range(max(0, seq - SECTION_WINDOW), seq + SECTION_WINDOW + 1)
    ]
    docs = store.get_by_ids(ids)
    at = next((i for i, d in enumerate(docs) if d.metadata.get("chunk_id") == chunk_id), -1)
    if at < 0:
        return [], -1
    heading = docs[at].metadata.get("heading")
    start = at
    while start > 0 and docs[start - 1].metadata.get("heading") == heading:
        start -= 1
    end = at + 1
    while end < len(docs) and docs[end].metadata.get("heading") == heading:
        end += 1
    return docs[start:end], at - start


def source_title(citation: dict[str, Any], heading: str | None = None) -> str:
    """``original name · page N`` or ``original name · section``, as the dialog's title."""
    name = str(citation.get("title") or Path(str(citation.get("source", ""))).name)
    where = f"page {citation['page']}" if citation.get("page") is not None else heading
    return f"{name} · {where}" if where else name


def show_source(store: ChunkSource, citation: dict[str, Any], answer: str) -> None:
    """Open the source view of one citation in a wide dialog."""
    chunk_id = str(citation.get("chunk_id", ""))
    try:
        chunks, at = section_chunks(store, chunk_id)
    except ValueError:  # the index was closed or replaced meanwhile: show what the card had
        logger.warning("cannot read the section of %s", chunk_id, exc_info=True)
        chunks, at = [], -1
    heading = chunks[at].metadata.get("heading") if at >= 0 else None
    title = escape_markdown(source_title(citation, heading))
    st.dialog(title, width="large")(_source_body)(citation, answer, chunks, at)


def _source_body(citation: dict[str, Any], answer: str, chunks: list[Document], at: int) -> None:
    claims = cited_claims(answer, int(citation.get("n", 0)))
    text = str(citation.get("text", ""))
    path = Path(str(citation.get("source", "")))
    page = citation.get("page")
    if page is not None and path.suffix.lower() == ".pdf":
        pieces = [text, *split_sentences(text)]
        try:
            shot = render_isolated(path, int(page), pieces)
        except FileNotFoundError:
            st.info("The file is no longer on disk; the stored passage is shown instead.")
        except (PageRenderError, OSError) as exc:
            logger.warning("cannot render %s page %s: %s", path, page, exc)
            st.info("This page cannot be shown as an image; the stored passage is shown.")
        else:
            if not shot.rects:
                st.caption("The passage could not be located on the page image.")
            st.image(shot.image, width="stretch")
            with st.expander("Passage text"):
                st.markdown(passage_markdown(text, claims))
            return
    elif not path.is_file():
        st.info("The file is no longer on disk; the stored chunks are shown.")
    if not chunks:
        st.markdown(passage_markdown(text, claims))
        return
    for i, chunk in enumerate(chunks):
        body = chunk.page_content
        with st.container(border=i == at, key=f"source-chunk-{i}"):
            if i == at:
                st.markdown(passage_markdown(body, claims or [body]))
            else:
                st.markdown(passage_markdown(body, []))
