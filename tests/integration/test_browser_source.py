"""The source view in Debian's Chromium: a citation's "Source" opens the highlighted PDF page."""

from __future__ import annotations

import textwrap
from pathlib import Path

from playwright.sync_api import Browser, expect

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline
from rag.store.faiss import FaissStore
from tests.docgen import make_pdf
from tests.fakes import CountingEmbeddings, WordTokenizer
from tests.integration.browser import ARTIFACTS, ROOT, streamlit_app

CITED = "The Skerryvore keeper recorded wind speeds every four hours in a logbook."

# The chat page's citation card over a real index, without a model: the card and the
# source view are what is under test here (test_browser.py drives the whole app).
SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import streamlit as st

    from rag.store.faiss import FaissStore
    from tests.fakes import CountingEmbeddings
    from ui.render import citation_card
    from ui.source import show_source

    st.set_page_config(layout="wide")
    store = FaissStore(
        Path(sys.argv[1]), CountingEmbeddings(size=32), model_id="fake", dimension=32
    )
    chunk = next(c for c in store.all_chunks() if "Skerryvore" in c.text)
    citation = {
        "n": 1, "source": chunk.source, "title": chunk.name, "page": chunk.page,
        "chunk_id": chunk.chunk_id, "text": chunk.text,
    }
    answer = "The keeper recorded wind speeds every four hours [1]."
    st.markdown(answer)
    citation_card(
        citation, answer, key="citation-1-1", on_source=lambda c: show_source(store, c, answer)
    )
    """
)


def test_citation_source_opens_the_highlighted_pdf_page(browser: Browser, tmp_path: Path) -> None:
    pdf = make_pdf(
        tmp_path / "5d41402abc4b2a76.pdf",  # stored under a generated name, like an upload
        ["Chapter one explains the history of lighthouses.", f"Keepers.\n{CITED}"],
    )
    embeddings = CountingEmbeddings(size=32)
    store = FaissStore(tmp_path / "index", embeddings, model_id="fake", dimension=32)
    chunker = TokenChunker(WordTokenizer(window=64), size=40, overlap=0)
    IngestPipeline(store, embeddings, chunker).run([pdf], titles={pdf: "Lighthouses.pdf"})
    script = tmp_path / "source_app.py"
    script.write_text(SCRIPT)
    with streamlit_app(
        tmp_path, script=script, args=[str(tmp_path / "index")], PYTHONPATH=str(ROOT)
    ) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        card = page.locator(".st-key-citation-1-1")
        expect(card).to_contain_text("Lighthouses.pdf · page 2", timeout=60_000)
        expect(card).to_contain_text(CITED)  # the passage as stored, no injected spaces
        card.get_by_role("button", name="Source").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("Lighthouses.pdf · page 2", timeout=30_000)
        image = dialog.locator("img").first
        expect(image).to_be_visible(timeout=30_000)
        box = image.bounding_box()
        assert box is not None and box["width"] > 500  # a wide dialog, a readable page
        assert "5d41402abc4b2a76" not in dialog.inner_text()  # the original name only
        assert "chunk" not in dialog.inner_text().lower()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "source-view.png"))
        page.close()
