"""Fit sources, history and question into the model's context window.

The question and the answer's token reserve always fit; then the best source, then recent
history (oldest turns dropped first), then the remaining sources in rank order. A source
that does not fit whole is cut after its last complete sentence that fits, never inside a
sentence; a source of which not even one sentence fits is left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.documents import Document

TokenCounter = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")
HISTORY_SHARE = 0.3  # at most this share of what is left after the best source


def approx_tokens(text: str) -> int:
    """A conservative token estimate for BPE models (about 3.5 characters a token)."""
    return math.ceil(len(text) / 3.5) if text else 0


@dataclass(frozen=True)
class Turn:
    """One message of a conversation."""

    role: str  # "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Fitted:
    """What goes into the prompt."""

    documents: list[Document]
    history: list[Turn]
    tokens: int


def cut_at_sentence(text: str, budget: int, count: TokenCounter) -> str:
    """The longest prefix of whole sentences within ``budget`` tokens ('' if none fits)."""
    if count(text) <= budget:
        return text
    ends = [m.start() for m in _SENTENCE_END.finditer(text)]
    best = ""
    lo, hi = 0, len(ends) - 1
    while lo <= hi:  # the prefix's token count grows with its length: binary search
        mid = (lo + hi) // 2
        prefix = text[: ends[mid]].rstrip()
        if count(prefix) <= budget:
            best, lo = prefix, mid + 1
        else:
            hi = mid - 1
    return best


def fit_context(
    documents: list[Document],
    history: list[Turn],
    question: str,
    *,
    window: int,
    answer_tokens: int,
    overhead: int,
    count: TokenCounter = approx_tokens,
    per_source: int = 12,
    source_count: TokenCounter | None = None,
) -> Fitted:
    """Choose what fits in ``window`` tokens.

    Args:
        documents: retrieved chunks, best first.
        history: earlier turns, oldest first.
        question: the user's question as sent to the model.
        window: the model's context window.
        answer_tokens: tokens reserved for the answer.
        overhead: tokens of the prompt template itself.
        count: counts tokens of a text.
        per_source: tokens of each source's label line.
        source_count: counts tokens of a source as the prompt shows it (default ``count``).
    """
    source_count = source_count or count
    budget = window - answer_tokens - overhead - count(question)
    used = window - budget
    if budget <= 0:
        return Fitted([], [], used)

    chosen: list[Document] = []

    def add(doc: Document, room: int) -> int:
        text = cut_at_sentence(doc.page_content, room - per_source, source_count)
        if not text:
            return 0
        if text != doc.page_content:
            doc = Document(page_content=text, metadata={**doc.metadata, "trimmed": True}, id=doc.id)
        chosen.append(doc)
        return source_count(text) + per_source

    if documents:
        budget -= add(documents[0], budget)

    history_room = int(budget * HISTORY_SHARE)
    kept: list[Turn] = []
    for turn in reversed(history):
        cost = count(turn.content) + 4
        if cost > history_room:
            break
        kept.append(turn)
        history_room -= cost
        budget -= cost
    kept.reverse()

    for doc in documents[1:]:
        if budget <= per_source:
            break
        spent = add(doc, budget)
        if spent == 0:
            break
        budget -= spent
    return Fitted(chosen, kept, window - budget)
