"""The source view: the cited PDF page with the passage highlighted, or the cited section."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageStat
from streamlit.testing.v1 import AppTest

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline
from rag.store.faiss import FaissStore
from tests.docgen import make_markdown, make_pdf
from tests.fakes import CountingEmbeddings, WordTokenizer
from ui.pdf_page import PageRenderError, render_isolated, render_pdf_page
from ui.source import section_chunks, source_title

CITED = "The default value of max_connections is 100 connections per server."
OTHER = "Backups are written nightly to the archive directory."


def word_box(pdf_path: Path, page: int, word: str, scale: float) -> tuple[float, ...]:
    """The pixel box of a word on the page, from pypdfium2's own character boxes."""
    pdf = pdfium.PdfDocument(pdf_path)
    textpage = pdf[page - 1].get_textpage()
    height = pdf[page - 1].get_height()
    first, count = textpage.search(word, match_case=True).get_next()
    boxes = [textpage.get_charbox(i) for i in range(first, first + count)]
    pdf.close()
    left, right = min(b[0] for b in boxes), max(b[2] for b in boxes)
    bottom, top = min(b[1] for b in boxes), max(b[3] for b in boxes)
    return left * scale, (height - top) * scale, right * scale, (height - bottom) * scale


def covered(box: tuple[float, ...], rects: list[tuple[float, float, float, float]]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(r[0] <= cx <= r[2] and r[1] <= cy <= r[3] for r in rects)


def tint(image: Image.Image, box: tuple[float, ...]) -> float:
    """How much more red than blue the area is: 0 for black on white, high under yellow."""
    red, _, blue = ImageStat.Stat(image.crop(tuple(int(v) for v in box))).mean
    return red - blue


def test_pdf_page_is_rendered_with_the_cited_passage_highlighted(tmp_path):
    pdf = make_pdf(
        tmp_path / "manual.pdf",
        ["Cover page text.", f"{OTHER}\n{CITED}\nLogs rotate weekly."],
    )
    shot = render_isolated(pdf, 2, [CITED])  # through the limited child process
    assert shot.image.size[0] > 500 and shot.rects
    for word in ("default", "max_connections", "server"):
        box = word_box(pdf, 2, word, shot.scale)
        assert covered(box, shot.rects), word
        assert tint(shot.image, box) > 40, word  # the translucent highlight is drawn
    for word in ("Backups", "weekly"):
        box = word_box(pdf, 2, word, shot.scale)
        assert not covered(box, shot.rects) and tint(shot.image, box) < 5, word


def test_a_passage_that_wraps_over_lines_is_highlighted_on_every_line(tmp_path):
    long = " ".join(["The parameter max_connections limits concurrent sessions."] * 4)
    pdf = make_pdf(tmp_path / "wrap.pdf", [long])
    shot = render_pdf_page(pdf, 1, [long.replace(" ", "\n", 3)])
    assert len(shot.rects) >= 2  # one rectangle per line of the page


def test_a_missing_page_or_file_is_an_error_not_a_crash(tmp_path):
    pdf = make_pdf(tmp_path / "one.pdf", ["Only page."])
    with pytest.raises(PageRenderError, match="no page 3"):
        render_isolated(pdf, 3, ["Only page."])
    with pytest.raises(FileNotFoundError):
        render_isolated(tmp_path / "gone.pdf", 1, ["x"])
    (tmp_path / "junk.pdf").write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    with pytest.raises(PageRenderError, match="could not be rendered"):
        render_isolated(tmp_path / "junk.pdf", 1, ["x"])


def test_a_page_that_needs_too_much_memory_costs_the_picture_not_the_server(tmp_path):
    pdf = make_pdf(tmp_path / "manual.pdf", [CITED])
    # The same page in a child allowed too little memory for pdfium: one clear error here,
    # and this process (the web server's) goes on; a generous limit renders it.
    with pytest.raises(PageRenderError):
        render_isolated(pdf, 1, [CITED], max_mb=48)
    assert render_isolated(pdf, 1, [CITED]).rects


def index(tmp_path: Path, path: Path, title: str) -> FaissStore:
    embeddings = CountingEmbeddings(size=32)
    store = FaissStore(tmp_path / "index", embeddings, model_id="fake", dimension=32)
    chunker = TokenChunker(WordTokenizer(window=64), size=30, overlap=0)
    IngestPipeline(store, embeddings, chunker, batch_size=8).run([path], titles={path: title})
    return store


SECTIONS = [
    ("Installation", "Install the package with the usual tool. " * 4),
    ("Connections", "Connections are limited. " * 8 + CITED + " " + "Raise it carefully. " * 8),
    ("Backups", OTHER * 3),
]


def markdown_store(tmp_path: Path) -> tuple[FaissStore, Path]:
    upload = make_markdown(tmp_path / "3f9c0a7e.md", SECTIONS)  # a generated upload name
    return index(tmp_path, upload, "Server Guide.md"), upload


def citation_of(store: FaissStore, text: str) -> dict:
    (chunk,) = [c for c in store.all_chunks() if text in c.text]
    return {
        "n": 1, "source": chunk.source, "title": chunk.name, "page": chunk.page,
        "chunk_id": chunk.chunk_id, "text": chunk.text,
    }  # fmt: skip


def test_markdown_section_holds_the_chunks_under_the_cited_heading(tmp_path):
    store, _ = markdown_store(tmp_path)
    citation = citation_of(store, "max_connections")
    chunks, at = section_chunks(store, citation["chunk_id"])
    assert len(chunks) >= 2  # the section spans several chunks
    assert {c.metadata["heading"] for c in chunks} == {"Connections"}
    assert "max_connections" in chunks[at].page_content
    joined = " ".join(c.page_content for c in chunks)
    assert "Install the package" not in joined and "Backups" not in joined
    assert source_title(citation, "Connections") == "Server Guide.md · Connections"


def source_app(tmp_path: Path, citation: dict) -> AppTest:
    def script(folder: str, citation: dict) -> None:
        from pathlib import Path

        from rag.store.faiss import FaissStore
        from tests.fakes import CountingEmbeddings
        from ui.source import show_source

        store = FaissStore(
            Path(folder) / "index", CountingEmbeddings(size=32), model_id="fake", dimension=32
        )
        show_source(store, citation, "The default of max_connections is 100 [1].")

    at = AppTest.from_function(script, kwargs={"folder": str(tmp_path), "citation": citation})
    return at.run()


def test_source_view_of_markdown_shows_the_section_with_the_cited_sentence(tmp_path):
    store, _ = markdown_store(tmp_path)
    at = source_app(tmp_path, citation_of(store, "max_connections"))
    assert not at.exception
    text = "\n".join(m.value.replace("\\", "").replace("&nbsp;", " ") for m in at.markdown)
    assert "Connections are limited." in text and "Raise it carefully." in text
    assert f":orange-background[{CITED}]" in text
    assert "Install the package" not in text
    assert "chunk" not in text.lower()  # no internal chunk ids


def test_source_view_of_a_deleted_file_shows_the_stored_chunks_with_a_note(tmp_path):
    store, upload = markdown_store(tmp_path)
    citation = citation_of(store, "max_connections")
    upload.unlink()
    at = source_app(tmp_path, citation)
    assert not at.exception
    assert "no longer on disk" in at.info[0].value
    assert any("max_connections" in m.value.replace("\\", "") for m in at.markdown)


def test_source_view_of_a_pdf_shows_the_page_image(tmp_path):
    pdf = make_pdf(tmp_path / "a1b2.pdf", ["Cover.", f"{OTHER}\n{CITED}"])
    store = index(tmp_path, pdf, "Admin Manual.pdf")
    citation = citation_of(store, "max_connections")
    assert citation["page"] == 2
    at = source_app(tmp_path, citation)
    assert not at.exception
    assert len(at.get("image")) == 1
    assert source_title(citation) == "Admin Manual.pdf · page 2"


def test_chat_citation_cards_open_the_source_view(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGCHAT_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("RAGCHAT_TEST_MODE", "ok")
    monkeypatch.setenv("RAGCHAT_TEST_PAGE", "chat")
    root = Path(__file__).resolve().parents[2]
    at = AppTest.from_file(str(root / "tests" / "ui_app.py"), default_timeout=30).run()
    at.chat_input[0].set_value("What is the default of max_connections?").run()
    sources = [b for b in at.button if b.label == "Source"]
    assert len(sources) == 2  # one per citation card
    sources[0].click().run()
    assert not at.exception
    (dialog,) = [b for b in at.get("event")[0].children.values() if b.type == "dialog"]
    shown = "\n".join(m.value.replace("\\", "") for m in dialog.get("markdown"))
    assert "max_connections" in shown
