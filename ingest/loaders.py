"""Turn a file into text blocks that know their page, section heading and character offset.

A block never spans two PDF pages or two sections, so neither can a chunk cut from it.
Every format is read as a stream: PDF page by page, DOCX paragraph by paragraph, HTML with
a SAX-like parser (no tree, no recursion), Markdown and text in bounded pieces. So memory
stays flat for large files, and a block is never longer than ``MAX_BLOCK_CHARS``.

What these loaders catch: every failure a parser reports for a damaged or hostile file
(pypdf's errors, lxml's, zipfile's and zlib's, ``RecursionError``) becomes an
``IngestError`` naming the file; output limits (pages, characters, DOCX archive shape) are
checked here too. What they cannot stop (a hang, runaway memory, a crash in C code) is the
sandbox's job: ``ingest.sandbox`` runs these loaders in a worker process with a time and
memory limit.
"""

from __future__ import annotations

import codecs
import logging
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ingest.detect import Kind, detect_kind, text_encoding
from rag.errors import IngestError, ParseLimitError

if TYPE_CHECKING:
    from ingest.sandbox import ParseLimits

logger = logging.getLogger(__name__)

# Longest block a loader yields; longer text (a huge page, section or line) is split.
MAX_BLOCK_CHARS = 256 * 1024
_READ_BYTES = 64 * 1024
_MB = 1024 * 1024


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


@dataclass
class LoadedStream:
    """A document being read: its kind at once, its blocks one at a time as they are parsed.

    This is what the ingestion pipeline consumes, so a large file never has to be held in
    memory whole. ``pages`` is known when the stream opens (PDF) or stays None. Whoever
    stops reading early calls ``close()``, which stops the parser.
    """

    path: Path
    kind: Kind
    blocks: Iterator[Block]
    pages: int | None = None

    def close(self) -> None:
        """Stop parsing (releases the parser and its worker, if any)."""
        close = getattr(self.blocks, "close", None)
        if close is not None:
            close()


# Opens a file as a stream of blocks (in process, or in a sandboxed worker).
Opener = Callable[[Path], LoadedStream]


