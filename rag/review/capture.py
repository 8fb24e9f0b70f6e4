"""Which answers go to the review queue, and what is kept of them.

Queued when an answer ends: an abstention, and an answer whose citations are weak: a
citation whose passage holds less than ``min_support`` of the words of the sentences citing
it (``Citation.support``), one ragchat attached because the model cited nothing
(``Citation.inferred``), or no citation at all. Answers served from the review queue or a
cache, and answers cut short by a failing endpoint, are not judged again. A thumbs down
queues the stored answer it rates (``draft_of_message``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rag.review.store import ABSTAINED, RATED_DOWN, WEAK_CITATIONS, Draft

if TYPE_CHECKING:
    from rag.access.principal import Principal
    from rag.chain import Answer
    from rag.memory import Message


def answer_reasons(answer: Answer, min_support: float) -> tuple[str, ...]:
    """Why a finished answer needs a reviewer (empty: it does not).

    ``min_support`` 0 turns the weak-citation reason off.
    """
    if answer.served_from is not None or answer.cut:
        return ()
    if answer.abstained:
        return (ABSTAINED,)
    if min_support <= 0:
        return ()
    cites = answer.citations
    if not cites or any(c.inferred or c.support < min_support for c in cites):
        return (WEAK_CITATIONS,)
    return ()


def draft_of_answer(
    answer: Answer,
    reasons: tuple[str, ...],
    caller: Principal,
    collections: frozenset[str] | None,
    conversation_id: str | None,
) -> Draft:
    """A finished answer as a queue item."""
    return Draft(
        reasons=reasons,
        question=answer.question,
        standalone=answer.standalone or answer.question,
        answer=answer.text,
        citations=[c.to_json() for c in answer.citations],
        collections=collections,
        model=answer.model,
        prompt_version=answer.prompt_version,
        asked_by=caller.user_id,
        asked_by_name=caller.name,
        asked_at=datetime.now(UTC).isoformat(timespec="seconds"),
        conversation_id=conversation_id or None,
        message_id=answer.message_id,
    )


def draft_of_message(
    question: Message,
    answer: Message,
    caller: Principal,
    collections: frozenset[str] | None,
    conversation_id: str,
) -> Draft:
    """A stored answer its reader rated down, as a queue item.

    ``collections``: those its question searched, as stored with the answer (``within`` in
    its meta) or, for answers stored before that was kept, those the reader may read now.
    """
    meta: dict[str, Any] = answer.meta
    return Draft(
        reasons=(RATED_DOWN,),
        question=question.content,
        standalone=str(meta.get("standalone_question") or question.content),
        answer=answer.content,
        citations=list(meta.get("citations") or []),
        collections=collections,
        model=str(meta.get("model", "")),
        prompt_version=str(meta.get("prompt_version", "")),
        asked_by=caller.user_id,
        asked_by_name=caller.name,
        asked_at=question.created_at,
        conversation_id=conversation_id,
        message_id=answer.id,
    )


def searched(meta: dict[str, Any]) -> tuple[bool, frozenset[str] | None]:
    """The collections a stored answer's question searched: (known, collections or None)."""
    if "within" not in meta:
        return False, None
    within = meta["within"]
    return True, None if within is None else frozenset(str(c) for c in within)
