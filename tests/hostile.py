"""A corpus of hostile and odd files, written on demand (nothing large is committed).

Each writer puts one file into a folder and returns its path. ``build_corpus`` writes them
all and says, for each, what a correct ingestion does with it: refuse it cleanly
("rejected", with words the reason must contain), read it ("parsed"), or either ("any":
symlinks, which the folder walk skips but a direct parse may read). Large files are
generated quickly: sparse files with ``truncate``, compression bombs with a streaming
``zlib`` compressor, repeated PDF pages sharing one content stream.
"""

from __future__ import annotations

import os
import random
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_MB = 1024 * 1024
TEXT = "Hostile corpus sentence about reliable parsing."


@dataclass(frozen=True)
class Case:
    """One corpus file and what a correct ingestion does with it."""

    path: Path
    expect: str  # rejected | parsed | any
    reason: str = ""  # words a rejection's reason contains (lowercase)
    contains: str = ""  # text a parsed file yields


# --- a minimal PDF writer ----------------------------------------------------------------


def _pdf_bytes(objects: list[bytes], root: int = 1, trailer_extra: bytes = b"") -> bytes:
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        root,
        trailer_extra,
        xref,
    )
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def _text_ops(text: str) -> bytes:
    return b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _page(parent: int, contents: int, extra: bytes = b"") -> bytes:
    return (
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R %s>>" % (parent, contents, extra)
    )


def write_simple_pdf(
    path: Path,
    pages: int,
    text: str = TEXT,
    page_extra: bytes = b"",
    declared: int | None = None,
) -> Path:
    """A PDF whose pages all show ``text`` (one shared content stream: tiny however many).

    ``declared`` is the page count the page tree claims (by default the true one).
    """
    first_page = 5
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, declared or pages),
        _FONT,
        _stream(_text_ops(text)),
    ]
    objects += [_page(2, 4, page_extra) for _ in range(pages)]
    path.write_bytes(_pdf_bytes(objects))
    return path


def pdf_flate_bomb(folder: Path) -> Path:
    """A page whose content stream inflates 1,000:1 to 300 MB."""
    comp = zlib.compressobj(9)
    chunk = b" " * _MB
    data = b"".join(comp.compress(chunk) for _ in range(300)) + comp.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
        _FONT,
        _stream(data, b"/Filter /FlateDecode "),
        _page(2, 4),
    ]
    path = folder / "flate-bomb.pdf"
    path.write_bytes(_pdf_bytes(objects))
    return path


def pdf_deep_page_tree(folder: Path, depth: int = 5000) -> Path:
    """Pages nodes nested ``depth`` deep above the only page."""
    # 1 catalog, 2 first Pages, 3 font, 4 content, 5 page, 6.. inner Pages nodes
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", _FONT, _stream(_text_ops(TEXT)), b""]
    nodes = [2] + [6 + i for i in range(depth)]
    objects += [b""] * depth
    for k, number in enumerate(nodes):
        child = nodes[k + 1] if k + 1 < len(nodes) else 5
        parent = b"/Parent %d 0 R " % nodes[k - 1] if k else b""
        objects[number - 1] = b"<< /Type /Pages %s/Kids [%d 0 R] /Count 1 >>" % (parent, child)
    objects[4] = _page(nodes[-1], 4)
    path = folder / "deep-page-tree.pdf"
    path.write_bytes(_pdf_bytes(objects))
    return path


def pdf_deep_outline(folder: Path, depth: int = 5000) -> Path:
    """A readable page under an outline nested ``depth`` levels deep."""
    # 1 catalog, 2 pages, 3 font, 4 content, 5 page, 6 outline root, 7.. items
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Outlines 6 0 R >>",
        b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
        _FONT,
        _stream(_text_ops(TEXT)),
        _page(2, 4),
        b"<< /Type /Outlines /First 7 0 R /Last 7 0 R /Count %d >>" % depth,
    ]
    for i in range(depth):
        number = 7 + i
        parent = 6 if i == 0 else number - 1
        child = b"/First %d 0 R /Last %d 0 R /Count 1 " % (number + 1, number + 1)
        objects.append(
            b"<< /Title (Level %d) /Parent %d 0 R /Dest [5 0 R /Fit] %s>>"
            % (i, parent, child if i + 1 < depth else b"")
        )
    path = folder / "deep-outline.pdf"
    path.write_bytes(_pdf_bytes(objects))
    return path


def pdf_nested_arrays(folder: Path, depth: int = 100_000) -> Path:
    """A page dictionary holding an array nested ``depth`` deep."""
    path = folder / "nested-arrays.pdf"
    return write_simple_pdf(path, 1, page_extra=b"/Junk " + b"[" * depth + b"]" * depth + b" ")


