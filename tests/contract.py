"""The contract every store implementation passes (after haystack's document store tests).

A test module subclasses ``StoreContract`` and provides the ``store`` fixture.
"""

from __future__ import annotations

from typing import Any

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
        assert retriever.invoke("green pears", within=None)[0].page_content == "green pears"


class CollectionsContract:
    """Searches limited to collections (the store also offers ``documents(within)``)."""

    def _fill(self, store: Any) -> None:
        # Collection b holds the best matches for "solar panel" by far; a holds a few
        # weaker ones among unrelated text.
        store.add_texts(
            [f"solar panel efficiency report number {i}" for i in range(30)],
            metadatas=[{"source": f"b{i}.txt"} for i in range(30)],
            collection="b",
        )
        store.add_texts(
            [f"notes {i}: a solar roof and panel costs" for i in range(6)]
            + [f"gardening diary entry {i}" for i in range(10)],
            metadatas=[{"source": f"a{i}.txt"} for i in range(16)],
            collection="a",
        )

    def test_vector_search_within_gives_k_from_the_allowed(self, store: Any) -> None:
        self._fill(store)
        # The query's exact text in ten other collections: the ten best matches overall.
        for n in range(10):
            store.add_texts(
                ["the query itself"], metadatas=[{"source": f"b-q{n}"}], collection=f"q{n}"
            )
        vector = store.embeddings.embed_query("the query itself")
        best = store.search_chunks_by_vector(vector, 8)
        assert all(r.source.startswith("b-q") for r, _ in best)  # the filter matters
        hits = store.search_chunks_by_vector(vector, 8, frozenset({"a"}))
        assert len(hits) == 8
        assert all(r.source.startswith("a") for r, _ in hits)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)

    def test_keyword_search_within_gives_k_from_the_allowed(self, store: Any) -> None:
        self._fill(store)
        best = store.keyword_search("solar panel", 6)
        assert all(r.source.startswith("b") for r, _ in best)
        hits = store.keyword_search("solar panel", 6, frozenset({"a"}))
        assert len(hits) == 6
        assert all(r.source.startswith("a") for r, _ in hits)

    def test_keyword_search_within_most_of_the_index_still_gives_k(self, store: Any) -> None:
        self._fill(store)
        store.add_texts(
            [f"unrelated memo {i}" for i in range(60)],
            metadatas=[{"source": f"c{i}.txt"} for i in range(60)],
            collection="c",
        )
        # 72 % of the chunks admitted, none of the best 23 matches: every one is looked at.
        hits = store.keyword_search("solar panel", 6, frozenset({"a", "c"}))
        assert len(hits) == 6 and all(r.source.startswith("a") for r, _ in hits)
        # 85 % admitted, the best matches among them.
        best = store.keyword_search("solar panel", 6, frozenset({"b", "c"}))
        assert [r.source for r, _ in best] == [
            r.source for r, _ in store.keyword_search("solar panel", 6)
        ]

    def test_nothing_is_found_outside_every_collection(self, store: Any) -> None:
        self._fill(store)
        vector = store.embeddings.embed_query("solar panel")
        assert store.search_chunks_by_vector(vector, 5, frozenset()) == []
        assert store.keyword_search("solar panel", 5, frozenset({"nope"})) == []
        assert store.documents(frozenset({"nope"})) == []

    def test_documents_and_ids_are_filtered(self, store: Any) -> None:
        self._fill(store)
        docs = store.documents(frozenset({"a"}))
        assert len(docs) == 16 and {d.collection for d in docs} == {"a"}
        assert len(store.documents()) == 46
        ids = [c.chunk_id for c in store.all_chunks() if c.source.startswith("b")][:3]
        with store.reader() as view:
            assert view.get_by_ids(ids, frozenset({"a"})) == []
            assert len(view.get_by_ids(ids, frozenset({"b"}))) == 3

    def test_the_same_text_in_two_collections_is_two_documents(self, store: Any) -> None:
        first = store.add_texts(["shared words"], collection="a")
        second = store.add_texts(["shared words"], collection="b")
        assert first != second
        vector = store.embeddings.embed_query("shared words")
        for name in ("a", "b"):
            hits = store.search_chunks_by_vector(vector, 5, frozenset({name}))
            assert len(hits) == 1
        store.delete(first)
        assert [d.collection for d in store.documents()] == ["b"]

    def test_the_default_collection_holds_documents_filed_nowhere(self, store: Any) -> None:
        store.add_texts(["older text in the default collection"])
        store.add_texts(["text in x"], collection="x")
        vector = store.embeddings.embed_query("older text")
        hits = store.search_chunks_by_vector(vector, 5, frozenset({"default"}))
        assert [r.text for r, _ in hits] == ["older text in the default collection"]
        kw = store.keyword_search("text", 5, frozenset({"default"}))
        assert [r.text for r, _ in kw] == ["older text in the default collection"]
