"""The contract every store implementation passes (after haystack's document store tests).

A test module subclasses ``StoreContract`` and provides the ``store`` fixture.
"""

from __future__ import annotations

from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore


class StoreContract:
    def test_empty_store_returns_nothing(self, store: VectorStore) -> None:
        assert store.get_by_ids(["nope"]) == []

    def test_added_text_is_found_by_itself(self, store: VectorStore) -> None:
        ids = store.add_texts(
            ["alpha text about cats", "beta text about dogs", "gamma text about birds"],
            metadatas=[{"source": "a.txt"}, {"source": "b.txt", "page": 2}, {"source": "c.txt"}],
        )
        assert len(ids) == 3
        hits = store.similarity_search("beta text about dogs", k=1)
        assert hits[0].page_content == "beta text about dogs"
        assert hits[0].metadata["source"] == "b.txt"
        assert hits[0].metadata["page"] == 2
        assert hits[0].metadata["chunk_id"] == ids[1]

    def test_scores_are_best_first(self, store: VectorStore) -> None:
        store.add_texts(["one", "two", "three"])
        scored = store.similarity_search_with_score("two", k=3)
        assert scored[0][0].page_content == "two"
        scores = [s for _, s in scored]
        assert scores == sorted(scores, reverse=True)

    def test_relevance_scores_are_in_unit_range(self, store: VectorStore) -> None:
        store.add_texts(["one", "two"])
        for _, score in store.similarity_search_with_relevance_scores("one", k=2):
            assert 0.0 <= score <= 1.0

    def test_k_larger_than_store(self, store: VectorStore) -> None:
        store.add_texts(["only"])
        assert len(store.similarity_search("only", k=10)) == 1

    def test_get_by_ids_keeps_order(self, store: VectorStore) -> None:
        ids = store.add_texts(["first", "second"])
        docs = store.get_by_ids([ids[1], "missing", ids[0]])
        assert [d.page_content for d in docs] == ["second", "first"]

    def test_delete_removes_text_and_vector(self, store: VectorStore) -> None:
        ids = store.add_texts(["keep me", "drop me"])
        assert store.delete([ids[1]])
        assert store.get_by_ids([ids[1]]) == []
        texts = [d.page_content for d in store.similarity_search("drop me", k=5)]
        assert texts == ["keep me"]

    def test_as_retriever(self, store: VectorStore) -> None:
        store.add_texts(["red apples", "green pears"])
        retriever = store.as_retriever(search_kwargs={"k": 1})
        assert isinstance(retriever, BaseRetriever)
        assert retriever.invoke("green pears")[0].page_content == "green pears"