def pdf_truncated(folder: Path) -> Path:
    """The first 300 bytes of a valid PDF."""
    data = write_simple_pdf(folder / "whole.tmp", 3).read_bytes()
    (folder / "whole.tmp").unlink()
    path = folder / "truncated.pdf"
    path.write_bytes(data[:300])
    return path


def pdf_random_bytes(folder: Path) -> Path:
    path = folder / "random-bytes.pdf"
    path.write_bytes(random.Random(7).randbytes(64 * 1024))
    return path


def _fpdf_encrypted(path: Path, user_password: str) -> Path:
    from fpdf import FPDF
    from fpdf.enums import EncryptionMethod

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, TEXT)
    pdf.set_encryption(
        owner_password="owner-secret",
        user_password=user_password,
        encryption_method=EncryptionMethod.AES_256,
    )
    pdf.output(str(path))
    return path


def pdf_aes_empty_password(folder: Path) -> Path:
    """AES-256 encrypted, empty user password: any viewer opens it, so must we."""
    return _fpdf_encrypted(folder / "aes-empty-password.pdf", "")


def pdf_password(folder: Path) -> Path:
    return _fpdf_encrypted(folder / "password-protected.pdf", "secret")


def pdf_many_pages(folder: Path, pages: int = 60_000) -> Path:
    """More pages than RAG_PARSE_MAX_PAGES allows (50,000), in a 5 MB file."""
    return write_simple_pdf(folder / f"pages-{pages}.pdf", pages)


# --- DOCX ----------------------------------------------------------------------------------

_W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/'
    'vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
)


def _document_xml(body: str, prolog: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{prolog}'
        f'<w:document xmlns:w="{_W_NS}"><w:body>{body}</w:body></w:document>'
    )


def _para(text: str) -> str:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"


def write_docx(
    path: Path, document_xml: str | bytes, extra: dict[str, bytes] | None = None
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _RELS)
        zf.writestr("word/document.xml", document_xml)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def docx_zip_bomb(folder: Path) -> Path:
    """word/document.xml inflates to 200 MB from about 200 KB."""
    path = folder / "zip-bomb.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _RELS)
        with zf.open("word/document.xml", "w", force_zip64=True) as part:
            part.write(_document_xml("<w:p><w:r><w:t>")[:-30].encode())
            chunk = b"A" * _MB
            for _ in range(200):
                part.write(chunk)
    return path


def docx_many_entries(folder: Path, entries: int = 20_000) -> Path:
    path = folder / "many-entries.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _RELS)
        zf.writestr("word/document.xml", _document_xml(_para(TEXT)))
        for i in range(entries):
            zf.writestr(f"word/media/e{i}.bin", b"x")
    return path


def docx_xxe(folder: Path) -> Path:
    """An external entity pointing at /etc/passwd: its content must never be read."""
    prolog = '<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    body = _para("&xxe;")
    return write_docx(folder / "xxe.docx", _document_xml(body, prolog))


def docx_billion_laughs(folder: Path) -> Path:
    entities = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
    )
    prolog = f"<!DOCTYPE w:document [{entities}]>"
    return write_docx(folder / "billion-laughs.docx", _document_xml(_para("&l9;"), prolog))


def docx_deep_xml(folder: Path, depth: int = 20_000) -> Path:
    body = "<w:sdt>" * depth + _para(TEXT) + "</w:sdt>" * depth
    return write_docx(folder / "deep-xml.docx", _document_xml(body))


def docx_malformed_xml(folder: Path) -> Path:
    body = _para(TEXT) + "<w:p><w:r><w:t>unclosed</w:r></w:p><<>>"
    return write_docx(folder / "malformed-xml.docx", _document_xml(body))