_WS = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n+")
# NULs and lone surrogates (from PDF text or broken encodings) cannot be tokenized (a
# TypeError in a fast tokenizer) or stored.
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def replace_unsafe(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by one U+FFFD (offsets unchanged)."""
    return _UNSAFE.sub("\ufffd", text)


def no_text_reason(kind: Kind) -> str:
    """Why a file of ``kind`` that yielded no text at all is refused, for the user."""
    if kind is Kind.PDF:
        return "no extractable text (a scanned PDF? OCR is not supported)"
    return "no text found"


def _clean(text: str) -> str:
    lines = (_WS.sub(" ", line).strip() for line in text.splitlines())
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _default_limits() -> ParseLimits:
    from ingest.sandbox import ParseLimits

    return ParseLimits()


def open_stream(path: Path, limits: ParseLimits | None = None) -> LoadedStream:
    """Open ``path`` in this process as a stream of blocks, within ``limits``.

    The time and memory limits need a separate process (``ingest.sandbox``); every other
    limit is applied here.

    Raises:
        IngestError: the file is unreadable, corrupt, encrypted or unsupported, or
            breaks a limit (``ParseLimitError``). Iterating the blocks may raise it too,
            e.g. when a limit is reached on page 900 or the file holds no text.
    """
    limits = limits or _default_limits()
    kind = detect_kind(path, max_zip_entries=limits.docx_max_entries)
    blocks, pages = _OPENERS[kind](path, limits)
    return LoadedStream(
        path=path, kind=kind, blocks=_guarded(path, kind, blocks, limits), pages=pages
    )


def load(path: Path, limits: ParseLimits | None = None) -> LoadedDocument:
    """Read ``path`` whole, in process, with the loader its content calls for.

    Raises:
        IngestError: the file is unreadable, corrupt, encrypted, empty or unsupported.
    """
    stream = open_stream(path, limits)
    try:
        blocks = list(stream.blocks)
    finally:
        stream.close()
    return LoadedDocument(path=path, kind=stream.kind, blocks=blocks, pages=stream.pages)


def _guarded(
    path: Path, kind: Kind, blocks: Iterator[Block], limits: ParseLimits
) -> Iterator[Block]:
    """Blocks made safe (no NULs, no lone surrogates, bounded length) within the char limit."""
    total = 0
    try:
        for block in blocks:
            text = replace_unsafe(block.text)
            if not text.strip():
                continue
            total += len(text)
            if total > limits.max_chars:
                raise ParseLimitError(
                    path,
                    "RAG_PARSE_MAX_CHARS",
                    f"more than {limits.max_chars:,} characters of text",
                )
            heading = replace_unsafe(block.heading) if block.heading else block.heading
            for start, piece in _pieces(text, MAX_BLOCK_CHARS):
                yield Block(piece, block.page, heading, block.offset + start)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
    if not total:
        raise IngestError(path, no_text_reason(kind))


def cut_at(text: str, limit: int) -> int:
    """Where to end a piece of at most ``limit`` characters.

    At a blank line, else a line end, else a space, else exactly at ``limit``.
    """
    if len(text) <= limit:
        return len(text)
    floor = limit // 2
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, floor, limit)
        if at > 0:
            return at + len(sep)
    return limit


def _pieces(text: str, limit: int) -> Iterator[tuple[int, str]]:
    """(offset, piece) pairs covering ``text`` in pieces of at most ``limit`` characters."""
    if len(text) <= limit:
        yield 0, text
        return
    start = 0
    while start < len(text):
        end = start + cut_at(text[start : start + limit + 1], limit)
        yield start, text[start:end]
        start = end


_Opened = tuple[Iterator[Block], int | None]


# --- sections (DOCX, HTML, Markdown) -----------------------------------------------------


def _numbered(parts: Iterable[tuple[str, bool]]) -> Iterator[tuple[str, bool, int]]:
    """Give parts of a format without character positions (DOCX, HTML) running offsets."""
    offset = 0
    for text, is_heading in parts:
        yield text, is_heading, offset
        offset += len(text) + 1


def _sections(parts: Iterable[tuple[str, bool, int]]) -> Iterator[Block]:
    """Group (text, is_heading, offset) parts into blocks under their nearest heading.

    A section longer than ``MAX_BLOCK_CHARS`` is yielded in several blocks with the same
    heading.
    """
    heading: str | None = None
    buf: list[str] = []
    size = 0
    start = 0

    def flush() -> Iterator[Block]:
        text = _clean("\n".join(buf))
        if text:
            yield Block(text=text, heading=heading, offset=start)

    for text, is_heading, offset in parts:
        if is_heading and text.strip():
            yield from flush()
            buf, size = [text], len(text)
            heading = _clean(text)[:500]
            start = offset
            continue
        if buf and size + len(text) > MAX_BLOCK_CHARS:
            yield from flush()
            buf, size = [], 0
        if not buf:
            start = offset
        buf.append(text)
        size += len(text) + 1
    yield from flush()


# --- reading text in bounded pieces ------------------------------------------------------


def _cp1252_fallback(err: UnicodeError) -> tuple[str, int]:
    """Decode bytes that are not UTF-8 as Windows-1252 (the common legacy encoding)."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    bad = err.object[err.start : err.end]
    return bytes(bad).decode("cp1252", errors="replace"), err.end


def _decoder(head: bytes) -> codecs.IncrementalDecoder:
    encoding = text_encoding(head)
    if encoding is not None:
        return codecs.getincrementaldecoder(encoding)(errors="replace")
    codecs.register_error("ragchat-cp1252", _cp1252_fallback)
    return codecs.getincrementaldecoder("utf-8")(errors="ragchat-cp1252")


def _read_pieces(path: Path, limit: int = MAX_BLOCK_CHARS) -> Iterator[tuple[int, str]]:
    """(offset, text) pieces of a text file, each at most ``limit`` characters.

    Pieces end at a blank line, else a line end, else a space, else exactly at the limit;
    offsets count characters of the decoded text (a byte-order mark is not counted).
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(_READ_BYTES)
            decoder = _decoder(head)
            buf = decoder.decode(head)
            offset = 0
            while True:
                while len(buf) > limit:
                    cut = cut_at(buf, limit)
                    yield offset, buf[:cut]
                    offset += cut
                    buf = buf[cut:]
                data = fh.read(_READ_BYTES)
                buf += decoder.decode(data, final=not data)
                if not data:
                    break
    except OSError as exc:
        raise IngestError(path, f"cannot read file: {exc.strerror or exc}") from exc
    for start, piece in _pieces(buf, limit):
        yield offset + start, piece


def _open_text(path: Path, limits: ParseLimits) -> _Opened:
    """Plain text: one block per piece of at most ``MAX_BLOCK_CHARS`` characters."""

    def blocks() -> Iterator[Block]:
        for offset, piece in _read_pieces(path):
            text = _clean(piece)
            if text:
                yield Block(text=text, offset=offset)

    return blocks(), None


# --- Markdown ----------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SETEXT = re.compile(r" {0,3}(=+|-+)\s*")


def _markdown_lines(path: Path) -> Iterator[tuple[str, int]]:
    """(line, offset) pairs; YAML front matter at the very start is skipped."""
    first = True
    for offset, piece in _read_pieces(path):
        pos = 0
        if first:
            first = False
            if piece.startswith("---\n"):
                end = piece.find("\n---", 4)
                if end != -1:
                    pos = end + 4
        lines = piece[pos:].split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the piece ended with a line end
        for line in lines:
            yield line.removesuffix("\r"), offset + pos
            pos += len(line) + 1


def _markdown_parts(path: Path) -> Iterator[tuple[str, bool, int]]:
    """Lines as parts: ATX and setext headings (outside code fences) marked as headings."""
    in_fence = False
    pending: tuple[str, int] | None = None
    for nxt in _markdown_lines(path):
        if pending is None:
            pending = nxt
            continue
        (line, offset), pending = pending, nxt
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            atx = _ATX.match(line)
            if atx:
                yield atx.group(2), True, offset
                continue
            if line.strip() and _SETEXT.fullmatch(nxt[0]) and not _SETEXT.fullmatch(line):
                yield line.strip(), True, offset
                pending = None  # the underline is part of the heading
                continue
        yield line, False, offset
    if pending is not None:
        line, offset = pending
        atx = None if in_fence else _ATX.match(line)
        yield (atx.group(2), True, offset) if atx else (line, False, offset)


def _open_markdown(path: Path, limits: ParseLimits) -> _Opened:
    """Split at ATX and setext headings (outside code fences); front matter is dropped."""
    return _sections(_markdown_parts(path)), None


# --- PDF ---------------------------------------------------------------------------------

_OUTLINE_MAX_ENTRIES = 100_000


def _pdf_error(path: Path, exc: BaseException, where: str = "") -> IngestError:
    """One clear error for whatever pypdf raised on a damaged or hostile PDF."""
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError

    if isinstance(exc, FileNotDecryptedError):
        return IngestError(path, "encrypted PDF: it needs a password")
    if isinstance(exc, DependencyError):
        return IngestError(path, f"encrypted PDF: cannot decrypt it ({exc})")
    if isinstance(exc, LimitReachedError):
        return IngestError(path, f"PDF refused by the parser's safety limits{where}: {exc}")
    if isinstance(exc, RecursionError):
        return IngestError(path, f"corrupt PDF{where}: objects nested too deeply")
    return IngestError(path, f"corrupt PDF{where}: {type(exc).__name__}: {exc}")


def _open_pdf(path: Path, limits: ParseLimits) -> _Opened:
    """One block per page with its 1-based page number; headings from the outline."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted:
            reader.decrypt("")  # many PDFs are encrypted with an empty user password
        # The declared count refuses a huge PDF at once; listing its pages takes seconds.
        _check_pages(path, _declared_pages(reader), limits)
        n_pages = len(reader.pages)
    except (IngestError, MemoryError):
        raise
    # Adapter boundary: on damaged input pypdf raises its own errors and also arbitrary
    # built-in ones (KeyError, IndexError, AttributeError...); each becomes one IngestError
    # that names the error type, never a traceback.
    except Exception as exc:
        raise _pdf_error(path, exc) from exc
    _check_pages(path, n_pages, limits)
    headings = _pdf_page_headings(reader, n_pages, path)

    def blocks() -> Iterator[Block]:
        for i in range(n_pages):
            try:
                text = reader.pages[i].extract_text() or ""
            except MemoryError:
                raise
            # Adapter boundary, as above: a broken page is reported with its number.
            except Exception as exc:
                raise _pdf_error(path, exc, f" (page {i + 1})") from exc
            text = _clean(text)
            if text:
                yield Block(text=text, page=i + 1, heading=headings.get(i + 1), offset=0)

    return blocks(), n_pages


def _declared_pages(reader: Any) -> int:
    """The page count the PDF's page tree declares (0 when it declares none)."""
    count = reader.trailer["/Root"]["/Pages"].get("/Count", 0)
    return count if isinstance(count, int) else 0


def _check_pages(path: Path, n_pages: int, limits: ParseLimits) -> None:
    if n_pages > limits.max_pages:
        raise ParseLimitError(
            path,
            "RAG_PARSE_MAX_PAGES",
            f"PDF has {n_pages:,} pages, more than {limits.max_pages:,}",
        )


def _outline_starts(reader: Any) -> list[tuple[int, str]]:
    """(page, title) of outline entries, walked without recursion and bounded in size."""
    starts: list[tuple[int, str]] = []
    stack: list[Iterator[Any]] = [iter(reader.outline)]
    seen = 0
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        seen += 1
        if seen > _OUTLINE_MAX_ENTRIES:
            break
        if isinstance(item, list):
            stack.append(iter(item))
            continue
        try:
            page = reader.get_destination_page_number(item)
        except (KeyError, ValueError, TypeError, AttributeError):
            continue
        if page is not None and page >= 0 and getattr(item, "title", None):
            starts.append((page + 1, str(item.title).strip()[:500]))
    return starts


def _pdf_page_headings(reader: Any, n_pages: int, path: Path) -> dict[int, str]:
    """Map each page to the last outline entry that starts on or before it."""
    try:
        starts = _outline_starts(reader)
    except MemoryError:
        raise
    # Adapter boundary: headings are optional, so a damaged or hostile outline (too deep,
    # cyclic, broken references) costs the headings, not the document; the error is logged.
    except Exception as exc:  # noqa: BLE001
        logger.info("%s: PDF outline unreadable (%s: %s)", path, type(exc).__name__, exc)
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

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_W_P, _W_TBL, _W_TR, _W_TC, _W_BODY = (_W + t for t in ("p", "tbl", "tr", "tc", "body"))
_W_R, _W_HYPERLINK, _W_T = _W + "r", _W + "hyperlink", _W + "t"
_W_VAL = _W + "val"
# Run children and the text they stand for, as python-docx's ``Run.text`` reads them.
_RUN_TEXT = {_W + "tab": "\t", _W + "ptab": "\t", _W + "cr": "\n", _W + "noBreakHyphen": "-"}
_HEADING_NAME = re.compile(r"(heading [1-9]|title)", re.I)
# Parts smaller than this cannot be a bomb whatever their ratio.
_RATIO_MIN_BYTES = 1 * _MB
_DOCX_XML_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,  # lxml's XMLSyntaxError is one, and so are zipfile's header errors
    KeyError,
    RuntimeError,  # zipfile: an encrypted entry
)


