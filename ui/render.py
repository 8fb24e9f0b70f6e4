"""Safe rendering of model output and document text, and the citation cards."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import streamlit as st

from rag.text import content_words, split_sentences

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>:~$=^])")


def escape_markdown(text: str) -> str:
    """Document or user text shown literally: no markup, no images, no math, no directives."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def sanitize_answer(text: str) -> str:
    """Model output as markdown, minus what could fetch or misrender.

    Images (``![alt](url)``) are neutralised so the browser never fetches a URL the model
    wrote, and ``$`` is escaped so prices are not typeset as math. HTML is escaped by
    Streamlit itself (ragchat never passes ``unsafe_allow_html``).
    """
    return text.replace("![", "!\\[").replace("$", "\\$")


def guard_stream(pieces: Iterable[str]) -> Iterator[str]:
    """``sanitize_answer`` applied while streaming, even when "!" and "[" arrive apart."""
    held = ""
    for piece in pieces:
        text, held = held + piece, ""
        if text.endswith("!"):
            text, held = text[:-1], "!"
        if text:
            yield sanitize_answer(text)
    if held:
        yield held


def cited_claims(answer: str, n: int) -> list[str]:
    """The sentences of the answer that cite source ``n``."""
    return [s for s in split_sentences(answer) if f"[{n}]" in s]


def highlight_passage(passage: str, claims: list[str]) -> str:
    """The passage as escaped markdown, with the sentences the claims draw on highlighted."""
    sentences = split_sentences(passage) or [passage]
    claim_words = set().union(*(content_words(c) for c in claims)) if claims else set()
    scores = [len(content_words(s) & claim_words) / (len(content_words(s)) or 1) for s in sentences]
    best = max(scores, default=0.0)
    out = []
    for sentence, score in zip(sentences, scores, strict=True):
        body = escape_markdown(sentence.strip())
        if body and best > 0 and score >= max(0.25, best * 0.6):
            out.append(f":orange-background[{body}]")
        else:
            out.append(body)
    return " ".join(x for x in out if x)


def citation_card(citation: dict[str, Any], answer: str, key: str) -> None:
    """A compact card: [n], file name, page, the passage with cited sentences highlighted.

    ``key`` names the card's container (CSS class ``st-key-<key>``).
    """
    name = citation.get("title") or Path(str(citation.get("source", ""))).name
    page = citation.get("page")
    where = f" · page {page}" if page is not None else ""
    text = str(citation.get("text", ""))
    with st.container(border=True, key=key):
        st.markdown(f"**[{citation['n']}]** {escape_markdown(name)}{where}")
        if citation.get("inferred"):
            st.caption("The model did not cite this; ragchat matched it to the answer.")
        claims = cited_claims(answer, int(citation["n"]))
        preview = text if len(text) <= 400 else text[:400].rsplit(" ", 1)[0] + " …"
        st.markdown(highlight_passage(preview, claims))
        with st.expander("Whole passage"):
            st.markdown(highlight_passage(text, claims))
            st.caption(f"chunk {citation.get('chunk_id', '')}")


def answer_details(meta: dict[str, Any]) -> str:
    """One unobtrusive line: model, prompt version and timings."""
    timings = meta.get("timings") or {}
    parts = [str(meta.get("model", "")), str(meta.get("prompt_version", ""))]
    if timings:
        parts.append(f"retrieval {timings.get('retrieval_ms', 0):.0f} ms")
        parts.append(f"first token {timings.get('first_token_ms', 0) / 1000:.1f} s")
        parts.append(f"total {timings.get('total_ms', 0) / 1000:.1f} s")
    return escape_markdown(" · ".join(p for p in parts if p))
