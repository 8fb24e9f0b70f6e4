from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from rag.retrieval import (
    DOCUMENT_PENALTY,
    LOCATION_SPAN,
    SECTION_GAP,
    Fusion,
    HybridRetriever,
    Mode,
    mmr_select,
    rrf_fuse,
    spread_out,
    zscore_fuse,
)
from rag.store.faiss import FaissStore, NewChunk


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


def test_zscore_matches_hand_computed_scores():
    # first: 3, 1 -> mean 2, sd 1 -> z +1, -1; second: 10, 0 -> mean 5, sd 5 -> z +1, -1;
    # a candidate missing from a ranking gets that ranking's lowest z (-1)
    fused = dict(zscore_fuse([[(1, 3.0), (2, 1.0)], [(2, 10.0), (3, 0.0)]], [1.0, 1.0]))
    assert fused == pytest.approx({1: 0.0, 2: 0.0, 3: -2.0})
    ordered = zscore_fuse([[(1, 3.0), (2, 1.0)], [(2, 10.0), (3, 0.0)]], [1.0, 1.0])
    assert [i for i, _ in ordered] == [1, 2, 3]  # tie: first seen
    weighted = zscore_fuse([[(1, 3.0), (2, 1.0)], [(2, 10.0), (3, 0.0)]], [1.0, 2.0])
    assert [i for i, _ in weighted] == [2, 1, 3]
    assert dict(weighted) == pytest.approx({1: -1.0, 2: 1.0, 3: -3.0})
    # a ranking with no spread (here one keyword hit) still lifts what it found by 1
    lone = dict(zscore_fuse([[(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 4.2)]], [1.0, 1.0]))
    # vector: mean 0.8, sd 0.0816 -> z +1.2247, 0, -1.2247; keyword: 3 -> 1, others 0
    assert lone == pytest.approx({1: 1.2247, 2: 0.0, 3: -0.2247}, abs=1e-4)
    no_keywords = zscore_fuse([[(1, 0.9), (2, 0.8)], []], [1.0, 1.0])
    assert [i for i, _ in no_keywords] == [1, 2]
    assert dict(no_keywords) == pytest.approx({1: 1.0, 2: -1.0})
    with pytest.raises(ValueError, match="weight"):
        zscore_fuse([[(1, 1.0)]], [])


def test_zscore_keeps_a_standout_hit_that_rrf_outvotes():
    keyword = [(1, 9.0), (2, 1.0), (3, 1.0), (4, 1.0)]  # 1 stands far above the rest
    vector = [(2, 0.8), (3, 0.7), (1, 0.6), (4, 0.5)]  # a close race, 1 third
    # z: keyword 1 -> +1.732, others -0.577; vector 2 -> +1.342, 3 -> +0.447, 1 -> -0.447
    assert [i for i, _ in zscore_fuse([keyword, vector], [1.0, 1.0])][:2] == [1, 2]
    # ranks only: 1 gets 1/61 + 1/63 < 2's 1/62 + 1/61
    ranks = [[i for i, _ in keyword], [i for i, _ in vector]]
    assert [i for i, _ in rrf_fuse(ranks, [1.0, 1.0], k=60)][:2] == [2, 1]


def test_spread_out_limits_each_location_then_backfills():
    items = ["a1", "a2", "b1", "a3", "c1", "b2"]
    assert spread_out(items, lambda x: x[0], 1) == ["a1", "b1", "c1", "a2", "a3", "b2"]
    assert spread_out(items, lambda x: x[0], 2) == ["a1", "a2", "b1", "c1", "b2", "a3"]
    assert spread_out(items, lambda x: x[0], 0) == items


def test_vector_mode_with_threshold_and_gap(store):
    everything = HybridRetriever(store=store, mode=Mode.VECTOR, k=4, max_chunks_per_page=0).invoke(
        "pump oil", within=None
    )
    assert texts(everything)[:2] == [
        "The pump needs fresh oil every spring.",
        "Lubricate moving parts before winter.",
    ]
    assert everything[1].metadata["relevance"] == pytest.approx(0.9, abs=1e-5)
    above = HybridRetriever(store=store, mode=Mode.VECTOR, k=4, min_relevance=0.85)
    assert len(above.invoke("pump oil", within=None)) == 2
    close = HybridRetriever(store=store, mode=Mode.VECTOR, k=4, relevance_gap=0.05)
    assert texts(close.invoke("pump oil", within=None)) == [
        "The pump needs fresh oil every spring."
    ]


