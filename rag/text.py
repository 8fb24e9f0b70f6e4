"""Small text helpers shared by the chain, citations and the UI: words and sentences.

Also a server URL as messages and logs may show it (``redacted``).
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# A sentence ends after end punctuation (and closing quotes or brackets) that is followed by
# blanks, a line break or the end of the text, or at a blank line. "postgresql.conf", "1.2" and
# "main.rs" go on, and so does a sentence hard-wrapped over several lines.
_PASSAGE_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?:[ \t]+|(?=\n)|$)|\n[ \t]*\n\s*")

STOPWORDS = frozenset(
    """a about also an and any are as at be been being but by can could did do does doing
    for from had has have he her him his how i if in into is it its just me more most my
    not of on only or our over please she should so such than that the their them then
    there these they this those to too under us very was we were what when where which who
    whom why will with would you your""".split()
)


# What may stand around a question without changing it: spaces, end marks, quotes, brackets.
_QUESTION_EDGES = (
    " \t\r\n?!.,;:\"'`()[]{}"
    "\u00bf\u00a1\u2026\u00ab\u00bb\u201c\u201d\u2018\u2019\u3002\uff1f\uff01"
)


def same_question(text: str) -> str:
    """A question as ragchat compares questions: the cache, the review queue, the usage log.

    NFKC, case-folded, curly apostrophes straight, one space between words, and no spaces,
    end marks, quotes or brackets at either end.
    """
    folded = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    return " ".join(folded.split()).strip(_QUESTION_EDGES)


def content_words(text: str) -> set[str]:
    """Lower-cased words of three or more letters that are not stopwords."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS}


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage and its paragraph breaks: ``"".join(...) == text``."""
    out, start = [], 0
    for match in _PASSAGE_SENTENCE_END.finditer(text):
        if match.end() > start:
            out.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        out.append(text[start:])
    return out


# Characters that must never reach a terminal or a page as they are: C0/C1 controls (terminal
# escapes, carriage returns and newlines that forge lines), bidirectional overrides and
# isolates (which reorder what is shown), and lone surrogates (unencodable).
_UNSAFE_LABEL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_label(text: str, limit: int | None = None) -> str:
    r"""A file name, path or reason made safe to print or show: one line, nothing hidden.

    Control characters, bidirectional overrides and lone surrogates become visible escapes
    (``\\x1b``, ``\\u202e``), so a crafted name can neither move the cursor, forge an output
    line nor disguise its extension. ``limit`` shortens the result to that many characters.
    """
    out = _UNSAFE_LABEL.sub(_escape, text)
    if limit is not None and len(out) > limit:
        out = out[: max(0, limit - 1)] + "…"
    return out


def safe_text(text: str) -> str:
    """Document text made safe to print: like ``safe_label`` but newlines and tabs are kept."""
    return "\n".join(
        "\t".join(safe_label(part) for part in line.split("\t")) for line in text.split("\n")
    )


# --- code and sentence boundaries in Markdown answers -------------------------------------

_FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})")
_TICKS = re.compile(r"`+")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# A sentence or clause ends at . ! ? (or , ; :) with any closing quotes or brackets, when
# white space or the end of the text follows: the dots in "1.2", "main.rs" or a URL end
# nothing. A run of newlines is a boundary too.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)[ \t]*|\n+")
_CLAUSE_END = re.compile(r"[.!?,;:]+[\"')\]]*(?=\s|$)|\n")


def _scan_code(text: str, *, streaming: bool) -> tuple[list[tuple[int, int]], str | None]:
    """Code spans of Markdown ``text`` (fenced blocks, inline code) and the kind it ends in."""
    spans: list[tuple[int, int]] = []
    prose: list[tuple[int, int]] = []
    fence: str | None = None
    fence_start = prose_start = pos = 0
    for line in text.splitlines(keepends=True):
        m = _FENCE_LINE.match(line)
        if fence is None and m:
            prose.append((prose_start, pos))
            fence, fence_start = m.group(1), pos
        elif (
            fence is not None
            and m
            and m.group(1)[0] == fence[0]
            and len(m.group(1)) >= len(fence)
            and not line[m.end() :].strip()
        ):
            spans.append((fence_start, pos + len(line)))
            fence, prose_start = None, pos + len(line)
        pos += len(line)
    if fence is not None:
        spans.append((fence_start, len(text)))
        return sorted(spans + _inline_code(text, prose, streaming=False)[0]), "block"
    prose.append((prose_start, len(text)))
    inline, open_inline = _inline_code(text, prose, streaming=streaming)
    return sorted(spans + inline), "inline" if open_inline else None


def _inline_code(
    text: str, regions: list[tuple[int, int]], *, streaming: bool
) -> tuple[list[tuple[int, int]], bool]:
    """Inline code spans (matching backtick runs within one paragraph) in the regions."""
    spans: list[tuple[int, int]] = []
    still_open = False
    for start, end in regions:
        opened: tuple[int, int] | None = None  # (position, length) of the opening run
        for m in _TICKS.finditer(text, start, end):
            if opened is not None and _BLANK_LINE.search(text, opened[0], m.start()):
                opened = None  # inline code never spans paragraphs
            if opened is None:
                opened = (m.start(), len(m.group()))
            elif len(m.group()) == opened[1]:
                spans.append((opened[0], m.end()))
                opened = None
        if opened is not None and not _BLANK_LINE.search(text, opened[0], end):
            still_open = True
            if streaming:
                spans.append((opened[0], end))
    return spans, still_open and streaming


def code_spans(text: str) -> list[tuple[int, int]]:
    """Where finished Markdown ``text`` holds code, as ``(start, end)`` character ranges.

    Fenced blocks (``` or ~~~, an unclosed fence running to the end) and inline `code`
    spans; a lone backtick is not code, as Markdown shows it as it is.
    """
    return _scan_code(text, streaming=False)[0]


def ends_in_code(text: str) -> str | None:
    """Where text that is still streaming in stops: ``"block"``, ``"inline"`` code, or None."""
    return _scan_code(text, streaming=True)[1]


def answer_sentences(text: str) -> list[tuple[str, bool]]:
    """An answer cut into sentences and fenced code blocks: ``(piece, is_code_block)``.

    A dot ends a sentence only when white space or the end follows, and never inside code,
    so "TLS 1.2", "src/main.rs", a URL or `x.y` stay whole. Unlike ``split_sentences``
    (for passages, which are hard-wrapped), every line break ends a piece, since answers
    put list items on lines of their own. ``"".join`` of the pieces gives ``text`` back.
    """
    spans = code_spans(text)
    blocks = [(s, e) for s, e in spans if _FENCE_LINE.match(text, s)]
    inline = [(s, e) for s, e in spans if (s, e) not in blocks]
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for start, end in [*blocks, (len(text), len(text))]:
        cut = pos
        for m in _SENTENCE_END.finditer(text, pos, start):
            if any(s <= m.start() < e for s, e in inline):
                continue
            if m.group().startswith("\n") and m.start() > cut:
                pieces.append((text[cut : m.start()], False))
                cut = m.start()
            pieces.append((text[cut : m.end()], False))
            cut = m.end()
        if cut < start:
            pieces.append((text[cut:start], False))
        if end > start:
            pieces.append((text[start:end], True))
        pos = end
    return [p for p in pieces if p[0]]


def is_clause_end(text: str, at: int) -> bool:
    """Whether ``text[at:]`` starts a sentence or clause end: punctuation, then a space.

    ``text`` must reach past the punctuation (to the white space or the end that decides).
    """
    return _CLAUSE_END.match(text, at) is not None


def redacted(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
