"""Citations: numbered sources shown to the model, and the [n] markers in its answer.

``CitationStream`` filters the answer as it streams: a marker that points at a source is
renumbered in order of first citation (so the first source cited reads [1]), a marker that
points at nothing (a hallucinated [9]) is dropped, and the cited sources are collected in
that same order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from rag.text import content_words, split_sentences

_MARKER = re.compile(r"\[(\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*)\]")
_MAX_MARKER = 24  # longest text a marker may span before it is judged not to be one
_MARKER_CHARS = set("0123456789,; ")


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
        }


def format_sources(sources: list[Source]) -> str:
    """The sources block of the answer prompt."""
    return "\n\n".join(f"[{s.n}] {s.label()}\n{s.text}" for s in sources)


@dataclass
class CitationStream:
    """Rewrites streamed answer text: valid markers renumbered, invalid ones removed."""

    sources: list[Source]
    citations: list[Citation] = field(default_factory=list)
    _pending: str = ""
    _by_n: dict[int, Source] = field(default_factory=dict)
    _display: dict[int, int] = field(default_factory=dict)
    text: str = ""

    def __post_init__(self) -> None:
        self._by_n = {s.n: s for s in self.sources}

    def feed(self, piece: str) -> str:
        """Take the next streamed piece; return the text that can be shown now."""
        self._pending += piece
        out: list[str] = []
        while self._pending:
            start = self._pending.find("[")
            if start == -1:
                out.append(self._pending)
                self._pending = ""
                break
            out.append(self._pending[:start])
            rest = self._pending[start:]
            if (self.text.count("`") + sum(o.count("`") for o in out)) % 2:
                # Inside `code` (or a fence): brackets there are subscripts, not citations.
                out.append(rest[0])
                self._pending = rest[1:]
                continue
            end = rest.find("]")
            if end == -1:
                if len(rest) <= _MAX_MARKER and set(rest[1:]) <= _MARKER_CHARS:
                    self._pending = rest  # may still become a marker: wait for more text
                    break
                out.append(rest[0])
                self._pending = rest[1:]
                continue
            candidate = rest[: end + 1]
            if _MARKER.fullmatch(candidate):
                out.append(self._rewrite(candidate))
            else:
                out.append(rest[0])
                self._pending = rest[1:]
                continue
            self._pending = rest[end + 1 :]
        shown = "".join(out)
        self.text += shown
        return shown

    def finish(self) -> str:
        """Flush what was held back at the end of the stream."""
        shown, self._pending = self._pending, ""
        self.text += shown
        return shown

    def _rewrite(self, marker: str) -> str:
        numbers = [int(x) for x in re.findall(r"\d+", marker)]
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
        return "".join(f"[{d}]" for d in shown)


MIN_SUPPORT = 0.5  # share of a sentence's words a passage must contain to be attributed


def support(claim: str, passage: str) -> float:
    """Share of the claim's content words that the passage contains (0..1)."""
    claim_words = content_words(_MARKER.sub(" ", claim))
    if not claim_words:
        return 0.0
    return len(claim_words & content_words(passage)) / len(claim_words)


def verify(
    answer: str, sources: list[Source], citations: list[Citation]
) -> tuple[str, list[Citation]]:
    """Score each citation's support; attach citations when the model cited nothing.

    A model that cites returns its citations with their support measured. A model that
    answers without any marker (small local models often do) gets, for each sentence that
    one source clearly supports (at least ``MIN_SUPPORT`` of its content words), that
    source's marker appended and the citation flagged ``inferred``.
    """
    sentences = split_sentences(answer)
    if citations:
        measured = []
        for c in citations:
            claims = " ".join(s for s in sentences if f"[{c.n}]" in s)
            measured.append(Citation(c.n, c.source, support(claims, c.source.text), c.inferred))
        return answer, measured
    found: list[Citation] = []
    numbers: dict[int, int] = {}
    out: list[str] = []
    for sentence in sentences:
        best, best_support = None, 0.0
        if len(content_words(sentence)) >= 3:
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
        body = sentence.rstrip()
        tail = sentence[len(body) :]
        stripped = body.rstrip(".!?")
        out.append(f"{stripped} [{numbers[best.n]}]{body[len(stripped) :]}{tail}")
    return "".join(out), found


def resolve_citations(answer: str, sources: list[Source]) -> tuple[str, list[Citation]]:
    """Apply ``CitationStream`` to a whole answer at once."""
    stream = CitationStream(sources)
    text = stream.feed(answer) + stream.finish()
    return text, stream.citations
