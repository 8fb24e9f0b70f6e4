"""Readers pin one generation for a whole query; writers queue behind each other."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rag.errors import IndexLockedError
from rag.retrieval import HybridRetriever, Mode
from rag.store.faiss import NewChunk
from tests.stores import add_doc, make_store


def test_a_view_reads_one_generation_while_others_are_published(index_dir):
    reader, writer = make_store(index_dir), make_store(index_dir)
    add_doc(writer, "first", ["alpha pump manual", "alpha valve notes"])
    with reader.reader() as view:
        assert view.generation == "g000001"
        for n in range(3):  # g000001 is no longer current, and its manifest is deleted
            add_doc(writer, f"later{n}", [f"alpha later text {n}"])
        assert "g000001" not in writer.generations()
        assert reader.chunk_count() == 5  # a new query sees the newest generation...
        # ...while the open view still answers from the one it pinned, consistently.
        assert view.generation == "g000001"
        assert view.chunk_count() == 2
        assert [d.id for d in view.documents()] == ["first"]
        hits = view.keyword_search("alpha", 10)
        assert {r.text for r, _ in hits} == {"alpha pump manual", "alpha valve notes"}
        query = reader.embeddings.embed_query("alpha valve notes")
        best, score = view.search_chunks_by_vector(query, 1)[0]
        assert best.text == "alpha valve notes" and score == pytest.approx(1.0, abs=1e-5)
        assert view.similarities(query, [best.id]) == {best.id: pytest.approx(score)}
        pinned = view._gen
        assert pinned.pins == 1
    assert pinned.pins == 0  # released once the last query on it ended
    with pytest.raises(ValueError, match="closed"):
        view.documents()


def test_a_generation_is_closed_only_after_its_last_view(index_dir):
    store = make_store(index_dir)
    add_doc(store, "one", ["one"])
    with store.reader() as second:
        gen = second._gen
        with store.reader() as first:
            assert first._gen is gen
            add_doc(store, "two", ["two"])
            with store.reader() as newer:
                assert newer.generation == "g000002"
        assert gen.pins == 1 and gen.retired  # the first view ended, the second still reads it
        assert second.chunk_count() == 1
        assert [r.text for r in second.all_chunks()] == ["one"]
    assert gen.pins == 0
    assert store.chunk_count() == 2


def test_a_publish_does_not_wait_for_the_queries_in_flight(index_dir):
    store = make_store(index_dir)
    add_doc(store, "one", ["one"])
    with store.reader() as view:  # a query in flight, inside its read transaction
        view.chunk_count()
        publisher = threading.Thread(target=add_doc, args=(store, "two", ["two"]))
        publisher.start()
        publisher.join(20)  # it used to wait out SQLite's 30 s busy timeout here
        assert not publisher.is_alive()
        assert view.chunk_count() == 1
    assert store.chunk_count() == 2


def test_threads_sharing_one_store_never_fail_while_it_is_republished(index_dir):
    store = make_store(index_dir)
    add_doc(store, "base", [f"base chunk {i} about pumps" for i in range(20)])
    retriever = HybridRetriever(store=store, mode=Mode.HYBRID, k=5, max_chunks_per_page=0)
    errors: list[BaseException] = []
    queries = [0]
    counting = threading.Lock()
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                docs = retriever.invoke("pumps chunk", within=None)
                assert docs and all("pumps" in d.page_content for d in docs)
                with counting:
                    queries[0] += 1
            except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
                errors.append(exc)
                return

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(12):
            add_doc(store, f"extra{n}", [f"extra chunk {n} about pumps"])
            seen = queries[0]
            deadline = time.monotonic() + 10
            while queries[0] < seen + 3 and not errors and time.monotonic() < deadline:
                time.sleep(0.005)  # let some queries run on each generation
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert queries[0] >= 36
    assert store.chunk_count() == 32


def test_a_second_writer_waits_for_the_first_then_publishes(index_dir):
    store = make_store(index_dir)
    add_doc(store, "base", ["base"])
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        vectors = np.asarray(store.embeddings.embed_documents(["first"]), dtype="float32")
        with store.writer() as w:
            w.add_document("first", kind="text", pages=None, source="/first.txt",
                           chunks=[NewChunk("first")], vectors=vectors)  # fmt: skip
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(30)
    waits: list[float] = []

    def on_wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            release.set()

    second = make_store(index_dir)
    vectors = np.asarray(second.embeddings.embed_documents(["second"]), dtype="float32")
    started = time.monotonic()
    with second.writer(on_wait=on_wait) as w:
        w.add_document("second", kind="text", pages=None, source="/second.txt",
                       chunks=[NewChunk("second")], vectors=vectors)  # fmt: skip
    thread.join(30)
    assert 2.0 <= time.monotonic() - started < 10
    assert len(waits) == 2 and waits[0] >= 1.0 and waits[1] - waits[0] >= 1.0
    # The second transaction started from what the first one published: both are kept.
    assert sorted(d.id for d in second.documents()) == ["base", "first", "second"]


def test_a_writer_gives_up_after_the_lock_timeout(index_dir):
    store = make_store(index_dir)
    add_doc(store, "base", ["base"])
    waits: list[float] = []
    with store.writer():
        impatient = make_store(index_dir, timeout=2.5)
        started = time.monotonic()
        with (
            pytest.raises(IndexLockedError, match="another ingestion"),
            impatient.writer(on_wait=waits.append),
        ):
            pass
        assert 2.5 <= time.monotonic() - started < 8
    assert 1 <= len(waits) <= 3  # about once a second while waiting
    assert [d.id for d in store.documents()] == ["base"]
