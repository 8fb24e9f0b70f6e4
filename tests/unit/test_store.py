from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.errors import (
    DocumentNotFoundError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexUnwritableError,
)
from rag.store.faiss import CURRENT, FaissStore, NewChunk
from tests.contract import CollectionsContract, StoreContract
from tests.fakes import CountingEmbeddings
from tests.stores import newest_segment


def make_store(index_dir: Path, emb: CountingEmbeddings, model: str = "fake") -> FaissStore:
    return FaissStore(index_dir, emb, model_id=model, dimension=32, lock_timeout_s=0.2)


class TestFaissStoreContract(StoreContract, CollectionsContract):
    @pytest.fixture
    def store(self, index_dir: Path, fake_embeddings: CountingEmbeddings) -> FaissStore:
        return make_store(index_dir, fake_embeddings)


def add_doc(store: FaissStore, doc_id: str, source: str, texts: list[str], page: int = 1) -> None:
    vectors = np.asarray(store.embeddings.embed_documents(texts), dtype="float32")
    with store.writer() as w:
        w.add_document(
            doc_id,
            kind="text",
            pages=None,
            source=source,
            chunks=[NewChunk(t, page=page) for t in texts],
            vectors=vectors,
        )


def state(store: FaissStore) -> tuple[list[tuple[str, list[str], int]], list[tuple[str, str]]]:
    docs = [(d.id, d.sources, d.chunks) for d in store.documents()]
    chunks = [(c.chunk_id, c.text) for c in store.all_chunks()]
    return docs, chunks