# Word writes stored and deflated parts only.
_DOCX_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})


def _check_archive(path: Path, zf: zipfile.ZipFile, limits: ParseLimits) -> None:
    """Refuse a DOCX whose archive is too large, too many-entried or a ZIP bomb."""
    infos = zf.infolist()
    if len(infos) > limits.docx_max_entries:
        raise ParseLimitError(
            path,
            "RAG_DOCX_MAX_ENTRIES",
            f"DOCX archive holds {len(infos):,} entries, more than {limits.docx_max_entries:,}",
        )
    total = sum(info.file_size for info in infos)
    if total > limits.docx_max_unzipped_mb * _MB:
        raise ParseLimitError(
            path,
            "RAG_DOCX_MAX_UNZIPPED_MB",
            f"DOCX parts expand to {total / _MB:,.0f} MB, more than "
            f"{limits.docx_max_unzipped_mb:,} MB",
        )
    for info in infos:
        if info.compress_type not in _DOCX_COMPRESSION:
            # Python's zipfile cannot decompress such a part: refuse the file here, clearly.
            raise IngestError(
                path,
                f"corrupt DOCX: part {info.filename} uses compression method "
                f"{info.compress_type}, which Word files do not use",
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_MIN_BYTES and ratio > limits.docx_max_ratio:
            raise ParseLimitError(
                path,
                "RAG_DOCX_MAX_RATIO",
                f"DOCX part {info.filename} expands {ratio:,.0f}:1",
            )


def _iterparse(path: Path, stream: IO[bytes], part: str) -> Iterator[tuple[str, Any]]:
    """(event, element) of one XML part: no DTD, no entities, no network; a DOCTYPE refused.

    zipfile stops reading an entry at its declared size and checks its CRC, so a part
    cannot grow past what ``_check_archive`` accepted.
    """
    from lxml import etree

    events = etree.iterparse(
        stream,
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        remove_comments=True,
        remove_pis=True,
    )
    first = True
    for event, elem in events:
        if first:
            first = False
            if elem.getroottree().docinfo.doctype:
                raise IngestError(path, f"DOCX part {part} declares a DOCTYPE (refused)")
        yield event, elem


def _heading_styles(path: Path, zf: zipfile.ZipFile) -> tuple[set[str], bool]:
    """Paragraph style ids named like python-docx's Heading*/Title styles.

    Also says whether the default paragraph style is one of them.
    """
    try:
        zf.getinfo("word/styles.xml")
    except KeyError:
        return set(), False
    ids: set[str] = set()
    default_is_heading = False
    with zf.open("word/styles.xml") as stream:
        for event, elem in _iterparse(path, stream, "word/styles.xml"):
            if event != "end" or elem.tag != _W + "style":
                continue
            name_el = elem.find(_W + "name")
            name = (name_el.get(_W_VAL) if name_el is not None else "") or ""
            if elem.get(_W + "type") == "paragraph" and (
                _HEADING_NAME.fullmatch(name) or name.startswith(("Heading", "Title"))
            ):
                ids.add(elem.get(_W + "styleId") or "")
                default_is_heading |= elem.get(_W + "default") in ("1", "true", "on")
            elem.clear()
    return ids, default_is_heading


def _run_text(run: Any) -> str:
    out: list[str] = []
    for child in run:
        tag = child.tag
        if tag == _W_T:
            out.append(child.text or "")
        elif tag == _W + "br":
            out.append("\n" if child.get(_W + "type") in (None, "textWrapping") else "")
        else:
            out.append(_RUN_TEXT.get(tag, ""))
    return "".join(out)


def _paragraph_text(p: Any) -> str:
    """Text of the runs and hyperlinks directly in ``p`` (as python-docx's ``text``)."""
    out: list[str] = []
    for child in p:
        if child.tag == _W_R:
            out.append(_run_text(child))
        elif child.tag == _W_HYPERLINK:
            out.extend(_run_text(run) for run in child if run.tag == _W_R)
    return "".join(out)


def _paragraph_style(p: Any) -> str | None:
    ppr = p.find(_W + "pPr")
    style = ppr.find(_W + "pStyle") if ppr is not None else None
    return style.get(_W_VAL) if style is not None else None


def _docx_parts(path: Path, zf: zipfile.ZipFile) -> Iterator[tuple[str, bool]]:
    """Body paragraphs and table rows in body order, as (text, is_heading)."""
    heading_ids, default_is_heading = _heading_styles(path, zf)
    with zf.open("word/document.xml") as stream:
        for event, elem in _iterparse(path, stream, "word/document.xml"):
            if event != "end":
                continue
            parent = elem.getparent()
            if parent is None:
                continue
            if elem.tag == _W_P and parent.tag == _W_BODY:
                style = _paragraph_style(elem)
                is_heading = style in heading_ids if style is not None else default_is_heading
                yield _paragraph_text(elem), is_heading
            elif elem.tag == _W_TR and _is_body_table(parent):
                cells = (
                    "\n".join(_paragraph_text(p) for p in tc if p.tag == _W_P).strip()
                    for tc in elem
                    if tc.tag == _W_TC
                )
                yield " | ".join(cells), False
            elif parent.tag != _W_BODY:
                continue
            # Done with this paragraph, row or body element: free it and all before it.
            elem.clear()
            while elem.getprevious() is not None:
                del parent[0]


def _is_body_table(elem: Any) -> bool:
    if elem is None or elem.tag != _W_TBL:
        return False
    parent = elem.getparent()
    return parent is not None and parent.tag == _W_BODY


def _open_docx(path: Path, limits: ParseLimits) -> _Opened:
    """Paragraphs and table rows in body order; Heading/Title styles start new sections."""
    try:
        zf = zipfile.ZipFile(path)
    except _DOCX_XML_ERRORS as exc:
        raise IngestError(path, f"corrupt DOCX: {type(exc).__name__}: {exc}") from exc
    try:
        _check_archive(path, zf, limits)
    except BaseException:
        zf.close()
        raise

    def parts() -> Iterator[tuple[str, bool]]:
        from lxml import etree

        try:
            yield from _docx_parts(path, zf)
        except IngestError:
            raise
        except RecursionError as exc:
            raise IngestError(path, "corrupt DOCX: XML nested too deeply") from exc
        except (*_DOCX_XML_ERRORS, etree.LxmlError) as exc:
            raise IngestError(path, f"corrupt DOCX: {type(exc).__name__}: {exc}") from exc
        finally:
            zf.close()

    return _sections(_numbered(parts())), None


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
_MAX_HEADING_CHARS = 1000


# Inline styles that hide an element from readers: text a person never sees is a favourite
# hiding place of injected instructions, and is no content of the document either.
_HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d]*[1-9])"
    r"|opacity\s*:\s*0(?![.\d]*[1-9])",
    re.IGNORECASE,
)


