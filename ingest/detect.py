"""Decide what kind of document a file holds, from its bytes first and its name second.

Detection reads one sniff window from the start of the file and nothing more, so a huge or
sparse file is judged as quickly as a small one, and a FIFO or device is refused unopened.
"""

from __future__ import annotations

import codecs
import enum
import os
import stat
import zipfile
from pathlib import Path

from rag.errors import IngestError, ParseLimitError, UnsupportedFileError

_SNIFF_BYTES = 8192
# The PDF spec lets a header follow up to 1 KB of leading junk.
_PDF_JUNK = 1024


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

_HTML_MARKERS = ("<!doctype html", "<html", "<head", "<body")
_OTHER_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"\xd0\xcf\x11\xe0": "a legacy Office (OLE) file; save it as .docx or PDF",
    b"\x7fELF": "an executable",
    b"{\\rtf": "an RTF document; save it as .docx or PDF",
}
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def text_encoding(head: bytes) -> str | None:
    """The encoding a byte-order mark at the start of ``head`` announces, if any."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    return None


def _sniff_text(head: bytes) -> str | None:
    """``head`` decoded as text, or None when it is binary data.

    Text is UTF-16 or UTF-8 announced by a byte-order mark, or bytes without NULs and with
    few control characters (UTF-8 or a legacy 8-bit encoding). A multi-byte character cut by
    the end of the window does not count against it.
    """
    encoding = text_encoding(head)
    if encoding is not None:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        text = decoder.decode(head)
        if "\x00" in text:
            return None
    else:
        if b"\x00" in head:
            return None
        text = head.decode("utf-8", errors="replace")
    if not text:
        return text
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\f\r\x1b")
    return None if controls / len(text) > 0.05 else text


def looks_binary(head: bytes) -> bool:
    """Tell binary data from text by NUL bytes and the share of control characters."""
    return _sniff_text(head) is None


def opaque_binary(path: Path) -> bool:
    """Whether a file starts with binary data that is neither a PDF nor a ZIP container.

    Only a parser can tell what is wrong with such a file; PDF and ZIP content is binary by
    nature. Reads the first sniff window only.

    Raises:
        IngestError: the file cannot be read, or is not a regular file.
    """
    head = _read_head(path)
    if _sniff_text(head) is not None:
        return False
    return not (b"%PDF-" in head[:_PDF_JUNK] or head.startswith(b"PK\x03\x04"))


def _is_utf8(head: bytes) -> bool:
    """Whether ``head`` is valid UTF-8 (a character cut at the window's end allowed)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head)
    except UnicodeDecodeError:
        return False
    return True


def _read_head(path: Path) -> bytes:
    """The first sniff window of a regular file; FIFOs, devices and folders are refused."""
    try:
        # O_NONBLOCK: opening a FIFO swapped in after the check must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise IngestError(path, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a folder" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
            raise UnsupportedFileError(path, f"not a regular file: {what}")
        return os.read(fd, _SNIFF_BYTES)
    except OSError as exc:
        raise IngestError(path, f"cannot read file: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def detect_kind(path: Path, *, max_zip_entries: int | None = None) -> Kind:
    """Return the document kind of ``path``, judged by content.

    The extension only separates Markdown from plain text (both are text) and is
    otherwise overruled by what the bytes say. Only the first 8 KB are read (and, for a
    ZIP, its central directory once its entry count is known to be at most
    ``max_zip_entries``).

    Raises:
        IngestError: the file cannot be read or is empty.
        UnsupportedFileError: the content is of a type ragchat does not read, or
            contradicts the file's extension.
        ParseLimitError: a ZIP container holds more than ``max_zip_entries`` entries.
    """
    head = _read_head(path)
    if not head.strip():
        raise IngestError(path, "empty file")
    suffix_kind = SUPPORTED_SUFFIXES.get(path.suffix.lower())

    if head.startswith(b"%PDF-"):
        return Kind.PDF
    # Leading junk before the header counts only when the file is not text: a Markdown
    # page that quotes "%PDF-1.7" is still Markdown.
    if b"%PDF-" in head[:_PDF_JUNK] and (
        suffix_kind is Kind.PDF
        or _sniff_text(head) is None
        or (suffix_kind is None and not _is_utf8(head))
    ):
        return Kind.PDF
    if head.startswith(b"PK\x03\x04"):
        return _detect_zip(path, max_zip_entries)
    for magic, what in _OTHER_MAGIC.items():
        if head.startswith(magic):
            raise UnsupportedFileError(path, f"unsupported file type: the content is {what}")
    text = _sniff_text(head)
    if text is None:
        expected = f" (not a valid {suffix_kind.value.upper()})" if suffix_kind else ""
        raise UnsupportedFileError(path, f"unsupported file type: binary data{expected}")
    if not text.strip():
        raise IngestError(path, "empty file")

    if suffix_kind in (Kind.PDF, Kind.DOCX):
        raise UnsupportedFileError(
            path, f"not a valid {suffix_kind.value.upper()}: the content is plain text"
        )
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if (
        suffix_kind is Kind.HTML
        or lowered.startswith(_HTML_MARKERS)
        or (suffix_kind is None and lowered.startswith("<?xml") and "<html" in lowered)
    ):
        return Kind.HTML
    if suffix_kind is Kind.MARKDOWN:
        return Kind.MARKDOWN
    return Kind.TEXT


_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22


def zip_entry_count(path: Path) -> int | None:
    """Entries a ZIP declares in its end record, read without parsing its directory.

    None when the end record is missing or declares a ZIP64 count (0xFFFF).
    """
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            tail_len = min(size, _EOCD_SIZE + 0xFFFF)
            fh.seek(size - tail_len)
            tail = fh.read(tail_len)
    except OSError:
        return None
    at = tail.rfind(_EOCD)
    if at < 0 or at + _EOCD_SIZE > len(tail):
        return None
    total = int.from_bytes(tail[at + 10 : at + 12], "little")
    return None if total == 0xFFFF else total


def _detect_zip(path: Path, max_entries: int | None) -> Kind:
    if max_entries is not None:
        declared = zip_entry_count(path)
        if declared is not None and declared > max_entries:
            raise ParseLimitError(
                path,
                "RAG_DOCX_MAX_ENTRIES",
                f"ZIP archive holds {declared:,} entries, more than {max_entries:,}",
            )
    try:
        with zipfile.ZipFile(path) as zf:
            zf.getinfo("word/document.xml")
    except KeyError:
        raise UnsupportedFileError(
            path, "unsupported file type: a ZIP archive that is not a Word (.docx) document"
        ) from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise IngestError(path, f"corrupt ZIP/DOCX container: {exc}") from exc
    return Kind.DOCX
