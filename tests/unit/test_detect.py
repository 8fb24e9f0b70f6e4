from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from ingest.detect import Kind, detect_kind
from rag.errors import IngestError, ParseLimitError, UnsupportedFileError


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("notes.txt", "Grüße aus Köln.\n".encode("utf-16"), Kind.TEXT),
        ("notes.txt", b"\xfe\xff" + "Big endian text.\n".encode("utf-16-be"), Kind.TEXT),
        (
            "notes.md",
            "# Titel\n\nText.\n".encode("utf-16-le").join([b"\xff\xfe", b""]),
            Kind.MARKDOWN,
        ),
        ("page", "<!DOCTYPE html><html><body>x</body></html>".encode("utf-16"), Kind.HTML),
        ("page.html", "<html><body>x</body></html>".encode("utf-16"), Kind.HTML),
        ("page", b"\xef\xbb\xbf<html><body>x</body></html>", Kind.HTML),
    ],
)
def test_text_with_a_byte_order_mark_is_text(tmp_path: Path, name: str, content: bytes, kind: Kind):
    path = tmp_path / name
    path.write_bytes(content)
    assert detect_kind(path) is kind


def test_markdown_quoting_a_pdf_header_is_markdown(tmp_path: Path):
    path = tmp_path / "formats.md"
    path.write_text("# PDF\n\nEvery PDF starts with `%PDF-1.7`, then a binary comment.\n")
    assert detect_kind(path) is Kind.MARKDOWN


def test_pdf_header_after_binary_junk_is_a_pdf(tmp_path: Path):
    path = tmp_path / "scan"
    path.write_bytes(b"\x00\x01junk\xff\xfe" * 20 + b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    assert detect_kind(path) is Kind.PDF


def test_sparse_4gib_text_file_is_refused_as_binary(tmp_path: Path):
    path = tmp_path / "huge.txt"
    with path.open("wb") as fh:
        fh.truncate(4 << 30)  # no disk used; reading it whole would take minutes
    with pytest.raises(UnsupportedFileError, match="binary data"):
        detect_kind(path)


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path):
    path = tmp_path / "pipe.txt"
    os.mkfifo(path)
    with pytest.raises(UnsupportedFileError, match="not a regular file"):
        detect_kind(path)


def test_whitespace_only_utf16_file_is_empty(tmp_path: Path):
    path = tmp_path / "blank.txt"
    path.write_bytes("  \n\t\n".encode("utf-16"))
    with pytest.raises(IngestError, match="empty file"):
        detect_kind(path)


def test_zip_with_too_many_entries_is_refused_before_its_directory_is_read(tmp_path: Path):
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("word/document.xml", "<w:document/>")
        for i in range(30):
            zf.writestr(f"media/{i}", "x")
    with pytest.raises(ParseLimitError, match="31 entries") as err:
        detect_kind(path, max_zip_entries=20)
    assert err.value.limit == "RAG_DOCX_MAX_ENTRIES"
    assert detect_kind(path, max_zip_entries=40) is Kind.DOCX
