"""A reviewed answer served ahead of the model, while the documents it cites are unchanged.

Document ids are content hashes (``DocumentInfo.id``, both stores), and a chunk id starts
with its document's id: a file re-ingested with other content, or deleted, loses the chunks
the review cited, and the reviewed answer is no longer served.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from langchain_core.documents import Document

from rag.chain import Answer
from rag.citations import Citation, Source, cited_support
from rag.review.store import ReviewItem
from rag.text import answer_sentences

MODEL = "review"  # the "model" of a served reviewed answer, in metrics and the audit trail


def by_chunk_id(docs: Iterable[Document]) -> dict[str, Document]:
    """The store's chunks by their chunk id (as a review's sources name them)."""
    return {str(d.metadata.get("chunk_id", d.id)): d for d in docs}


def current_passages(item: ReviewItem, found: Sequence[Document]) -> list[Document] | None:
    """The item's cited passages as stored now, in its order; None if any changed or went.

    ``found``: the store's chunks for the item's chunk ids (those the asker may read).
    """
    by_id = by_chunk_id(found)
    passages = []
    for source in item.sources:
        doc = by_id.get(source.chunk_id)
        if doc is None or doc.metadata.get("doc_id") != source.document_id:
            return None
        passages.append(doc)
    return passages


def reviewed_answer(
    item: ReviewItem,
    question: str,
    passages: Sequence[Document],
) -> Answer:
    """The item's reviewed answer to ``question``, citing ``passages`` (its sources, now).

    Its ``timings`` are left to ``ChatEngine.serve``, which hands it out.
    """
    text = item.reference or ""
    sources = [Source.from_document(n, doc) for n, doc in enumerate(passages, 1)]
    pieces = answer_sentences(text)
    # A source no sentence cites is measured against the whole answer.
    citations = [
        Citation(s.n, s, cited_support(pieces, s.n, s.text, otherwise=text)) for s in sources
    ]
    return Answer(
        question=question,
        standalone=item.standalone or question,
        text=text,
        citations=citations,
        sources=sources,
        prompt_version=f"review-{item.id}",
        model=MODEL,
        timings={},
        tokens={"prompt": 0, "completion": 0, "estimated": False},
        abstained=False,
        served_from="review",
        within=item.collections,
    )
