"""Reviewed answers as ``ragchat eval`` dataset lines, so the regression suite grows from use.

A line names the reviewed question, the documents its reviewed answer cites (by the name
users know them by, which ``ragchat eval`` matches against titles and path suffixes), their
pages when every source has one, a passage when there is one source (the start of the cited
passage, which the right chunk must contain) and the reviewed answer as the reference.
"""

from __future__ import annotations

from typing import Any

from rag.citations import strip_markers
from rag.review.store import ReviewItem
from rag.text import split_sentences

PASSAGE_CHARS = 160


def _excerpt(text: str) -> str:
    """The first sentence of a passage, at most ``PASSAGE_CHARS`` characters (whole words)."""
    first = next((s for s in split_sentences(text) if s.strip()), "")
    first = " ".join(first.split())
    if len(first) <= PASSAGE_CHARS:
        return first
    return first[:PASSAGE_CHARS].rsplit(" ", 1)[0]


def eval_line(item: ReviewItem) -> dict[str, Any] | None:
    """The dataset line of a served item (None for one with nothing to cite)."""
    if not item.served or not item.sources:
        return None
    sources = item.sources
    line: dict[str, Any] = {
        "question": item.standalone or item.question,
        "sources": list(dict.fromkeys(s.name for s in sources)),
    }
    pages = [s.page for s in sources if s.page is not None and s.page >= 1]
    if len(pages) == len(sources):
        line["pages"] = sorted(set(pages))
    if len(sources) == 1:
        passage = _excerpt(sources[0].text)
        if passage:
            line["passage"] = passage
    line["reference_answer"] = strip_markers(item.reference or "").strip()
    line["review_id"] = item.id
    return line
