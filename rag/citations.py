"""Citations: numbered sources shown to the model, and the [n] markers in its answer.

``CitationStream`` filters the answer as it streams: a marker that points at a source is
renumbered in order of first citation (so the first source cited reads [1]), a marker that
points at nothing (a hallucinated [9]) is dropped, and the cited sources are collected in
that same order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from rag.text import answer_sentences, content_words, ends_in_code, is_clause_end

_MARKER = re.compile(r"\[(\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*)\]")
_MAX_MARKER = 24  # longest text a marker may span before it is judged not to be one
_MARKER_CHARS = set("0123456789,; ")
_MARKER_AND_SPACE = re.compile(r"\s*\[\d+(?:\s*[,;]\s*\d+)*\]")  # what strip_markers removes
# Characters that join the halves of a number, version, path or URL ("1.2", "main.rs").
_GLUE = ".,:/\\-_"
_CLAUSE_PUNCTUATION = ".!?,;:"
_GLUED = re.compile(r"[\w.]$")  # inline code before " [n]": a word or a dot


@dataclass(frozen=True)
class Source:
    """A chunk shown to the model as source ``n``."""

    n: int
    source: str
    page: int | None
    chunk_id: str
    text: str
    heading: str | None = None
    relevance: float | None = None
    title: str | None = None
    flags: tuple[str, ...] = ()  # injection rules that fired on it at ingestion

    @classmethod
    def from_document(cls, n: int, doc: Document) -> Source:
        """Number a retrieved langchain Document."""
        meta = doc.metadata
        return cls(
            n=n,
            source=str(meta.get("source", "")),
            page=meta.get("page"),
            chunk_id=str(meta.get("chunk_id", doc.id or "")),
            text=doc.page_content,
            heading=meta.get("heading"),
            relevance=meta.get("relevance"),
            title=meta.get("title"),
            flags=tuple(meta.get("flags") or ()),
        )

    @property
    def name(self) -> str:
        """The name shown to the model and the user (an upload's original name)."""
        return self.title or Path(self.source).name or self.source

    def label(self) -> str:
        """``name, page N (section "...")``."""
        parts = [self.name]
        if self.page is not None:
            parts.append(f"page {self.page}")
        text = ", ".join(parts)
        if self.heading:
            text += f' (section "{self.heading}")'
        return text


@dataclass(frozen=True)
class Citation:
    """A source the answer cites, numbered as the user sees it.

    ``support`` is the share of the citing sentences' content words found in the passage
    (a cheap check that the passage says what the answer claims); ``inferred`` marks a
    citation that ragchat attached because the model cited nothing.
    """

    n: int
    source: Source
    support: float = 0.0
    inferred: bool = False

    def to_json(self) -> dict[str, Any]:
        """The shape of ``ragchat ask --json`` citations."""
        return {
            "n": self.n,
            "source": self.source.source,
            "title": self.source.name,
            "page": self.source.page,
            "chunk_id": self.source.chunk_id,
            "text": self.source.text,
            "support": round(self.support, 2),
            "inferred": self.inferred,
            "flags": list(self.source.flags),
        }


@dataclass
class CitationStream:
    """Rewrites streamed answer text: valid markers renumbered, invalid ones removed.

    A marker never splits a token: one the model put inside a number, version, path or
    URL ("TLS 1[1].2", "src/main[1].rs") or, after a space, inside inline code
    ("`main [1].rs`") is taken out and put at the next sentence or clause end, before its
    punctuation ("TLS 1.2 is required [1]."). Inside a fenced code block brackets are code.
    To decide, a little text is held back: a possible marker until it closes, the two
    characters after a marker, white space before a possible marker, and, while a marker
    waits for its place, punctuation until the character after it arrives.
    """

    sources: list[Source]
    citations: list[Citation] = field(default_factory=list)
    _pending: str = ""
    _by_n: dict[int, Source] = field(default_factory=dict)
    _display: dict[int, int] = field(default_factory=dict)
    _deferred: list[int] = field(default_factory=list)
    text: str = ""

    def __post_init__(self) -> None:
        self._by_n = {s.n: s for s in self.sources}

    def feed(self, piece: str) -> str:
        """Take the next streamed piece; return the text that can be shown now."""
        self._pending += piece
        return self._release(final=False)

    def finish(self) -> str:
        """Flush what was held back at the end of the stream."""
        shown = self._release(final=True)
        if self._deferred:  # no clause end came: the markers close the answer
            marker = self._deferred_text(self.text)
            self._deferred = []
            shown += marker
            self.text += marker
        return shown

    def _release(self, final: bool) -> str:
        p, i = self._pending, 0
        out: list[str] = []

        def shown() -> str:
            return self.text + "".join(out)

        while i < len(p):
            ch = p[i]
            if ch in " \t":
                j = i
                while j < len(p) and p[j] in " \t":
                    j += 1
                if j == len(p) and not final:
                    break  # a marker may follow: its space may have to go with it
                if j == len(p) or p[j] != "[":
                    out.append(p[i:j])
                    i = j
                    continue
                ch = "["
            else:
                j = i
            if ch == "[":
                before = shown()
                code = ends_in_code(before)
                if code == "block":
                    out.append(p[i : j + 1])
                    i = j + 1
                    continue
                end = p.find("]", j)
                if end == -1:
                    rest = p[j:]
                    if not final and len(rest) <= _MAX_MARKER and set(rest[1:]) <= _MARKER_CHARS:
                        break  # may still become a marker: wait for more text
                    out.append(p[i : j + 1])
                    i = j + 1
                    continue
                candidate = p[j : end + 1]
                if not _MARKER.fullmatch(candidate):
                    out.append(p[i : j + 1])
                    i = j + 1
                    continue
                space = p[i:j]
                if code:
                    # Code brackets stay, unless a cited source follows a word after a space.
                    numbers = _numbers(candidate)
                    if space and _GLUED.search(before) and all(n in self._by_n for n in numbers):
                        self._deferred += self._display_numbers(numbers)
                    else:
                        out.append(p[i : end + 1])
                    i = end + 1
                    continue
                after = p[end + 1 : end + 3]
                if not final and (not after or (after[0] in _GLUE and len(after) < 2)):
                    break  # what follows decides whether the marker splits a token
                numbers = self._display_numbers(_numbers(candidate))
                splits = (
                    bool(before)
                    and not before[-1].isspace()
                    and bool(after)
                    and (after[0].isalnum() or (after[0] in _GLUE and after[1:2].isalnum()))
                )
                if splits:
                    self._deferred += numbers
                elif self._deferred or numbers:
                    out.append(space + self._format([*self._deferred, *numbers]))
                    self._deferred = []
                else:
                    out.append(space)  # a marker that points at nothing is dropped
                i = end + 1
                continue
            if self._deferred and (ch in _CLAUSE_PUNCTUATION or ch == "\n"):
                run = i
                while run < len(p) and p[run] in _CLAUSE_PUNCTUATION + "\"')]":
                    run += 1
                if run == len(p) and not final and ch != "\n":
                    break  # "1." may go on as "1.2": wait for the next character
                before = shown()
                if is_clause_end(p, i) and not ends_in_code(before):
                    out.append(self._deferred_text(before))
                    self._deferred = []
            out.append(ch)
            i += 1
        self._pending = p[i:]
        text = "".join(out)
        self.text += text
        return text

    def _display_numbers(self, numbers: list[int]) -> list[int]:
        """Display numbers of the markers' sources, recording each first citation."""
        shown: list[int] = []
        for n in numbers:
            source = self._by_n.get(n)
            if source is None:
                continue  # points at no source shown to the model: drop it
            if n not in self._display:
                self._display[n] = len(self._display) + 1
                self.citations.append(Citation(self._display[n], source))
            if self._display[n] not in shown:
                shown.append(self._display[n])
        return shown

    @staticmethod
    def _format(numbers: list[int]) -> str:
        return "".join(f"[{d}]" for d in dict.fromkeys(numbers))

    def _deferred_text(self, before: str) -> str:
        space = "" if not before or before[-1].isspace() else " "
        return space + self._format(self._deferred)


def _numbers(marker: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", marker)]


MIN_SUPPORT = 0.5  # share of a sentence's words a passage must contain to be attributed


def strip_markers(text: str) -> str:
    """``text`` without its citation markers ("[1]", "[2, 3]") and the blanks before them.

    For text that is used without its sources: a reference answer, a condensed question.
    """
    return _MARKER_AND_SPACE.sub("", text)


def support(claim: str, passage: str) -> float:
    """Share of the claim's content words that the passage contains (0..1)."""
    claim_words = content_words(_MARKER.sub(" ", claim))
    if not claim_words:
        return 0.0
    return len(claim_words & content_words(passage)) / len(claim_words)


def cited_support(
    pieces: Sequence[tuple[str, bool]], n: int, passage: str, *, otherwise: str = ""
) -> float:
    """Support of source ``n`` by the sentences of an answer that cite it ("[n]").

    ``pieces``: the answer as ``answer_sentences`` cuts it (code blocks never count).
    ``otherwise``: the claim measured when no sentence cites it (none: support 0).
    """
    citing = " ".join(s for s, code in pieces if not code and f"[{n}]" in s)
    return support(citing or otherwise, passage)


def verify(
    answer: str, sources: list[Source], citations: list[Citation]
) -> tuple[str, list[Citation]]:
    """Score each citation's support; attach citations when the model cited nothing.

    A model that cites returns its citations with their support measured. A model that
    answers without any marker (small local models often do) gets, for each sentence that
    one source clearly supports (at least ``MIN_SUPPORT`` of its content words), that
    source's marker put before the sentence's end punctuation and the citation flagged
    ``inferred``. Sentences end only where white space follows, so a marker never lands
    inside "TLS 1.2", "src/main.rs" or a URL, and fenced code blocks get none.
    """
    pieces = answer_sentences(answer)
    if citations:
        measured = [
            Citation(c.n, c.source, cited_support(pieces, c.n, c.source.text), c.inferred)
            for c in citations
        ]
        return answer, measured
    found: list[Citation] = []
    numbers: dict[int, int] = {}
    out: list[str] = []
    for sentence, code in pieces:
        best, best_support = None, 0.0
        if not code and len(content_words(sentence)) >= 3:
            for source in sources:
                score = support(sentence, source.text)
                if score > best_support:
                    best, best_support = source, score
        if best is None or best_support < MIN_SUPPORT:
            out.append(sentence)
            continue
        if best.n not in numbers:
            numbers[best.n] = len(numbers) + 1
            found.append(Citation(numbers[best.n], best, best_support, inferred=True))
        out.append(_append_marker(sentence, f"[{numbers[best.n]}]"))
    return "".join(out), found


_SENTENCE_TAIL = re.compile(r"[.!?:;,]*\s*$")


def _append_marker(sentence: str, marker: str) -> str:
    """``sentence`` with `` marker`` put before its end punctuation ("… later [1].")."""
    cut = _SENTENCE_TAIL.search(sentence)
    at = cut.start() if cut else len(sentence)
    return f"{sentence[:at]} {marker}{sentence[at:]}"


def resolve_citations(answer: str, sources: list[Source]) -> tuple[str, list[Citation]]:
    """Apply ``CitationStream`` to a whole answer at once."""
    stream = CitationStream(sources)
    text = stream.feed(answer) + stream.finish()
    return text, stream.citations
