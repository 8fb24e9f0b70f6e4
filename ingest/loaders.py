"""Turn a file into text blocks that know their page, section heading and character offset.

A block never spans two PDF pages or two sections, so neither can a chunk cut from it.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.detect import Kind, detect_kind
from rag.errors import IngestError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Block:
    """A run of text from one page and one section of a document."""

    text: str
    page: int | None = None
    heading: str | None = None
    offset: int = 0


@dataclass
class LoadedDocument:
    """What a loader read from one file."""

    path: Path
    kind: Kind
    blocks: list[Block] = field(default_factory=list)
    pages: int | None = None


_WS = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n+")


def _clean(text: str) -> str:
    lines = (_WS.sub(" ", line).strip() for line in text.splitlines())
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def load(path: Path) -> LoadedDocument:
    """Read ``path`` with the loader its content calls for.

    Raises:
        IngestError: the file is unreadable, corrupt, encrypted, empty or unsupported.
    """
    kind = detect_kind(path)
    doc = _LOADERS[kind](path)
    if not any(b.text.strip() for b in doc.blocks):
        reason = (
            "no extractable text (a scanned PDF? OCR is not supported)"
            if kind is Kind.PDF
            else "no text found"
        )
        raise IngestError(path, reason)
    return doc


# --- PDF ---------------------------------------------------------------------------------


def load_pdf(path: Path) -> LoadedDocument:
    """One block per page with its 1-based page number; headings from the outline."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted:
            reader.decrypt("")  # many PDFs are encrypted with an empty user password
        page_texts = [_clean(page.extract_text() or "") for page in reader.pages]
    except FileNotDecryptedError as exc:
        raise IngestError(path, "encrypted PDF: it needs a password") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise IngestError(path, f"corrupt PDF: {exc}") from exc
    headings = _pdf_page_headings(reader, len(page_texts))
    blocks = [
        Block(text=text, page=i + 1, heading=headings.get(i + 1), offset=0)
        for i, text in enumerate(page_texts)
        if text
    ]
    return LoadedDocument(path=path, kind=Kind.PDF, blocks=blocks, pages=len(page_texts))


def _pdf_page_headings(reader: Any, n_pages: int) -> dict[int, str]:
    """Map each page to the last outline entry that starts on or before it."""
    starts: list[tuple[int, str]] = []

    def walk(items: list[Any]) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except (KeyError, ValueError, TypeError, AttributeError):
                continue
            if page is not None and page >= 0 and getattr(item, "title", None):
                starts.append((page + 1, str(item.title).strip()))

    try:
        walk(reader.outline)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        logger.debug("PDF outline unreadable: %s", exc)
        return {}
    if not starts:
        return {}
    starts.sort(key=lambda s: s[0])
    result: dict[int, str] = {}
    idx, current = 0, None
    for page in range(1, n_pages + 1):
        while idx < len(starts) and starts[idx][0] <= page:
            current = starts[idx][1]
            idx += 1
        if current:
            result[page] = current
    return result


# --- DOCX --------------------------------------------------------------------------------