def _is_hidden(attrib: Any) -> bool:
    """An element the browser does not show: the ``hidden`` attribute or a hiding style."""
    if attrib.get("hidden") is not None:
        return True
    return bool(_HIDING_STYLE.search(attrib.get("style") or ""))


def _is_navigation(attrib: Any) -> bool:
    if (attrib.get("role") or "").lower() in _NAV_ROLES:
        return True
    classes = (attrib.get("class") or "").split()
    element_id = attrib.get("id") or ""
    return any(_NAV_CLASS.match(c) for c in classes) or bool(
        element_id and _NAV_CLASS.match(element_id)
    )


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2].lower() if isinstance(tag, str) else ""


class _HtmlText:
    """A parser target (SAX-like: no tree, no recursion) that collects visible text.

    Scripts, styles, navigation and hidden elements are dropped; headings become heading
    parts; block elements end lines. Finished parts wait in ``parts`` for the reader.
    """

    def __init__(self) -> None:
        self.parts: list[tuple[str, bool]] = []
        self.title: str | None = None
        self._stack: list[str] = []  # open elements (the HTML parser balances tags)
        self._in_body = False
        self._drop = 0  # depth inside a dropped element
        self._heading: list[str] | None = None  # text nodes of the open heading
        self._heading_depth = 0
        self._heading_size = 0
        self._joins = False  # the next data call continues the last text node
        self._title: list[str] | None = None
        self._buf: list[str] = []
        self._size = 0

    def start(self, tag: Any, attrib: Any) -> None:
        self._joins = False
        name = _local(tag)
        self._stack.append(name)
        if name == "title" and self.title is None and self._title is None:
            self._title = []
        elif name == "body":
            self._in_body = True
        if self._drop:
            self._drop += 1
        elif name in _DROP_TAGS or _is_hidden(attrib) or _is_navigation(attrib):
            self._drop = 1
        elif self._heading is not None:
            return  # everything inside a heading is the heading's text
        elif name in _HEADINGS:
            self._end_line()
            self._heading, self._heading_size = [], 0
            self._heading_depth = len(self._stack)
        elif name in _BLOCK_TAGS:
            self._end_line()
            if name in ("td", "th"):
                self._buf.append(" ")

    def end(self, tag: Any) -> None:
        self._joins = False
        name = self._stack.pop() if self._stack else _local(tag)
        if name == "title" and self._title is not None:
            self.title = "".join(self._title).strip()[:500] or None
            self._title = None
        if self._drop:
            self._drop -= 1
        elif self._heading is not None:
            if len(self._stack) < self._heading_depth:
                text = " ".join(s.strip() for s in self._heading if s.strip())
                self.parts.append((text, True))
                self._heading = None
        elif name in _BLOCK_TAGS:
            self._end_line()

    def data(self, text: str) -> None:
        if self._title is not None:
            self._title.append(text)
        if self._drop or not self._in_body:
            return
        if self._heading is not None:
            if self._heading_size < _MAX_HEADING_CHARS:
                # One text node may come in several calls (split at entities): join them,
                # since each node is stripped on its own, as BeautifulSoup's get_text does.
                if self._joins and self._heading:
                    self._heading[-1] += text
                else:
                    self._heading.append(text)
                self._joins = True
                self._heading_size += len(text)
            return
        self._buf.append(text)
        self._size += len(text)
        if self._size > MAX_BLOCK_CHARS:
            self._end_line()

    def close(self) -> None:
        self._end_line()

    def _end_line(self) -> None:
        if self._buf:
            self.parts.append(("".join(self._buf), False))
            self._buf.clear()
            self._size = 0


