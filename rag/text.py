"""Small text helpers shared by the chain, citations and the UI: words and sentences."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# A sentence with its end punctuation, closing quotes/brackets and trailing blanks, or a
# run of newlines; the last alternative takes an unterminated tail. Together they cover
# every character, so "".join(split_sentences(t)) == t.
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+[\"')\]]*[ \t]*|\n+)|[^.!?\n]+$")

STOPWORDS = frozenset(
    """a about also an and any are as at be been being but by can could did do does doing
    for from had has have he her him his how i if in into is it its just me more most my
    not of on only or our over please she should so such than that the their them then
    there these they this those to too under us very was we were what when where which who
    whom why will with would you your""".split()
)


def content_words(text: str) -> set[str]:
    """Lower-cased words of three or more letters that are not stopwords."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS}


def split_sentences(text: str) -> list[str]:
    """Sentences (and blank-line runs), keeping every character of ``text``."""
    return _SENTENCE.findall(text)


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
