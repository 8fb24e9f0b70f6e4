"""The embedded store's segments: what a publish writes, what readers load, deletions that
are recorded, merges and compaction (with a crash at each step), and disk use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rag.store import segments
from rag.store.faiss import NewChunk
from tests.stores import add_doc, make_store, segment_files

ROOT = Path(__file__).resolve().parents[2]


def manifest(index_dir: Path, generation: str | None = None) -> dict:
    generation = generation or (index_dir / "CURRENT").read_text().strip()
    return json.loads((index_dir / "manifests" / f"{generation}.json").read_text())


def texts_of(store) -> list[str]:
    return sorted(c.text for c in store.all_chunks())


def test_a_publish_writes_one_small_segment_and_leaves_the_others_untouched(index_dir):
    store = make_store(index_dir)
    add_doc(store, "d0", [f"zero {i}" for i in range(20)])
    (first,) = segment_files(index_dir, "g000001")
    before = (first.stat().st_ino, first.stat().st_mtime_ns, first.stat().st_size)
    add_doc(store, "d1", ["one a", "one b"])
    files = segment_files(index_dir, "g000002")
    assert files[0] == first and len(files) == 2
    assert (first.stat().st_ino, first.stat().st_mtime_ns, first.stat().st_size) == before
    assert manifest(index_dir)["segments"][1]["count"] == 2
    assert store.chunk_count() == 22


def test_a_reader_loads_only_the_new_segment(index_dir):
    reader, writer = make_store(index_dir), make_store(index_dir)
    add_doc(writer, "d0", ["alpha", "beta"])
    reader.search_chunks("alpha")
    (old,) = reader._segments.values()
    add_doc(writer, "d1", ["gamma"])
    assert reader.search_chunks("gamma", k=1)[0][0].text == "gamma"
    assert reader._segments[old.info.name] is old  # kept, not read again
    assert len(reader._segments) == 2


def test_a_deletion_is_recorded_not_rewritten_and_hidden_from_every_search(index_dir):
    store = make_store(index_dir)
    add_doc(store, "keep", ["pump manual", "valve notes"])
    add_doc(store, "gone", ["pump gone one", "pump gone two"])
    files = {p: p.stat().st_size for p in segment_files(index_dir, "g000002")}
    with store.writer() as w:
        w.delete_document("gone")
    assert {p: p.stat().st_size for p in segment_files(index_dir, "g000003")} == files
    status = store.status()
    assert sum(s["dead"] for s in status.segments) == 2
    assert status.chunks == 2
    query = store.embeddings.embed_query("pump gone one")
    hits = store.search_chunks_by_vector(query, k=10)
    assert {r.doc_id for r, _ in hits} == {"keep"}
    assert {r.doc_id for r, _ in store.keyword_search("pump gone", k=10)} == {"keep"}
    assert [d.id for d in store.documents()] == ["keep"]


def test_small_segments_are_merged_by_the_writer(index_dir, monkeypatch):
    monkeypatch.setattr(segments, "MAX_SMALL", 3)
    store = make_store(index_dir)
    for n in range(10):
        add_doc(store, f"d{n}", [f"text {n} a", f"text {n} b"])
    with store.writer() as w:
        w.delete_document("d4")
    add_doc(store, "last", ["last text"])
    listed = manifest(index_dir)["segments"]
    assert len(listed) <= 4
    assert sum(s["count"] for s in listed) - sum(s["dead"] for s in store.status().segments) == 19
    assert len(texts_of(store)) == 19
    hit, score = store.search_chunks("text 7 b", k=1)[0]
    assert hit.text == "text 7 b" and score == pytest.approx(1.0, abs=1e-5)


def fill(store, docs: int, per_doc: int = 30, collection: str = "default") -> None:
    for n in range(docs):
        texts = [f"document {n} part {i} pump valve {n * i}" for i in range(per_doc)]
        vectors = np.asarray(store.embeddings.embed_documents(texts), dtype="float32")
        with store.writer() as w:
            w.add_document(
                f"{collection}{n}", kind="text", pages=None, source=f"/{collection}{n}.txt",
                chunks=[NewChunk(t) for t in texts], vectors=vectors, collection=collection,
            )  # fmt: skip


def test_compaction_builds_one_approximate_segment_without_the_deleted(index_dir, monkeypatch):
    monkeypatch.setattr(segments, "ANN_MIN", 200)
    store = make_store(index_dir)
    store.auto_compact = False
    fill(store, 8)  # 240 chunks in 8 flat segments
    fill(store, 2, collection="team")
    with store.writer() as w:
        w.delete_document("default3")
    assert store.compaction_due()
    report = store.compact()
    assert report is not None
    assert report.kind == segments.ANN_KIND and report.dropped == 30
    assert report.vectors == 270  # 300 written, one document of 30 deleted before
    listed = manifest(index_dir)["segments"]
    assert [s["kind"] for s in listed] == [segments.ANN_KIND]
    assert store.compact() is None  # nothing due any more
    # Exact answers still (an IVF over so few vectors probes every list), to fp16 precision.
    for text in ("document 5 part 7 pump valve 35", "document 1 part 0 pump valve 0"):
        hit, score = store.search_chunks(text, k=1)[0]
        assert hit.text == text and score == pytest.approx(1.0, abs=1e-3)
    within = store.search_chunks_by_vector(
        store.embeddings.embed_query("document 1 part 3 pump valve 3"), 5, frozenset({"team"})
    )
    assert len(within) == 5 and {r.doc_id for r, _ in within} <= {"team0", "team1"}
    assert store.vectors([within[0][0].id]).shape == (1, 32)
    assert len(texts_of(store)) == 270
    add_doc(store, "later", ["later text"])
    add_doc(store, "later2", ["later text 2"])
    now = {p.name for p in (index_dir / "segments").iterdir()}
    # The flat segments it replaced are gone once no kept generation lists them.
    assert now == {
        f"{listed[0]['name']}.faiss",
        *(p.name for p in segment_files(index_dir, "g000014")[1:]),
    }


def test_a_chunk_deleted_while_compaction_builds_stays_deleted(index_dir, monkeypatch):
    monkeypatch.setattr(segments, "ANN_MIN", 100)
    store = make_store(index_dir)
    store.auto_compact = False
    fill(store, 4)
    build = segments.build_index

    def build_then_delete(kind, vectors, ids, threads=0):
        index = build(kind, vectors, ids, threads)
        with make_store(index_dir).writer() as w:  # another process, meanwhile
            w.delete_document("default2")
        return index

    monkeypatch.setattr(segments, "build_index", build_then_delete)
    report = store.compact()
    assert report is not None and report.vectors == 120 and report.dropped == 0
    assert "default2" not in {d.id for d in store.documents()}
    hits = store.search_chunks("document 2 part 5 pump valve 10", k=30)
    assert "default2" not in {r.doc_id for r, _ in hits}
    assert len(hits) == 30
    assert sum(s["dead"] for s in store.status().segments) == 30  # still tombstoned


# A process that compacts (or ingests) and is killed with SIGKILL at one step.
_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import rag.store.faiss as faiss_store
    from rag.store import segments
    from tests.stores import add_doc, make_store

    index_dir, step, what = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    segments.ANN_MIN = 100

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    original = {name: getattr(faiss_store, name) for name in ("_write_text", "_replace")}
    calls = {"n": 0}

    def at(name, when):
        def call(*args):
            if when(*args):
                die()
            return original[name](*args)
        return call

    if step == "segment written":  # the compacted segment renamed into place, not published
        faiss_store._replace = at("_replace", lambda src, dst: dst.name == "CURRENT")
    elif step == "manifest":  # rows committed, manifest not written
        faiss_store._write_text = at("_write_text", lambda p, _: p.parent.name == "manifests")
    elif step == "rename":  # manifest written, CURRENT not renamed
        faiss_store._write_text = at("_write_text", lambda p, _: p.name == "CURRENT.tmp")
    elif step == "build":  # while the new segment is being built
        segments.build_index = die
    store = make_store(index_dir)
    store.auto_compact = False
    if what == "compact":
        store.compact()
    else:
        add_doc(store, "new", ["new text one", "new text two"])
    """
)


