"""The Review page: answers worth a second look, for editors and admins.

Each queued answer shows why it is there (rated down, weak citations, abstained, sources
changed), who asked what and when, and the answer with its citation cards. **Right** marks
it right: from then on it is served, citing its own sources, for the same question. **Wrong
— save the correction** saves the correct answer with the sources ticked below it: the
answer's own citations or passages found by searching the collections the question searched.
The service decides what the caller may see and review; the page shows what it returns.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from rag.errors import RagError, with_id
from rag.review.store import (
    ABSTAINED,
    OPEN,
    RATED_DOWN,
    RIGHT,
    SOURCES_CHANGED,
    WEAK_CITATIONS,
    WRONG,
    ReviewItem,
)
from rag.text import safe_label
from ui.render import (
    citation_cards,
    citation_name,
    escape_markdown,
    sanitize_answer,
    show_error,
)
from ui.resources import Resources
from ui.state import SessionState, session, widget_value

logger = logging.getLogger(__name__)

REASONS: dict[str, tuple[str, Any]] = {
    RATED_DOWN: ("rated down", "red"),
    WEAK_CITATIONS: ("weak citations", "orange"),
    ABSTAINED: ("abstained", "gray"),
    SOURCES_CHANGED: ("sources changed", "violet"),
}
VIEWS = {OPEN: "Open", WRONG: "Wrong", RIGHT: "Right"}
PREVIEW_CHARS = 300


def page(res: Resources) -> None:
    """Render the review page."""
    state = session()
    st.title("Review")
    try:
        counts = res.service.review.counts(res.caller)
    except RagError as exc:  # not an editor or admin
        show_error(exc, res.service.record_error, icon=":material/block:")
        return
    _notice(state)
    view = st.radio(
        "Show",
        list(VIEWS),
        format_func=lambda v: f"{VIEWS[v]} ({counts.get(v, 0)})",
        horizontal=True,
        key="review-view",
    )
    items = res.service.review.queue(res.caller, view)
    if not items:
        st.info("Nothing to review." if view == OPEN else "No answers marked so yet.")
        return
    by_id = {item.id: item for item in items}
    chosen = st.selectbox(
        "Answer", list(by_id), format_func=lambda i: _title(by_id[i]), key=f"review-item-{view}"
    )
    item = by_id.get(chosen) or items[0]
    _show(res, item)
    _form(res, state, item)


def _notice(state: SessionState) -> None:
    notice, state.review_notice = state.review_notice, None
    if notice is None:
        return
    kind, text = notice
    if kind == "error":
        st.error(escape_markdown(text), icon=":material/block:")
    else:
        st.success(escape_markdown(text), icon=":material/check:")


def _title(item: ReviewItem) -> str:
    reasons = ", ".join(REASONS.get(r, (r, ""))[0] for r in item.reasons)
    return safe_label(f"#{item.id} · {reasons} · {' '.join(item.question.split())}", 120)


def _show(res: Resources, item: ReviewItem) -> None:
    """The queued answer: reasons, who asked, the question, the answer and its citations."""
    names = {c.id: c.name for c in res.service.access.collections(res.caller)}
    searched = (
        "all collections"
        if item.collections is None
        else ", ".join(names.get(c, c) for c in sorted(item.collections)) or "no collection"
    )
    with st.container(border=True, key=f"review-{item.id}"):
        with st.container(horizontal=True):
            for reason in item.reasons:
                label, color = REASONS.get(reason, (reason, "gray"))
                st.badge(label, color=color)
        st.caption(
            escape_markdown(
                f"Asked by {item.asked_by_name} at {item.asked_at} · {item.model} · "
                f"{item.prompt_version} · searched {searched}"
            )
        )
        st.markdown("**Question**")
        st.markdown(escape_markdown(item.question))
        if item.standalone and item.standalone != item.question:
            st.caption(f"As a question on its own: {escape_markdown(item.standalone)}")
        st.markdown("**Answer**")
        if item.answer:
            st.markdown(sanitize_answer(item.answer))
        else:
            st.caption("No text.")
        citation_cards(list(item.citations), item.answer, f"review-{item.id}-cite")
        if item.status != OPEN or item.reviewed_at:
            _verdict(item)


def _verdict(item: ReviewItem) -> None:
    """The latest review: verdict, reviewer, the correction and its sources."""
    verdict = {RIGHT: "right", WRONG: "wrong"}.get(item.status, "reopened")
    st.markdown(
        f"**Reviewed {verdict}** by {escape_markdown(item.reviewer_name or '')} at "
        f"{escape_markdown(item.reviewed_at or '')}"
        + (" · served for this question" if item.served else "")
    )
    if item.correction:
        st.markdown(sanitize_answer(item.correction))
    if item.sources and item.status != RIGHT:
        citation_cards(
            [{**s.to_json(), "n": n} for n, s in enumerate(item.sources, 1)],
            item.correction or "",
            f"review-{item.id}-source",
        )


def _form(res: Resources, state: SessionState, item: ReviewItem) -> None:
    """Right, or wrong with the correct answer and the sources it cites."""
    st.subheader("Your review")
    st.button(
        "Right",
        key=f"review-right-{item.id}",
        icon=":material/check:",
        help="The answer is right: serve it, citing its own sources, for the same question.",
        on_click=_right,
        args=(res, state, item.id),
    )
    st.text_area(
        "Correct answer",
        value=item.correction or "",
        key=f"review-text-{item.id}",
        height=150,
        help="Cite the sources ticked below as [1], [2], ... in the order they were ticked.",
    )
    chosen = state.review_sources.setdefault(item.id, [s.chunk_id for s in item.sources])
    query = st.text_input(
        "Find passages in the documents this question searched",
        key=f"review-query-{item.id}",
        placeholder="keywords",
    )
    candidates = _candidates(res, state, item, query)
    st.caption("Sources of the correct answer")
    for chunk_id, candidate in candidates.items():
        with st.container(border=True, key=f"review-candidate-{item.id}-{chunk_id}"):
            page = f", page {candidate['page']}" if candidate.get("page") is not None else ""
            st.checkbox(
                escape_markdown(f"{candidate['name']}{page}"),
                value=chunk_id in chosen,
                key=f"review-source-{item.id}-{chunk_id}",
                on_change=_toggle,
                args=(state, item.id, chunk_id),
            )
            text = " ".join(str(candidate.get("text", "")).split())
            more = " …" if len(text) > PREVIEW_CHARS else ""
            st.caption(escape_markdown(text[:PREVIEW_CHARS]) + more)
    if chosen:
        cited = [
            f"[{n}] {candidates[c]['name']}" if c in candidates else f"[{n}] {c}"
            for n, c in enumerate(chosen, 1)
        ]
        st.caption(escape_markdown("Cited as " + ", ".join(cited)))
    st.button(
        "Wrong — save the correction",
        key=f"review-wrong-{item.id}",
        icon=":material/edit_note:",
        help="The answer is wrong: save the answer above with the ticked sources "
        "(or, with neither, just mark it wrong).",
        on_click=_wrong,
        args=(res, state, item.id),
    )


def _candidates(
    res: Resources, state: SessionState, item: ReviewItem, query: str
) -> dict[str, dict[str, Any]]:
    """Passages to cite: the answer's citations, the earlier correction's, search hits."""
    found: dict[str, dict[str, Any]] = {}
    for c in item.citations:
        found.setdefault(str(c["chunk_id"]), {**c, "name": citation_name(c)})
    for s in item.sources:
        found.setdefault(s.chunk_id, {**s.to_json(), "name": s.name})
    query = query.strip()
    if query:
        last = state.review_hits.get(item.id)
        if last is None or last[0] != query:
            try:
                hits = res.service.review.search(item.id, query, res.caller)
            except RagError as exc:
                show_error(exc, res.service.record_error)
                return found
            last = (query, [{**hit.to_json(), "name": hit.title} for hit in hits])
            state.review_hits[item.id] = last
        for hit in last[1]:
            found.setdefault(str(hit["chunk_id"]), hit)
    return found


def _toggle(state: SessionState, item_id: int, chunk_id: str) -> None:
    chosen = state.review_sources.setdefault(item_id, [])
    ticked = bool(widget_value(f"review-source-{item_id}-{chunk_id}"))
    if ticked and chunk_id not in chosen:
        chosen.append(chunk_id)
    elif not ticked and chunk_id in chosen:
        chosen.remove(chunk_id)


def _right(res: Resources, state: SessionState, item_id: int) -> None:
    _save(res, state, item_id, RIGHT, None, [])


def _wrong(res: Resources, state: SessionState, item_id: int) -> None:
    text = str(widget_value(f"review-text-{item_id}") or "")
    _save(res, state, item_id, WRONG, text, list(state.review_sources.get(item_id, [])))


def _save(
    res: Resources,
    state: SessionState,
    item_id: int,
    verdict: str,
    text: str | None,
    sources: list[str],
) -> None:
    try:
        item = res.service.review.review(
            item_id, verdict, res.caller, correction=text, sources=sources
        )
    except RagError as exc:  # shown on the next run, with its id (logged now)
        res.service.record_error(exc)
        state.review_notice = ("error", with_id(exc))
        return
    state.review_sources.pop(item_id, None)
    served = (
        "it is served for this question from now on"
        if item.served
        else "nothing is served (no sources)"
    )
    state.review_notice = ("success", f"#{item.id} marked {verdict}; {served}.")