def _html_parts(path: Path, target: _HtmlText) -> Iterator[tuple[str, bool]]:
    from lxml import etree

    parser = etree.HTMLParser(target=target, no_network=True, remove_comments=True)
    for _offset, piece in _read_pieces(path, _READ_BYTES):
        parser.feed(piece)
        yield from target.parts
        target.parts.clear()
    parser.close()
    yield from target.parts
    target.parts.clear()


def _open_html(path: Path, limits: ParseLimits) -> _Opened:
    """Visible text only: scripts, styles and navigation dropped, headings kept as sections.

    Blocks before the first heading take the page's ``<title>`` as their heading.
    """
    target = _HtmlText()

    def blocks() -> Iterator[Block]:
        from lxml import etree

        try:
            for block in _sections(_numbered(_html_parts(path, target))):
                if not block.heading and target.title:
                    block = Block(block.text, block.page, target.title, block.offset)
                yield block
        except (etree.LxmlError, ValueError) as exc:
            raise IngestError(path, f"unreadable HTML: {type(exc).__name__}: {exc}") from exc

    return blocks(), None


_OPENERS: dict[Kind, Callable[[Path, ParseLimits], _Opened]] = {
    Kind.PDF: _open_pdf,
    Kind.DOCX: _open_docx,
    Kind.HTML: _open_html,
    Kind.MARKDOWN: _open_markdown,
    Kind.TEXT: _open_text,
}