def test_keyword_mode_finds_exact_identifiers(store):
    hits = HybridRetriever(store=store, mode=Mode.KEYWORD, k=2).invoke("serial 7781", within=None)
    assert texts(hits)[0] == "The pump model is P-200 with serial 7781."


def test_hybrid_fuses_both_rankings(store):
    retriever = HybridRetriever(store=store, mode=Mode.HYBRID, k=4)
    hits = retriever.search("pump oil", within=None)
    # keyword ranks "pump ... oil" first and "pump model" second; vector agrees on the first
    assert texts(d for d, _ in hits)[0] == "The pump needs fresh oil every spring."
    assert "The pump model is P-200 with serial 7781." in texts(d for d, _ in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_abstention_threshold_applies_to_fused_results(store):
    retriever = HybridRetriever(store=store, mode=Mode.HYBRID, k=4, min_relevance=0.6)
    # "serial 7781" matches a chunk by keyword, but nothing is semantically close
    assert retriever.invoke("serial 7781", within=None) == []
    assert (
        texts(retriever.invoke("pump oil", within=None))[0]
        == "The pump needs fresh oil every spring."
    )


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
    assert (
        texts(retriever.invoke("pump oil", within=None))[0]
        == "Greasing the bearings keeps them quiet."
    )


def test_one_chunk_per_page_before_a_second(tmp_path: Path):
    emb = TableEmbeddings(TABLE)
    store = FaissStore(tmp_path / "i", emb, model_id="table", dimension=3)
    manual = ["The pump needs fresh oil every spring.", "Lubricate moving parts before winter."]
    other = ["Greasing the bearings keeps them quiet."]
    with store.writer() as w:
        for doc, chunks, pages in (("m", manual, [1, 1]), ("o", other, [1])):
            w.add_document(
                doc, kind="pdf", pages=1, source=f"/{doc}.pdf",
                chunks=[NewChunk(t, page=p) for t, p in zip(chunks, pages, strict=True)],
                vectors=np.asarray(emb.embed_documents(chunks), dtype="float32"),
            )  # fmt: skip
    # cosines: manual 1.0 and 0.8 (both page 1), other 0.6
    spread = HybridRetriever(store=store, mode=Mode.VECTOR, k=3).invoke("pump oil", within=None)
    assert texts(spread) == [manual[0], other[0], manual[1]]
    packed = HybridRetriever(store=store, mode=Mode.VECTOR, k=3, max_chunks_per_page=0)
    assert texts(packed.invoke("pump oil", within=None)) == [manual[0], manual[1], other[0]]
    # the share only orders: with k=2 the second chunk of page 1 gives way to the other page
    assert texts(
        HybridRetriever(store=store, mode=Mode.VECTOR, k=2).invoke("pump oil", within=None)
    ) == [
        manual[0],
        other[0],
    ]


# a second passage about pump oil: cosine 0.98 with the query "pump oil"
LEVEL = "Check the pump oil level every month."


def page_less_store(tmp_path: Path, chunks: list[NewChunk]) -> FaissStore:
    emb = TableEmbeddings(TABLE | {LEVEL: [0.98, float(np.sqrt(1 - 0.98**2)), 0.0]})
    store = FaissStore(tmp_path / "i", emb, model_id="table", dimension=3)
    other = ["Greasing the bearings keeps them quiet."]
    with store.writer() as w:
        w.add_document(
            "m", kind="html", pages=None, source="/manual.html", chunks=chunks,
            vectors=np.asarray(emb.embed_documents([c.text for c in chunks]), dtype="float32"),
        )  # fmt: skip
        w.add_document(
            "o", kind="html", pages=None, source="/other.html", chunks=[NewChunk(other[0])],
            vectors=np.asarray(emb.embed_documents(other), dtype="float32"),
        )  # fmt: skip
    return store


def test_sections_of_a_page_less_file_are_separate_locations(tmp_path: Path):
    # An HTML page with two sections: before, the whole file was one "page" and the
    # second section's chunk (cosine 0.98) fell behind every other file's chunks (0.6).
    oil = "The pump needs fresh oil every spring."
    store = page_less_store(
        tmp_path,
        [NewChunk(oil, heading="Oil", offset=0), NewChunk(LEVEL, heading="Level", offset=900)],
    )
    top = HybridRetriever(store=store, mode=Mode.VECTOR, k=2).invoke("pump oil", within=None)
    assert texts(top) == [oil, LEVEL]


def test_a_files_second_section_leads_only_when_it_stands_out(tmp_path: Path):
    oil, winter = "The pump needs fresh oil every spring.", "Lubricate moving parts before winter."
    store = page_less_store(
        tmp_path,
        [NewChunk(oil, heading="Oil", offset=0), NewChunk(winter, heading="Winter", offset=900)],
    )
    greasing = "Greasing the bearings keeps them quiet."
    # cosines 1.0 and 0.8 for the two sections, 0.6 for the other file (deviation 0.16):
    # the second section trails its file's best by 1.2 deviations
    for penalty, second in [(0.0, winter), (1.0, winter), (1.5, greasing), (5.0, greasing)]:
        retriever = HybridRetriever(
            store=store, mode=Mode.VECTOR, k=2, document_penalty=penalty, section_gap=np.inf
        )
        assert texts(retriever.invoke("pump oil", within=None)) == [oil, second], penalty
    # more than the gap behind its file's best, a section is that file again: it waits
    for gap, second in [(SECTION_GAP, greasing), (1.0, greasing), (1.5, winter)]:
        retriever = HybridRetriever(
            store=store, mode=Mode.VECTOR, k=2, document_penalty=0.5, section_gap=gap
        )
        assert texts(retriever.invoke("pump oil", within=None)) == [oil, second], gap
    # whatever leads, nothing is lost: the rest still fills the list
    for retriever in (
        HybridRetriever(store=store, mode=Mode.VECTOR, k=3, document_penalty=5.0),
        HybridRetriever(store=store, mode=Mode.VECTOR, k=3),
    ):
        assert texts(retriever.invoke("pump oil", within=None)) == [oil, greasing, winter]


def test_far_apart_chunks_of_one_long_section_are_separate_locations(tmp_path: Path):
    oil = "The pump needs fresh oil every spring."
    far = page_less_store(
        tmp_path / "far",
        [NewChunk(oil, heading="Care", offset=0), NewChunk(LEVEL, heading="Care", offset=9000)],
    )
    top = HybridRetriever(store=far, mode=Mode.VECTOR, k=2).invoke("pump oil", within=None)
    assert texts(top) == [oil, LEVEL]
    # neighbouring chunks of one section still count as one place: the other file leads
    near = page_less_store(
        tmp_path / "near",
        [NewChunk(oil, heading="Care", offset=0), NewChunk(LEVEL, heading="Care", offset=900)],
    )
    top = HybridRetriever(store=near, mode=Mode.VECTOR, k=2).invoke("pump oil", within=None)
    assert texts(top) == [oil, "Greasing the bearings keeps them quiet."]


def test_rrf_fusion_is_selectable(store):
    retriever = HybridRetriever(store=store, mode=Mode.HYBRID, k=4, fusion=Fusion.RRF)
    hits = retriever.search("pump oil", within=None)
    assert texts(d for d, _ in hits)[0] == "The pump needs fresh oil every spring."
    assert hits[0][1] == pytest.approx(2 / 61)  # first in both rankings


def test_mmr_in_the_retriever_trades_relevance_for_variety(store):
    plain = HybridRetriever(store=store, mode=Mode.VECTOR, k=2, max_chunks_per_page=0)
    assert (
        texts(plain.invoke("pump oil", within=None))[1] == "Lubricate moving parts before winter."
    )
    varied = HybridRetriever(
        store=store, mode=Mode.VECTOR, k=2, max_chunks_per_page=0, mmr_lambda=0.3
    )
    # after the best chunk, the one least like it wins: 0.3*0 - 0.7*0 beats 0.3*0.8 - 0.7*0.8
    assert texts(varied.invoke("pump oil", within=None)) == [
        "The pump needs fresh oil every spring.",
        "The pump model is P-200 with serial 7781.",
    ]


def test_the_retriever_describes_what_shapes_its_rankings(store):
    vector = HybridRetriever(store=store, mode=Mode.VECTOR, k=4)
    assert vector.describe() == {
        "max_chunks_per_page": 1,
        "location_span": LOCATION_SPAN,
        "document_penalty": DOCUMENT_PENALTY,
        "section_gap": SECTION_GAP,
    }
    rrf = HybridRetriever(store=store, k=50, fusion=Fusion.RRF, rrf_k=10, keyword_weight=2.0)
    assert rrf.describe() == {
        "max_chunks_per_page": 1,
        "location_span": LOCATION_SPAN,
        "document_penalty": DOCUMENT_PENALTY,
        "section_gap": SECTION_GAP,
        "fusion": "rrf",
        "fusion_depth": 50,  # never fewer candidates than results
        "vector_weight": 1.0,
        "keyword_weight": 2.0,
        "rrf_k": 10,
    }
