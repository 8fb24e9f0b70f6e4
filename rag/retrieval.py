"""Retrievers over the store, as langchain-core ``BaseRetriever``s."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field


class StoreRetriever(BaseRetriever):
    """The top ``k`` chunks whose relevance (0..1) reaches ``min_relevance``.

    Chunks more than ``relevance_gap`` below the best one are dropped as well.

    Returning nothing means the documents do not cover the question: the chain abstains.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any = Field(description="A FaissStore (anything with search_chunks and relevance).")
    k: int = Field(default=5, ge=1)
    min_relevance: float = Field(default=0.0, ge=0.0, le=1.0)
    relevance_gap: float = Field(default=1.0, ge=0.0, le=1.0)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        docs: list[Document] = []
        best: float | None = None
        for record, score in self.store.search_chunks(query, k=self.k):
            relevance = self.store.relevance(score)
            best = relevance if best is None else best
            if relevance < self.min_relevance or relevance < best - self.relevance_gap:
                continue
            doc = record.to_document(score)
            doc.metadata["relevance"] = relevance
            docs.append(doc)
        return docs