def state(index_dir: Path):
    fresh = make_store(index_dir)
    query = fresh.embeddings.embed_query("document 1 part 3 pump valve 3")
    return (
        fresh.current_generation(),
        [(d.id, d.chunks) for d in fresh.documents()],
        texts_of(fresh),
        [(r.chunk_id, round(s, 5)) for r, s in fresh.search_chunks_by_vector(query, 5)],
        [r.chunk_id for r, _ in fresh.keyword_search("pump valve", 5)],
    )


@pytest.mark.parametrize(
    ("what", "step"),
    [
        ("compact", "build"),
        ("compact", "segment written"),
        ("compact", "manifest"),
        ("compact", "rename"),
        ("ingest", "manifest"),
        ("ingest", "rename"),
    ],
)
def test_kill_9_at_any_step_leaves_exactly_the_state_before(index_dir, what, step):
    store = make_store(index_dir)
    fill(store, 4)
    with store.writer() as w:
        w.delete_document("default0")
    before = state(index_dir)
    files_before = sorted(p.name for p in (index_dir / "segments").iterdir())
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, str(index_dir), step, what],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert state(index_dir) == before  # readers: exactly the state before
    add_doc(make_store(index_dir), "after", ["after text"])  # the next writer cleans up
    after = make_store(index_dir)
    assert [d.id for d in after.documents()] == [*(d for d, _ in before[1]), "after"]
    assert len(texts_of(after)) == len(before[2]) + 1
    listed = {p.name for p in segment_files(index_dir, after.current_generation())}
    left = {p.name for p in (index_dir / "segments").iterdir()}
    older = {p.name for p in segment_files(index_dir, after.generations()[0])}
    assert left == listed | older  # nothing the killed process wrote is left behind
    assert set(files_before) <= left | set(files_before)