def test_search_before_any_ingestion_names_the_folder(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    with pytest.raises(IndexNotFoundError, match=str(index_dir)):
        store.search_chunks("anything")
    assert store.documents() == []


def test_failed_transaction_publishes_nothing(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    add_doc(store, "d1", "/a.txt", ["one", "two"])
    before = state(store)
    with pytest.raises(RuntimeError), store.writer() as w:
        w.delete_document("d1")
        raise RuntimeError("boom")
    assert state(store) == before
    assert store.generations() == ["g000001"]


def test_unchanged_transaction_publishes_no_generation(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    add_doc(store, "d1", "/a.txt", ["one"])
    with store.writer():
        pass
    assert store.current_generation() == "g000001"
    assert store.generations() == ["g000001"]


def test_reader_sees_new_generation_without_reopening(index_dir, fake_embeddings):
    reader = make_store(index_dir, fake_embeddings)
    writer = make_store(index_dir, fake_embeddings)
    add_doc(writer, "d1", "/a.txt", ["one"])
    assert reader.chunk_count() == 1
    add_doc(writer, "d2", "/b.txt", ["two", "three"])
    assert reader.chunk_count() == 3
    assert reader.search_chunks("three", k=1)[0][0].text == "three"


def test_old_generations_are_cleaned_keeping_the_previous(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    for i in range(4):
        add_doc(store, f"d{i}", f"/{i}.txt", [f"text {i}"])
    assert store.generations() == ["g000003", "g000004"]


def test_leftover_of_a_crashed_writer_is_removed_and_ignored(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    add_doc(store, "d1", "/a.txt", ["one"])
    (index_dir / "manifests" / "g000002.json").write_bytes(b"half written")
    (index_dir / "segments" / "seg000099.faiss").write_bytes(b"half written")
    assert store.chunk_count() == 1
    add_doc(store, "d2", "/b.txt", ["two"])
    assert store.chunk_count() == 2
    assert "g000002" not in store.generations() or store.current_generation() == "g000002"
    assert not (index_dir / "segments" / "seg000099.faiss").exists()


# Another process holding the writer lock until its stdin closes. A plain subprocess, not
# multiprocessing's spawn, which re-runs whatever ``__main__`` a test before left behind.
_HOLD_LOCK = """
import sys
from pathlib import Path
from rag.store.faiss import FaissStore
from tests.fakes import CountingEmbeddings

store = FaissStore(Path(sys.argv[1]), CountingEmbeddings(size=32), model_id="fake", dimension=32)
with store.writer():
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_second_writer_is_refused_while_one_writes(index_dir, fake_embeddings):
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(index_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        store = make_store(index_dir, fake_embeddings)
        with pytest.raises(IndexLockedError, match="another ingestion"), store.writer():
            pass
    finally:
        child.stdin.close()
        child.wait(30)
    with make_store(index_dir, fake_embeddings).writer():
        pass  # released once the other writer has gone


def test_other_embedding_model_is_a_clear_error(index_dir, fake_embeddings):
    add_doc(make_store(index_dir, fake_embeddings, "model-a"), "d1", "/a.txt", ["one"])
    other = make_store(index_dir, fake_embeddings, "model-b")
    with pytest.raises(IndexMismatchError) as err:
        other.search_chunks("one")
    assert "model-a" in str(err.value) and "model-b" in str(err.value)
    with pytest.raises(IndexMismatchError), other.writer():
        pass
    assert make_store(index_dir, fake_embeddings, "model-a").chunk_count() == 1


def test_garbage_current_file_is_reported(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    add_doc(store, "d1", "/a.txt", ["one"])
    (index_dir / CURRENT).write_text("../../etc")
    with pytest.raises(IndexCorruptError):
        make_store(index_dir, fake_embeddings).search_chunks("one")


def test_identical_content_is_stored_once_with_both_sources(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    add_doc(store, "d1", "/a.txt", ["same"])
    with store.writer() as w:
        w.add_source("/copy.txt", "d1")
    (doc,) = store.documents()
    assert doc.sources == ["/a.txt", "/copy.txt"]
    with store.writer() as w:
        assert w.remove_source("/a.txt") is None
    assert store.documents()[0].sources == ["/copy.txt"]
    assert store.chunk_count() == 1
    with store.writer() as w:
        assert w.remove_source("/copy.txt") == "d1"
    assert store.documents() == [] and store.chunk_count() == 0


def test_delete_document_removes_every_chunk_and_vector(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    add_doc(store, "aaaaaaaa1", "/a.txt", ["one", "two", "three"])
    add_doc(store, "bbbbbbbb2", "/b.txt", ["four"])
    with store.writer() as w:
        w.delete_document(store.find_document("aaaaaa"))
    assert store.chunk_count() == 1
    assert [c.text for c in store.all_chunks()] == ["four"]
    assert [r.text for r, _ in store.search_chunks("two", k=5)] == ["four"]


def test_find_document_by_path_prefix_or_nothing(index_dir, fake_embeddings, tmp_path):
    store = make_store(index_dir, fake_embeddings)
    path = str(tmp_path / "a.txt")
    add_doc(store, "abcdef123", path, ["one"])
    assert store.find_document(path) == "abcdef123"
    assert store.find_document("abcdef") == "abcdef123"
    with pytest.raises(DocumentNotFoundError):
        store.find_document("abc")  # too short to be a prefix
    with pytest.raises(DocumentNotFoundError):
        store.find_document(str(tmp_path / "other.txt"))


def test_vectors_of_wrong_size_are_refused(index_dir, fake_embeddings):
    store = make_store(index_dir, fake_embeddings)
    with pytest.raises(ValueError, match="shape"), store.writer() as w:
        w.add_document(
            "d", kind="text", pages=None, source="/a", chunks=[NewChunk("x")],
            vectors=np.zeros((1, 7), dtype="float32"),
        )  # fmt: skip
    assert not store.exists()


@pytest.mark.parametrize("damaged", ["segment", "meta.sqlite"])
def test_damaged_index_is_a_clear_error_for_readers_and_writers(
    index_dir, fake_embeddings, damaged
):
    store = make_store(index_dir, fake_embeddings)
    add_doc(store, "d1", "/a.txt", ["one", "two"])
    path = newest_segment(index_dir, "g000001") if damaged == "segment" else index_dir / damaged
    path.write_bytes(b"not what it should be" * 100)
    fresh = make_store(index_dir, fake_embeddings)
    with pytest.raises(IndexCorruptError, match=str(index_dir)):
        fresh.search_chunks("one")
    with pytest.raises(IndexCorruptError), fresh.writer():
        pass
    assert fresh.generations() == ["g000001"]


def test_unwritable_index_location_is_a_clear_error(tmp_path, fake_embeddings):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = make_store(blocker / "index", fake_embeddings)
    with pytest.raises(IndexUnwritableError, match="cannot write"), store.writer():
        pass