def load_docx(path: Path) -> LoadedDocument:
    """Paragraphs and tables in body order; Heading/Title styles start new sections."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
        body = document.element.body
        parts: list[tuple[str, bool]] = []
        for child in body.iterchildren():
            tag = child.tag.rsplit("}", 1)[-1]
            if tag == "p":
                para = Paragraph(child, document)
                style = (para.style.name if para.style is not None else "") or ""
                is_heading = style.startswith(("Heading", "Title"))
                parts.append((para.text, is_heading))
            elif tag == "tbl":
                table = Table(child, document)
                rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
                parts.append(("\n".join(rows), False))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as exc:
        raise IngestError(path, f"corrupt DOCX: {exc}") from exc
    return LoadedDocument(path=path, kind=Kind.DOCX, blocks=_sections(parts))


def _sections(parts: list[tuple[str, bool]]) -> list[Block]:
    """Group (text, is_heading) parts into blocks under their nearest heading."""
    blocks: list[Block] = []
    heading: str | None = None
    buf: list[str] = []
    offset = 0
    start = 0

    def flush() -> None:
        text = _clean("\n".join(buf))
        if text:
            blocks.append(Block(text=text, heading=heading, offset=start))

    for text, is_heading in parts:
        if is_heading and text.strip():
            flush()
            buf = [text]
            heading = _clean(text)
            start = offset
        else:
            if not buf:
                start = offset
            buf.append(text)
        offset += len(text) + 1
    flush()
    return blocks


# --- Markdown / text ---------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


_SETEXT = re.compile(r" {0,3}(=+|-+)\s*")


def load_markdown(path: Path) -> LoadedDocument:
    """Split at ATX and setext headings (outside code fences); front matter is dropped."""
    text = _read_text(path)
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            text = text[end + 4 :]
    lines = text.splitlines()
    parts: list[tuple[str, bool]] = []
    in_fence = False
    skip_next = False
    for i, line in enumerate(lines):
        if skip_next:
            skip_next = False
            continue
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            atx = _ATX.match(line)
            if atx:
                parts.append((atx.group(2), True))
                continue
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if line.strip() and _SETEXT.fullmatch(nxt) and not _SETEXT.fullmatch(line):
                parts.append((line.strip(), True))
                skip_next = True
                continue
        parts.append((line, False))
    return LoadedDocument(path=path, kind=Kind.MARKDOWN, blocks=_sections(parts))


def load_text(path: Path) -> LoadedDocument:
    """Plain text is one block."""
    text = _clean(_read_text(path))
    return LoadedDocument(path=path, kind=Kind.TEXT, blocks=[Block(text=text)] if text else [])


# --- HTML --------------------------------------------------------------------------------

_DROP_TAGS = {
    "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object",
    "embed", "nav", "form", "button", "select", "head", "aside", "footer",
}  # fmt: skip
_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "header", "li", "ul", "ol", "dl", "dt",
    "dd", "table", "tr", "pre", "blockquote", "br", "hr", "figure", "figcaption",
    "caption", "address", "details", "summary", "td", "th",
}  # fmt: skip
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_NAV_CLASS = re.compile(r"^(nav.*|.*-nav|breadcrumbs?|sidebar|menu|toc|skip-?link.*)$", re.I)
_NAV_ROLES = {"navigation", "banner", "contentinfo", "search", "menu"}


def _is_navigation(tag: Any) -> bool:
    if (tag.get("role") or "").lower() in _NAV_ROLES:
        return True
    classes = tag.get("class") or []
    return any(_NAV_CLASS.match(c) for c in classes) or bool(
        tag.get("id") and _NAV_CLASS.match(tag.get("id"))
    )


def load_html(path: Path) -> LoadedDocument:
    """Visible text only: scripts, styles and navigation dropped, headings kept as sections."""
    from bs4 import BeautifulSoup, Comment, NavigableString, Tag, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        # XHTML pages (like many generated manuals) parse fine as HTML.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(_read_text(path), "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    root = soup.body or soup
    parts: list[tuple[str, bool]] = []
    buf: list[str] = []

    def end_line() -> None:
        if buf:
            parts.append(("".join(buf), False))
            buf.clear()

    def walk(node: Any) -> None:
        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                buf.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name.lower()
            if name in _DROP_TAGS or child.get("hidden") is not None or _is_navigation(child):
                continue
            if name in _HEADINGS:
                end_line()
                parts.append((child.get_text(" ", strip=True), True))
                continue
            block = name in _BLOCK_TAGS
            if block:
                end_line()
            if name in ("td", "th"):
                buf.append(" ")
            walk(child)
            if block:
                end_line()

    walk(root)
    end_line()
    blocks = _sections(parts)
    if title:
        blocks = [b if b.heading else Block(b.text, b.page, title, b.offset) for b in blocks]
    return LoadedDocument(path=path, kind=Kind.HTML, blocks=blocks)


_LOADERS: dict[Kind, Callable[[Path], LoadedDocument]] = {
    Kind.PDF: load_pdf,
    Kind.DOCX: load_docx,
    Kind.HTML: load_html,
    Kind.MARKDOWN: load_markdown,
    Kind.TEXT: load_text,
}


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, bool]]:
    """Yield (file, explicit) for files given directly and supported files found in folders.

    Hidden files and folders are skipped when walking a folder; a file named directly is
    always yielded, so that its content decides whether it is supported.

    Raises:
        IngestError: a path does not exist.
    """
    from ingest.detect import SUPPORTED_SUFFIXES

    for path in paths:
        if path.is_file():
            yield path, True
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if child.is_file() and child.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield child, False
        else:
            raise IngestError(path, "no such file or folder")
