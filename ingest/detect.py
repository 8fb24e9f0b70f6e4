"""Decide what kind of document a file holds, from its bytes first and its name second."""

from __future__ import annotations

import enum
import zipfile
from pathlib import Path

from rag.errors import IngestError, UnsupportedFileError

_SNIFF_BYTES = 8192


class Kind(enum.StrEnum):
    """Document formats ragchat reads."""

    PDF = "pdf"
    DOCX = "docx"
    HTML = "html"
    MARKDOWN = "markdown"
    TEXT = "text"


SUPPORTED_SUFFIXES: dict[str, Kind] = {
    ".pdf": Kind.PDF,
    ".docx": Kind.DOCX,
    ".html": Kind.HTML,
    ".htm": Kind.HTML,
    ".xhtml": Kind.HTML,
    ".md": Kind.MARKDOWN,
    ".markdown": Kind.MARKDOWN,
    ".txt": Kind.TEXT,
    ".text": Kind.TEXT,
}

_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")
_OTHER_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"\xd0\xcf\x11\xe0": "a legacy Office (OLE) file; save it as .docx or PDF",
    b"\x7fELF": "an executable",
    b"{\\rtf": "an RTF document; save it as .docx or PDF",
}


def looks_binary(head: bytes) -> bool:
    """Tell binary data from text by NUL bytes and the share of control characters."""
    if not head:
        return False
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls / len(head) > 0.05


def detect_kind(path: Path) -> Kind:
    """Return the document kind of ``path``, judged by content.

    The extension only separates Markdown from plain text (both are text) and is
    otherwise overruled by what the bytes say.

    Raises:
        IngestError: the file cannot be read or is empty.
        UnsupportedFileError: the content is of a type ragchat does not read, or
            contradicts the file's extension.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise IngestError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if not head.strip():
        raise IngestError(path, "empty file")
    suffix_kind = SUPPORTED_SUFFIXES.get(path.suffix.lower())

    if b"%PDF-" in head[:1024]:
        return Kind.PDF
    if head.startswith(b"PK\x03\x04"):
        return _detect_zip(path)
    for magic, what in _OTHER_MAGIC.items():
        if head.startswith(magic):
            raise UnsupportedFileError(path, f"unsupported file type: the content is {what}")
    if looks_binary(head):
        expected = f" (not a valid {suffix_kind.value.upper()})" if suffix_kind else ""
        raise UnsupportedFileError(path, f"unsupported file type: binary data{expected}")

    if suffix_kind in (Kind.PDF, Kind.DOCX):
        raise UnsupportedFileError(
            path, f"not a valid {suffix_kind.value.upper()}: the content is plain text"
        )
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if (
        suffix_kind is Kind.HTML
        or lowered.startswith(_HTML_MARKERS)
        or (suffix_kind is None and lowered.startswith(b"<?xml") and b"<html" in lowered)
    ):
        return Kind.HTML
    if suffix_kind is Kind.MARKDOWN:
        return Kind.MARKDOWN
    return Kind.TEXT


def _detect_zip(path: Path) -> Kind:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise IngestError(path, f"corrupt ZIP/DOCX container: {exc}") from exc
    if "word/document.xml" in names:
        return Kind.DOCX
    raise UnsupportedFileError(
        path, "unsupported file type: a ZIP archive that is not a Word (.docx) document"
    )
