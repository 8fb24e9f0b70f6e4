"""A PDF page rendered as an image with a passage highlighted, in a limited child process.

pypdfium2 is C code reading an uploaded file: a hostile PDF can crash it, hang it or make
it take all memory. So the web server never renders in its own process: ``render_isolated``
runs ``python -m ui.pdf_page`` with an address-space limit and a time limit, and a PDF
that breaks either costs that one picture, never the app (the same rule as the parser
sandbox in ``ingest/sandbox.py``). This module imports no Streamlit, so the child starts fast.
"""

from __future__ import annotations

import io
import json
import re
import resource
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from rag.errors import RagError

MAX_SIDE_PX = 1800  # the longest side of a rendered page, whatever the page's size
HIGHLIGHT_RGBA = (255, 190, 0, 90)
_KEEP = re.compile(r"[^\W_]", re.UNICODE)  # letters and digits: what matching compares
_HEADER = struct.Struct(">I")
_NOT_FOUND, _NO_PAGE, _UNREADABLE = 3, 4, 5  # the child's exit codes

Rect = tuple[float, float, float, float]  # left, top, right, bottom in image pixels


class PageRenderError(RagError):
    """A PDF page could not be rendered (unreadable file, a crash, a limit)."""


@dataclass(frozen=True)
class PageImage:
    """A rendered PDF page with the cited passage highlighted."""

    image: Image.Image
    rects: list[Rect]  # the highlight rectangles, in image pixels
    scale: float  # pixels per PDF point


def _normalised(chars: Sequence[str]) -> tuple[str, list[int]]:
    """Lower-cased letters and digits only, with each one's index in ``chars``."""
    kept = [(c.lower(), i) for i, c in enumerate(chars) if _KEEP.match(c)]
    return "".join(c for c, _ in kept), [i for _, i in kept]


def passage_spans(page_chars: Sequence[str], pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Character ranges (first, count) of the page that hold the passage.

    ``pieces`` is the passage, then its sentences. Letters and digits are compared,
    case-folded, so line breaks, hyphenation and spacing that differ between the page and
    the stored chunk do not matter. When the whole passage is found, its sentences are not
    looked for; otherwise each sentence is looked for on its own.
    """
    page, where = _normalised(page_chars)
    spans = []
    for n, piece in enumerate(pieces):
        needle, _ = _normalised(piece)
        if len(needle) < 8:
            continue
        at = page.find(needle)
        if at < 0:
            continue
        first, last = where[at], where[at + len(needle) - 1]
        spans.append((first, last - first + 1))
        if n == 0:
            break
    return spans


def render_pdf_page(path: Path, page_number: int, pieces: Sequence[str]) -> PageImage:
    """Render page ``page_number`` (1-based) here, in this process, the passage highlighted.

    Only for the child process and tests: the web server calls ``render_isolated``.

    Raises:
        FileNotFoundError: the file is gone.
        pypdfium2.PdfiumError: the file is not a PDF pdfium can read.
        IndexError: the PDF has no such page.
    """
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    if not path.is_file():
        raise FileNotFoundError(path)
    pdf = pdfium.PdfDocument(path)
    try:
        if not 1 <= page_number <= len(pdf):
            raise IndexError(f"page {page_number} of {len(pdf)}")
        page = pdf[page_number - 1]
        width, height = page.get_size()
        scale = min(2.0, MAX_SIDE_PX / max(width, height, 1.0))
        image = page.render(scale=scale).to_pil().convert("RGBA")
        textpage = page.get_textpage()
        raw = textpage.raw
        chars = [
            chr(code) if (code := pdfium_c.FPDFText_GetUnicode(raw, i)) else ""
            for i in range(textpage.count_chars())
        ]
        rects: list[Rect] = []
        for first, count in passage_spans(chars, pieces):
            for i in range(textpage.count_rects(first, count)):
                left, bottom, right, top = textpage.get_rect(i)
                rects.append(
                    (left * scale, (height - top) * scale, right * scale, (height - bottom) * scale)
                )
    finally:
        pdf.close()
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for rect in rects:
        draw.rectangle(rect, fill=HIGHLIGHT_RGBA)
    return PageImage(Image.alpha_composite(image, overlay).convert("RGB"), rects, scale)


def render_isolated(
    path: Path,
    page_number: int,
    pieces: Sequence[str],
    *,
    timeout_s: float = 20.0,
    max_mb: int = 1024,
) -> PageImage:
    """``render_pdf_page`` in a child process limited to ``timeout_s`` and ``max_mb``.

    Raises:
        FileNotFoundError: the file is gone.
        PageRenderError: the file is unreadable, has no such page, or its rendering crashed,
            ran out of time or of memory.
    """
    request = json.dumps({"path": str(path), "page": page_number, "pieces": list(pieces)})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ui.pdf_page", str(max_mb)],
            input=request.encode(),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PageRenderError(f"rendering the page took over {timeout_s:.0f} s") from exc
    if done.returncode == _NOT_FOUND:
        raise FileNotFoundError(path)
    if done.returncode == _NO_PAGE:
        raise PageRenderError(f"the PDF has no page {page_number}")
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [
            f"exit status {done.returncode}"
        ]
        raise PageRenderError(f"the page could not be rendered: {why[0][:200]}")
    (size,) = _HEADER.unpack_from(done.stdout)
    meta = json.loads(done.stdout[_HEADER.size : _HEADER.size + size])
    image = Image.open(io.BytesIO(done.stdout[_HEADER.size + size :]))
    image.load()
    return PageImage(image, [tuple(r) for r in meta["rects"]], float(meta["scale"]))


def main() -> int:
    """The child: read the request on stdin, write header, metadata and PNG on stdout."""
    import pypdfium2 as pdfium

    max_mb = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (max_mb * 2**20, max_mb * 2**20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    request = json.loads(sys.stdin.buffer.read())
    try:
        shot = render_pdf_page(Path(request["path"]), int(request["page"]), request["pieces"])
    except FileNotFoundError:
        return _NOT_FOUND
    except IndexError:
        return _NO_PAGE
    except pdfium.PdfiumError as exc:
        print(f"unreadable PDF: {exc}", file=sys.stderr)  # noqa: T201 - the child's report
        return _UNREADABLE
    png = io.BytesIO()
    shot.image.save(png, format="PNG")
    meta = json.dumps({"rects": shot.rects, "scale": shot.scale}).encode()
    sys.stdout.buffer.write(_HEADER.pack(len(meta)) + meta + png.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
