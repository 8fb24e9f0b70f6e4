"""The ``ragchat eval`` metrics of a batch whose rows carry labels (``sources``/``pages``).

Scores come from ``rag.evaluation`` itself (``score_item``, ``aggregate``,
``answer_metrics``), so a batch run and ``ragchat eval --answers`` report the same
numbers for the same questions.
"""

from __future__ import annotations

from typing import Any

from rag.evaluation import (
    CUTOFFS,
    AnsweredItem,
    EvalItem,
    Retrieved,
    aggregate,
    answer_metrics,
    score_item,
)


def _retrieved(entries: list[list[Any]]) -> list[Retrieved]:
    return [Retrieved(source=s, page=p, text="", title=t) for s, p, t in entries]


def batch_metrics(
    items: dict[int, dict[str, Any]], rows: dict[int, dict[str, Any]]
) -> dict[str, Any] | None:
    """Retrieval and answer metrics over the labelled rows; None when none is labelled.

    ``items`` are the job's inputs by index; ``rows`` its result rows (with ``_eval``).
    """
    scored, answered_items, answered = [], [], []
    for index, item in sorted(items.items()):
        data = rows.get(index, {}).get("_eval")
        if not item.get("sources") or not data or "ranked" not in data:
            continue
        labelled = EvalItem(
            question=item["question"],
            sources=tuple(item["sources"]),
            pages=tuple(item.get("pages") or ()),
            reference_answer=item.get("reference_answer"),
            line=index + 1,
        )
        scored.append(score_item(labelled, _retrieved(data["ranked"]), CUTOFFS))
        answer = data.get("answer")
        if answer is not None:
            answered_items.append(labelled)
            answered.append(
                AnsweredItem(
                    _retrieved(answer["citations"]),
                    bool(answer["abstained"]),
                    float(answer["total_ms"]),
                    float(answer["first_token_ms"]),
                )
            )
    if not scored:
        return None
    metrics: dict[str, Any] = {"labelled": len(scored), **aggregate(scored, CUTOFFS)}
    if answered:
        metrics.update(answer_metrics(answered_items, answered))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
