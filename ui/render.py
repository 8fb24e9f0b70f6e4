"""Safe rendering of model output and document text, and the citation cards."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from rag.errors import error_id, with_id
from rag.guard.injection import describe
from rag.guard.output import NO_LINKS, LinkPolicy, safe_markdown, safe_stream
from rag.text import content_words, split_sentences

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>:~$=^&])")
_SPACE_RUN = re.compile(r"(?<= ) +|^ +", re.MULTILINE)
NBSP = "&nbsp;"  # an entity, so no Markdown parser trims it as whitespace
HIGHLIGHT = "orange-background"

logger = logging.getLogger(__name__)


def show_error(
    exc: BaseException, record: Callable[[BaseException], None] | None, **kw: Any
) -> None:
    """Show an error with its id; ``record`` (``RagService.record_error``) logs that id.

    ``kw`` goes to ``st.error`` (an icon).
    """
    if record is not None:
        record(exc)
    else:
        logger.warning("error %s shown on a page: %s", error_id(exc), exc)
    st.error(escape_markdown(with_id(exc)), **kw)


def escape_markdown(text: str) -> str:
    """Document or user text shown literally: no markup, no images, no math, no directives."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _literal(text: str, *, highlight: bool) -> str:
    """One piece of text as Markdown that shows exactly its characters (see passage_markdown)."""
    out = []
    for line in text.split("\n"):
        body = line.strip()
        if highlight and body:
            lead, trail = line[: len(line) - len(line.lstrip())], line[len(line.rstrip()) :]
            out.append(escape_markdown(lead) + f":{HIGHLIGHT}[{escape_markdown(body)}]" + trail)
        else:
            out.append(escape_markdown(line))
    return "\n".join(out)


def _keep_layout(markdown: str) -> str:
    """Line breaks, indentation and runs of spaces survive Markdown's whitespace folding."""
    markdown = _SPACE_RUN.sub(lambda m: NBSP * len(m.group(0)), markdown.replace("\t", NBSP * 4))
    lines = markdown.split("\n")
    # A line followed by another non-blank line ends in a hard break (a trailing backslash);
    # blank lines stay paragraph breaks.
    return "\n".join(
        line + "\\" if line.strip() and i + 1 < len(lines) and lines[i + 1].strip() else line
        for i, line in enumerate(lines)
    )


def sanitize_answer(text: str, policy: LinkPolicy | None = None) -> str:
    """Model output as markdown, minus what could fetch, link away or misrender.

    Links and images render only where ``policy`` allows (None: nowhere); every other URL
    is shown as text in inline code, so the browser never fetches or opens a URL the model
    wrote. HTML entities show literally and ``$`` is escaped so prices are not typeset as
    math. HTML is escaped by Streamlit itself (ragchat never passes ``unsafe_allow_html``).
    See ``rag.guard.output.safe_markdown``.
    """
    return safe_markdown(text, policy or NO_LINKS)


def guard_stream(pieces: Iterable[str], policy: LinkPolicy | None = None) -> Iterator[str]:
    """``sanitize_answer`` of the whole answer so far, once per streamed piece.

    Each value replaces the previous one on screen (``placeholder.markdown(value)``, not
    ``st.write_stream``, which would append them): a link or an image split over pieces is
    judged on the text that has arrived, and judged again when the rest arrives.
    """
    return safe_stream(pieces, policy or NO_LINKS)


def cited_claims(answer: str, n: int) -> list[str]:
    """The sentences of the answer that cite source ``n``."""
    return [s for s in split_sentences(answer) if f"[{n}]" in s]


def cited_sentences(passage: str, claims: list[str]) -> list[bool]:
    """For each of ``split_sentences(passage)``: does one of the claims draw on it?"""
    parts = split_sentences(passage)
    claim_words = set().union(*(content_words(c) for c in claims)) if claims else set()
    scores = [len(content_words(s) & claim_words) / (len(content_words(s)) or 1) for s in parts]
    best = max(scores, default=0.0)
    return [best > 0 and score >= max(0.25, best * 0.6) for score in scores]


def passage_markdown(passage: str, claims: list[str]) -> str:
    """The passage as Markdown that displays exactly its text, cited sentences highlighted.

    Every character shows as stored: Markdown and HTML are escaped (``**`` and ``<b>`` show
    as typed), line breaks and indentation are kept, nothing is inserted between sentences.
    Whole sentences are highlighted, never fragments of words such as ``postgresql.conf``.
    """
    parts = split_sentences(passage)
    marks = cited_sentences(passage, claims)
    return _keep_layout(
        "".join(_literal(part, highlight=hit) for part, hit in zip(parts, marks, strict=True))
    )


def highlight_passage(passage: str, claims: list[str]) -> str:
    """Alias of ``passage_markdown`` (the name earlier callers use)."""
    return passage_markdown(passage, claims)


def citation_name(citation: Mapping[str, Any]) -> str:
    """How a citation's document is named: its title, else its file name."""
    return str(citation.get("title") or Path(str(citation.get("source", ""))).name)


def citation_cards(
    citations: Sequence[dict[str, Any]],
    answer: str,
    key: str,
    on_source: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """The citations of an answer as cards, three to a row (``key``: the cards' prefix)."""
    if not citations:
        return
    columns = st.columns(min(len(citations), 3))
    for i, citation in enumerate(citations):
        with columns[i % len(columns)]:
            citation_card(citation, answer, key=f"{key}-{citation['n']}", on_source=on_source)


def citation_card(
    citation: dict[str, Any],
    answer: str,
    key: str,
    on_source: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """A compact card: [n], file name, page, the passage with cited sentences highlighted.

    ``key`` names the card's container (CSS class ``st-key-<key>``); ``on_source`` opens the
    source view of the citation (its "Source" button is shown only when one is given).
    """
    name = citation_name(citation)
    page = citation.get("page")
    where = f" · page {page}" if page is not None else ""
    text = str(citation.get("text", ""))
    with st.container(border=True, key=key):
        st.markdown(f"**[{citation['n']}]** {escape_markdown(name)}{where}")
        if citation.get("inferred"):
            st.caption("The model did not cite this; ragchat matched it to the answer.")
        if citation.get("flags"):
            st.warning(
                f"{escape_markdown(describe(citation['flags']))} "
                "This passage may try to steer the answer.",
                icon=":material/gpp_maybe:",
            )
        claims = cited_claims(answer, int(citation["n"]))
        preview = text if len(text) <= 400 else text[:400].rsplit(" ", 1)[0] + " …"
        st.markdown(passage_markdown(preview, claims))
        if on_source is not None and st.button(
            "Source", key=f"{key}-source", icon=":material/open_in_full:", type="tertiary"
        ):
            on_source(citation)


def answer_details(meta: dict[str, Any]) -> str:
    """One unobtrusive line: from the cache or not, model, prompt version and timings."""
    timings = meta.get("timings") or {}
    parts = [str(meta.get("model", "")), str(meta.get("prompt_version", ""))]
    if meta.get("cached"):
        parts.insert(0, "from the cache")
    if "retrieval_ms" in timings:  # not for answers given without retrieval (reviewed ones)
        parts.append(f"retrieval {timings['retrieval_ms']:.0f} ms")
    if timings:
        parts.append(f"first token {timings.get('first_token_ms', 0) / 1000:.1f} s")
        parts.append(f"total {timings.get('total_ms', 0) / 1000:.1f} s")
    return escape_markdown(" · ".join(p for p in parts if p))
