from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from rag.retrieval import HybridRetriever, Mode, mmr_select, rrf_fuse
from rag.store import FaissStore, NewChunk


class TableEmbeddings(Embeddings):
    """Each known text has a fixed vector; a query's vector is looked up the same way."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table[text]


TABLE = {
    # cosine with the query "pump oil": 1.0, 0.8, 0.0, 0.6
    "pump oil": [1.0, 0.0, 0.0],
    "The pump needs fresh oil every spring.": [1.0, 0.0, 0.0],
    "Lubricate moving parts before winter.": [0.8, 0.6, 0.0],
    "The pump model is P-200 with serial 7781.": [0.0, 1.0, 0.0],
    "Greasing the bearings keeps them quiet.": [0.6, 0.8, 0.0],
    "serial 7781": [0.0, 0.0, 1.0],
    "weather forecast": [0.0, 0.0, 1.0],
}


@pytest.fixture
def store(tmp_path: Path) -> FaissStore:
    emb = TableEmbeddings(TABLE)
    store = FaissStore(tmp_path / "i", emb, model_id="table", dimension=3)
    texts = [t for t in TABLE if t.endswith(".")]
    with store.writer() as w:
        w.add_document(
            "d", kind="text", pages=None, source="/manual.txt",
            chunks=[NewChunk(t) for t in texts],
            vectors=np.asarray(emb.embed_documents(texts), dtype="float32"),
        )  # fmt: skip
    return store


def texts(docs) -> list[str]:
    return [d.page_content for d in docs]


def test_rrf_matches_hand_computed_scores():
    fused = rrf_fuse([[1, 2, 3], [3, 1]], [1.0, 1.0], k=60)
    # 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62
    assert [item for item, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[2][1] == pytest.approx(1 / 62)


def test_rrf_weights_and_ties():
    assert [i for i, _ in rrf_fuse([[1, 2], [2, 1]], [1.0, 1.0], k=0)] == [1, 2]  # tie: first seen
    assert [i for i, _ in rrf_fuse([[1, 2], [2, 1]], [1.0, 3.0], k=0)] == [2, 1]
    with pytest.raises(ValueError, match="weight"):
        rrf_fuse([[1]], [], k=60)


def test_vector_mode_with_threshold_and_gap(store):
    everything = HybridRetriever(store=store, mode=Mode.VECTOR, k=4).invoke("pump oil")
    assert texts(everything)[:2] == [
        "The pump needs fresh oil every spring.",
        "Lubricate moving parts before winter.",
    ]
    assert everything[1].metadata["relevance"] == pytest.approx(0.9, abs=1e-5)
    above = HybridRetriever(store=store, mode=Mode.VECTOR, k=4, min_relevance=0.85)
    assert len(above.invoke("pump oil")) == 2
    close = HybridRetriever(store=store, mode=Mode.VECTOR, k=4, relevance_gap=0.05)
    assert texts(close.invoke("pump oil")) == ["The pump needs fresh oil every spring."]


def test_keyword_mode_finds_exact_identifiers(store):
    hits = HybridRetriever(store=store, mode=Mode.KEYWORD, k=2).invoke("serial 7781")
    assert texts(hits)[0] == "The pump model is P-200 with serial 7781."


def test_hybrid_fuses_both_rankings(store):
    retriever = HybridRetriever(store=store, mode=Mode.HYBRID, k=4)
    hits = retriever.search("pump oil")
    # keyword ranks "pump ... oil" first and "pump model" second; vector agrees on the first
    assert texts(d for d, _ in hits)[0] == "The pump needs fresh oil every spring."
    assert "The pump model is P-200 with serial 7781." in texts(d for d, _ in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_abstention_threshold_applies_to_fused_results(store):
    retriever = HybridRetriever(store=store, mode=Mode.HYBRID, k=4, min_relevance=0.6)
    # "serial 7781" matches a chunk by keyword, but nothing is semantically close
    assert retriever.invoke("serial 7781") == []
    assert texts(retriever.invoke("pump oil"))[0] == "The pump needs fresh oil every spring."


def test_mmr_prefers_a_different_second_result():
    vectors = np.asarray([[1, 0], [0.99, 0.14], [0.6, 0.8]], dtype="float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = np.asarray([1, 0], dtype="float32")
    assert mmr_select(query, vectors, 2, lambda_=1.0) == [0, 1]
    assert mmr_select(query, vectors, 2, lambda_=0.3) == [0, 2]


class ReverseAlphabet:
    def score(self, query, passages):
        return [-ord(p[0]) for p in passages]


def test_reranker_reorders_candidates(store):
    retriever = HybridRetriever(store=store, mode=Mode.VECTOR, k=4, reranker=ReverseAlphabet())
    assert texts(retriever.invoke("pump oil"))[0] == "Greasing the bearings keeps them quiet."