def docx_truncated(folder: Path) -> Path:
    whole = write_docx(folder / "whole.tmp", _document_xml(_para(TEXT) * 200))
    data = whole.read_bytes()
    whole.unlink()
    path = folder / "truncated.docx"
    path.write_bytes(data[: len(data) // 2])
    return path


def docx_bad_crc(folder: Path) -> Path:
    """A damaged deflate stream inside an intact archive (zlib error or CRC mismatch)."""
    path = write_docx(folder / "bad-crc.docx", _document_xml(_para(TEXT) * 500))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("word/document.xml")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(start + 20, start + 60):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def docx_large(folder: Path, paragraphs: int = 50_000) -> Path:
    """A legitimate large document: headings every 50 paragraphs."""
    styles = (
        f'<?xml version="1.0" encoding="UTF-8"?><w:styles xmlns:w="{_W_NS}">'
        '<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/>'
        "</w:style></w:styles>"
    )
    parts = []
    for i in range(paragraphs):
        if i % 50 == 0:
            parts.append(
                f'<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Part {i // 50}'
                "</w:t></w:r></w:p>"
            )
        parts.append(_para(f"Paragraph {i}: {TEXT} {random.Random(i).random():.6f}"))
    return write_docx(
        folder / f"paragraphs-{paragraphs}.docx",
        _document_xml("".join(parts)),
        {"word/styles.xml": styles.encode()},
    )


# --- HTML ----------------------------------------------------------------------------------


def html_nested(folder: Path, depth: int = 100_000) -> Path:
    path = folder / "nested-100k.html"
    path.write_text(
        "<html><body>" + "<div>" * depth + f"<p>{TEXT}</p>" + "</div>" * depth + "</body></html>"
    )
    return path


def html_huge_line(folder: Path, mb: float = 10) -> Path:
    path = folder / "huge-line.html"
    with path.open("w") as fh:
        fh.write("<html><body><p>")
        for _ in range(max(1, int(mb * 64))):
            fh.write((TEXT + " ") * (_MB // 64 // (len(TEXT) + 1)))
        fh.write("</p></body></html>")
    return path


def html_script_only(folder: Path) -> Path:
    path = folder / "script-only.html"
    path.write_text("<html><head><script>var x = 'only code';</script></head><body></body></html>")
    return path


def html_utf16(folder: Path) -> Path:
    path = folder / "utf16-bom.html"
    path.write_bytes(f"<html><body><h1>Titel</h1><p>{TEXT} é</p></body></html>".encode("utf-16"))
    return path


def html_entity_bomb(folder: Path) -> Path:
    path = folder / "entity-bomb.html"
    entities = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
    )
    path.write_text(f"<!DOCTYPE html [{entities}]><html><body><p>&l9; {TEXT}</p></body></html>")
    return path


def html_large(folder: Path, mb: int = 50) -> Path:
    """A legitimate large page: sections with headings and paragraphs."""
    path = folder / f"page-{mb}mb.html"
    with path.open("w") as fh:
        fh.write("<html><head><title>Large</title></head><body>")
        size, i = 0, 0
        while size < mb * _MB:
            piece = f"<h2>Section {i}</h2>" + f"<p>{TEXT} {i}</p>" * 40
            fh.write(piece)
            size += len(piece)
            i += 1
        fh.write("</body></html>")
    return path


# --- text ----------------------------------------------------------------------------------


def text_utf16(folder: Path) -> Path:
    path = folder / "utf16-bom.txt"
    path.write_bytes(f"{TEXT}\nZweite Zeile: Grüße.\n".encode("utf-16"))
    return path


def text_utf16_be(folder: Path) -> Path:
    path = folder / "utf16-be-bom.txt"
    path.write_bytes(b"\xfe\xff" + f"{TEXT}\n".encode("utf-16-be"))
    return path


def markdown_quoting_pdf(folder: Path) -> Path:
    path = folder / "quotes-pdf-header.md"
    path.write_text(f"# PDF files\n\nA PDF starts with `%PDF-1.7` and a binary line.\n\n{TEXT}\n")
    return path


def text_sparse_4g(folder: Path) -> Path:
    """4 GiB of NULs that take no disk space; must be refused without reading it whole."""
    path = folder / "sparse-4g.txt"
    with path.open("wb") as fh:
        fh.truncate(4 * 1024 * _MB)
    return path


def text_long_line(folder: Path, mb: float = 10) -> Path:
    path = folder / "long-line-10mb.txt"
    path.write_bytes(b"x" * int(mb * _MB))
    return path


def text_bad_unicode(folder: Path) -> Path:
    """Invalid UTF-8, a UTF-8-encoded lone surrogate, a NUL-free mix of junk."""
    path = folder / "bad-unicode.txt"
    path.write_bytes(TEXT.encode() + b" \xed\xa0\x80 \xff\xfe\xc3( caf\xe9 \xe2\x82\n")
    return path


def text_controls(folder: Path) -> Path:
    """Terminal escapes and bidi overrides in the text and in the file name."""
    path = folder / "evil\x1b[31mred\u202egnp.txt"
    path.write_text(f"{TEXT}\n\x1b[2J\x1b]0;pwned\x07 clear screen \u202eoverride\u202c\r\n")
    return path


def text_cp1252(folder: Path) -> Path:
    path = folder / "cp1252.txt"
    path.write_bytes(f"{TEXT} Café \u2013 naïve \u201cquotes\u201d.\n".encode("cp1252"))
    return path


def text_nonutf8_name(folder: Path) -> Path:
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.txt"
    with open(raw, "wb") as fh:
        fh.write(TEXT.encode())
    return Path(os.fsdecode(raw))


def text_large(folder: Path, mb: int = 100) -> Path:
    """A legitimate large text file of short lines."""
    path = folder / f"text-{mb}mb.txt"
    line = (TEXT + "\n").encode()
    block = line * (_MB // len(line))
    with path.open("wb") as fh:
        for _ in range(mb):
            fh.write(block)
    return path


def special_fifo(folder: Path) -> Path:
    path = folder / "pipe.txt"
    os.mkfifo(path)
    return path


def symlink_passwd(folder: Path) -> Path:
    path = folder / "passwd.txt"
    path.symlink_to("/etc/passwd")
    return path


def symlink_outside(folder: Path) -> Path:
    outside = folder.parent / f"{folder.name}-outside.txt"
    outside.write_text(TEXT)
    path = folder / "outside-link.txt"
    path.symlink_to(outside)
    return path


def empty_file(folder: Path) -> Path:
    path = folder / "empty.txt"
    path.write_bytes(b"")
    return path


_Writer = Callable[[Path], Path]
# (writer, expect, reason words, text a parsed file yields)
CORPUS: list[tuple[_Writer, str, str, str]] = [
    (pdf_flate_bomb, "rejected", "", ""),
    (pdf_deep_page_tree, "rejected", "", ""),
    (pdf_deep_outline, "parsed", "", "Hostile corpus"),
    (pdf_nested_arrays, "any", "", ""),
    (pdf_truncated, "rejected", "", ""),
    (pdf_random_bytes, "rejected", "pdf", ""),
    (pdf_aes_empty_password, "parsed", "", "Hostile corpus"),
    (pdf_password, "rejected", "needs a password", ""),
    (pdf_many_pages, "rejected", "rag_parse_max_pages", ""),
    (docx_zip_bomb, "rejected", "rag_docx_max_ratio", ""),
    (docx_many_entries, "rejected", "rag_docx_max_entries", ""),
    (docx_xxe, "rejected", "doctype", ""),
    (docx_billion_laughs, "rejected", "doctype", ""),
    (docx_deep_xml, "rejected", "", ""),
    (docx_malformed_xml, "rejected", "", ""),
    (docx_truncated, "rejected", "", ""),
    (docx_bad_crc, "rejected", "", ""),
    (html_nested, "parsed", "", "Hostile corpus"),
    (html_huge_line, "parsed", "", "Hostile corpus"),
    (html_script_only, "rejected", "no text", ""),
    (html_utf16, "parsed", "", "Hostile corpus"),
    (html_entity_bomb, "any", "", ""),
    (text_utf16, "parsed", "", "Grüße"),
    (text_utf16_be, "parsed", "", "Hostile corpus"),
    (markdown_quoting_pdf, "parsed", "", "%PDF-1.7"),
    (text_sparse_4g, "rejected", "binary", ""),
    (text_long_line, "parsed", "", "xxxx"),
    (text_bad_unicode, "parsed", "", "Hostile corpus"),
    (text_controls, "parsed", "", "Hostile corpus"),
    (text_cp1252, "parsed", "", "Café"),
    # Parsed by the loaders; the folder walk may refuse the name instead.
    (text_nonutf8_name, "any", "", "Hostile corpus"),
    (special_fifo, "rejected", "regular file", ""),
    (symlink_passwd, "any", "", ""),
    (symlink_outside, "any", "", ""),
    (empty_file, "rejected", "empty", ""),
]

# Large but legitimate: parsed with bounded memory (the bench; too slow for CI).
LARGE: list[_Writer] = [
    lambda folder: write_simple_pdf(folder / "pages-10000.pdf", 10_000),
    docx_large,
    html_large,
    text_large,
]


def build_corpus(folder: Path, *, small: bool = False) -> list[Case]:
    """Write every hostile file into ``folder`` (which must exist).

    ``small`` writes the two files that are large only because they are long (the 10 MB
    lines) at 16 KB and 256 KB, so that embedding them stays quick; every bomb keeps its full size.
    """
    shrink: dict[_Writer, _Writer] = {
        html_huge_line: lambda f: html_huge_line(f, mb=1 / 64),
        text_long_line: lambda f: text_long_line(f, mb=1 / 4),
    }
    cases = []
    for writer, expect, reason, contains in CORPUS:
        write = shrink.get(writer, writer) if small else writer
        cases.append(Case(write(folder), expect, reason, contains))
    return cases