def test_the_folder_holds_one_copy_of_its_data(index_dir):
    store = make_store(index_dir)
    for n in range(30):
        add_doc(store, f"d{n}", [f"chunk {i} of document {n} " * 20 for i in range(20)])
    for n in range(0, 30, 3):
        with store.writer() as w:
            w.delete_document(f"d{n}")
    total = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
    used = sum(p.stat().st_size for p in segment_files(index_dir, store.current_generation()))
    one_copy = used + (index_dir / "meta.sqlite").stat().st_size
    assert total <= 1.3 * one_copy, (total, one_copy)


def test_a_view_pinned_before_two_publishes_and_a_purge_still_reads_its_generation(index_dir):
    reader, writer = make_store(index_dir), make_store(index_dir)
    add_doc(writer, "a", ["alpha one"])
    add_doc(writer, "b", ["beta one"])
    with reader.reader() as view:
        for n in range(4):  # each publish deletes what the one before added
            with writer.writer() as w:
                w.delete_document("a" if n == 0 else f"n{n - 1}")
                w.add_document(
                    f"n{n}", kind="text", pages=None, source=f"/n{n}.txt",
                    chunks=[NewChunk(f"new {n}")],
                    vectors=np.asarray(writer.embeddings.embed_documents([f"new {n}"])),
                )  # fmt: skip
        assert [d.id for d in view.documents()] == ["a", "b"]
        assert sorted(r.text for r in view.all_chunks()) == ["alpha one", "beta one"]
        assert {r.text for r, _ in view.keyword_search("alpha", 5)} == {"alpha one"}
    assert [d.id for d in reader.documents()] == ["b", "n3"]
    assert os.path.exists(index_dir / "meta.sqlite")


def test_words_most_chunks_hold_are_left_out_of_a_large_keyword_search(index_dir, monkeypatch):
    from rag.store import collections

    monkeypatch.setattr(collections, "PRUNE_FROM", 10)
    monkeypatch.setattr(collections, "KEYWORD_BUDGET", 5)
    store = make_store(index_dir)
    texts = [f"common words everywhere item {i}" for i in range(40)]
    texts[7] = "common words everywhere rare running"
    for i in range(8, 12):
        texts[i] = f"common words everywhere middle {i}"  # 4 of 40: 10%
    add_doc(store, "d", texts)
    with store.reader() as view:
        db = view._conn()
        pick = collections.discriminating
        assert pick(db, ["common", "runs"], 40) == ["runs"]  # stemmed
        assert pick(db, ["middle", "common", "rare"], 40) == ["middle", "rare"]  # 4 + 1 <= 5
        assert pick(db, ["middle", "rare", "running", "x"], 40) == ["rare", "running"]
        assert pick(db, ["middle", "item"], 40) == ["middle"]  # item: in 36 of 40 chunks
        assert pick(db, ["common", "item"], 40) == []  # all in over 10%: no keyword ranking
        assert pick(db, ["common", "item"], 9) == ["common", "item"]  # a small index: all
        assert view.keyword_search("common everywhere", 3) == []
        monkeypatch.setattr(collections, "KEYWORD_BUDGET", 3)
        assert pick(db, ["middle", "rare"], 40) == ["rare"]  # middle alone is over budget
        hits = view.keyword_search("common rare", 3)
    assert [r.text for r, _ in hits] == ["common words everywhere rare running"]
