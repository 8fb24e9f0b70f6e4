from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ingest.detect import Kind, detect_kind
from ingest.loaders import iter_files, load
from rag.errors import IngestError, UnsupportedFileError
from tests.docgen import make_docx, make_html, make_markdown, make_pdf


def test_pdf_keeps_one_based_pages_and_outline_headings(tmp_path: Path):
    pdf = make_pdf(
        tmp_path / "guide.pdf",
        ["Alpha page text.", "Beta page text.", "Gamma page text."],
        headings=["Intro", "Setup", "Usage"],
    )
    doc = load(pdf)
    assert doc.kind is Kind.PDF and doc.pages == 3
    assert [(b.page, b.heading) for b in doc.blocks] == [(1, "Intro"), (2, "Setup"), (3, "Usage")]
    assert "Beta page text." in doc.blocks[1].text


def test_encrypted_pdf_is_reported(tmp_path: Path):
    pdf = make_pdf(tmp_path / "locked.pdf", ["Secret"], user_password="pw")
    with pytest.raises(IngestError, match="encrypted"):
        load(pdf)


def test_truncated_pdf_is_reported_as_corrupt(tmp_path: Path):
    good = make_pdf(tmp_path / "good.pdf", ["Some text on a page."])
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(IngestError) as err:
        load(bad)
    assert err.value.path == str(bad)


def test_binary_renamed_pdf_is_unsupported(tmp_path: Path):
    fake = tmp_path / "photo.pdf"
    fake.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(UnsupportedFileError, match="not a valid PDF"):
        detect_kind(fake)


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("notes.txt", b"%PDF-1.4 looks like pdf", Kind.PDF),
        ("page", b"<!DOCTYPE html><html><body>x</body></html>", Kind.HTML),
        ("readme.md", b"# Title\n\ntext", Kind.MARKDOWN),
        ("readme.txt", b"# Title\n\ntext", Kind.TEXT),
        ("noext", b"plain words", Kind.TEXT),
    ],
)
def test_kind_is_chosen_by_content(tmp_path: Path, name: str, content: bytes, kind: Kind):
    path = tmp_path / name
    path.write_bytes(content)
    assert detect_kind(path) is kind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "PNG image"),
        (b"", "empty file"),
        (b"just text", "not a valid DOCX"),
    ],
)
def test_unsupported_content_is_named(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "file.docx"
    path.write_bytes(content)
    with pytest.raises(IngestError, match=message):
        detect_kind(path)


def test_zip_that_is_not_docx_is_unsupported(tmp_path: Path):
    path = tmp_path / "archive.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(UnsupportedFileError, match="ZIP archive"):
        detect_kind(path)


def test_docx_sections_follow_heading_styles(tmp_path: Path):
    path = make_docx(
        tmp_path / "report.docx",
        [("Budget", "The budget is 40 euros."), ("Timeline", "Ends in May.")],
    )
    doc = load(path)
    assert doc.kind is Kind.DOCX
    headings = {b.heading: b.text for b in doc.blocks}
    assert "The budget is 40 euros." in headings["Budget"]
    assert "Ends in May." in headings["Timeline"]


def test_html_keeps_visible_text_and_headings_only(tmp_path: Path):
    path = make_html(tmp_path / "page.html", [("Install", "Run the installer twice.")])
    doc = load(path)
    text = "\n".join(b.text for b in doc.blocks)
    assert "Run the installer twice." in text
    for hidden in ("trackingScriptText", "color: red", "Navigation link", "navheader", "Footer"):
        assert hidden not in text
    assert any(b.heading == "Install" and "installer" in b.text for b in doc.blocks)


def test_html_inline_markup_does_not_break_sentences(tmp_path: Path):
    path = tmp_path / "inline.html"
    path.write_text(
        "<html><body><p>Call <code>foo()</code> and <b>then</b> stop.</p></body></html>"
    )
    assert load(path).blocks[0].text == "Call foo() and then stop."


def test_markdown_headings_and_offsets(tmp_path: Path):
    path = make_markdown(tmp_path / "a.md", [("One", "First body."), ("Two", "Second body.")])
    doc = load(path)
    assert [b.heading for b in doc.blocks] == ["One", "Two"]
    assert doc.blocks[1].offset > doc.blocks[0].offset


def test_markdown_code_fence_hash_is_not_a_heading(tmp_path: Path):
    path = tmp_path / "code.md"
    path.write_text("# Real\n\n```\n# comment in code\n```\n\nSetext\n======\n\nbody\n")
    assert [b.heading for b in load(path).blocks] == ["Real", "Setext"]


def test_whitespace_only_text_file_has_no_text(tmp_path: Path):
    path = tmp_path / "blank.txt"
    path.write_text("   \n\n  \t\n")
    with pytest.raises(IngestError, match="empty file"):
        load(path)


def test_iter_files_walks_folders_and_skips_hidden_and_unknown(tmp_path: Path):
    (tmp_path / "a.md").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.PDF").write_bytes(b"%PDF-")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.md").write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p, _ in iter_files([tmp_path])]
    assert found == ["a.md", "sub/b.PDF"]


def test_iter_files_missing_path_is_an_error(tmp_path: Path):
    with pytest.raises(IngestError, match="no such file"):
        list(iter_files([tmp_path / "missing"]))
