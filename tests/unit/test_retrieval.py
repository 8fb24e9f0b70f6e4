from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.retrieval import StoreRetriever
from rag.store import FaissStore, NewChunk
from tests.fakes import CountingEmbeddings


class FixedEmbeddings(CountingEmbeddings):
    """Texts are vectors spelled out ("1 0 0"), so similarities are known in advance."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return [float(x) for x in text.split()]


def store_with(tmp_path: Path, texts: list[str]) -> FaissStore:
    emb = FixedEmbeddings(size=3)
    store = FaissStore(tmp_path / "i", emb, model_id="fixed", dimension=3)
    vectors = np.asarray(emb.embed_documents(texts), dtype="float32")
    with store.writer() as w:
        w.add_document(
            "d", kind="text", pages=None, source="/d.txt",
            chunks=[NewChunk(t) for t in texts], vectors=vectors,
        )  # fmt: skip
    return store


def test_threshold_and_gap_filter_weak_chunks(tmp_path: Path):
    # cosines with the query "1 0 0": 1.0, 0.8, 0.0 -> relevance 1.0, 0.9, 0.5
    store = store_with(tmp_path, ["1 0 0", "0.8 0.6 0", "0 1 0"])
    everything = StoreRetriever(store=store, k=3).invoke("1 0 0")
    assert [d.page_content for d in everything] == ["1 0 0", "0.8 0.6 0", "0 1 0"]
    assert everything[1].metadata["relevance"] == pytest.approx(0.9, abs=1e-5)
    above = StoreRetriever(store=store, k=3, min_relevance=0.6).invoke("1 0 0")
    assert [d.page_content for d in above] == ["1 0 0", "0.8 0.6 0"]
    close = StoreRetriever(store=store, k=3, relevance_gap=0.05).invoke("1 0 0")
    assert [d.page_content for d in close] == ["1 0 0"]


def test_nothing_relevant_returns_nothing(tmp_path: Path):
    store = store_with(tmp_path, ["0 1 0", "0 0 1"])
    assert StoreRetriever(store=store, k=2, min_relevance=0.6).invoke("1 0 0") == []
