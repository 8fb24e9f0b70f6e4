from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline
from rag.errors import IngestError
from rag.store.faiss import FaissStore
from tests.docgen import make_pdf
from tests.fakes import CountingEmbeddings, WordTokenizer


@pytest.fixture
def store(index_dir: Path, fake_embeddings: CountingEmbeddings) -> FaissStore:
    return FaissStore(index_dir, fake_embeddings, model_id="fake", dimension=32)


@pytest.fixture
def pipeline(store: FaissStore, fake_embeddings: CountingEmbeddings) -> IngestPipeline:
    chunker = TokenChunker(WordTokenizer(window=40), size=30, overlap=5)
    return IngestPipeline(store, fake_embeddings, chunker, batch_size=8)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nApples are red. " * 20)
    (folder / "b.txt").write_text("Bananas are yellow.")
    make_pdf(folder / "c.pdf", ["Cherries page one.", "Cherries page two."])
    return folder


def test_first_run_adds_everything_in_batches(pipeline, docs, store, fake_embeddings):
    report = pipeline.run([docs])
    assert report.to_json()["added"] == 3
    assert report.chunks == store.chunk_count() > 3
    assert fake_embeddings.texts == report.chunks
    assert fake_embeddings.calls < report.chunks  # batched, never one chunk per call
    pages = {c.page for c in store.all_chunks() if c.source.endswith("c.pdf")}
    assert pages == {1, 2}


def test_rerun_on_unchanged_files_embeds_nothing(pipeline, docs, store, fake_embeddings):
    pipeline.run([docs])
    generation = store.current_generation()
    fake_embeddings.calls = fake_embeddings.texts = 0
    report = pipeline.run([docs])
    assert report.to_json() | {"seconds": 0} == {
        "added": 0, "updated": 0, "unchanged": 3, "removed": 0, "failed": [],
        "chunks": 0, "seconds": 0,
    }  # fmt: skip
    assert fake_embeddings.texts == 0
    assert store.current_generation() == generation


def test_changed_file_replaces_its_chunks(pipeline, docs, store):
    pipeline.run([docs])
    (docs / "b.txt").write_text("Blueberries are blue.")
    report = pipeline.run([docs])
    assert report.count("updated") == 1 and report.count("unchanged") == 2
    texts = [c.text for c in store.all_chunks()]
    assert "Blueberries are blue." in texts
    assert "Bananas are yellow." not in texts


def test_prune_removes_documents_of_deleted_files(pipeline, docs, store):
    pipeline.run([docs])
    (docs / "b.txt").unlink()
    assert pipeline.run([docs]).count("removed") == 0  # without --prune nothing goes
    report = pipeline.run([docs], prune=True)
    assert report.count("removed") == 1
    assert all(not c.source.endswith("b.txt") for c in store.all_chunks())


def test_identical_content_under_two_names_is_stored_once(pipeline, docs, store):
    (docs / "copy.txt").write_bytes((docs / "b.txt").read_bytes())
    pipeline.run([docs])
    (banana,) = [d for d in store.documents() if any(s.endswith("b.txt") for s in d.sources)]
    assert sorted(Path(s).name for s in banana.sources) == ["b.txt", "copy.txt"]
    assert sum("Bananas" in c.text for c in store.all_chunks()) == 1


def test_bad_files_are_reported_and_the_rest_ingested(pipeline, docs, store):
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage that is not a pdf")
    (docs / "renamed.pdf").write_bytes(bytes(range(256)) * 4)
    (docs / "empty.txt").write_text("")
    report = pipeline.run([docs])
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert set(failed) == {"broken.pdf", "renamed.pdf", "empty.txt"}
    assert "not a valid PDF" in failed["renamed.pdf"]
    assert failed["empty.txt"] == "empty file"
    assert report.count("added") == 3


def test_a_file_that_turns_corrupt_keeps_its_old_chunks(pipeline, docs, store):
    pipeline.run([docs])
    before = [c.text for c in store.all_chunks() if c.source.endswith("c.pdf")]
    (docs / "c.pdf").write_bytes(b"%PDF-1.4 now corrupt")
    report = pipeline.run([docs])
    assert report.count("failed") == 1
    assert [c.text for c in store.all_chunks() if c.source.endswith("c.pdf")] == before


def test_missing_path_writes_nothing(pipeline, docs, store, tmp_path):
    with pytest.raises(IngestError, match="no such file"):
        pipeline.run([docs, tmp_path / "missing"])
    assert not store.exists()


def test_progress_reports_both_stages(store, fake_embeddings, docs):
    seen: list[tuple[str, int, int]] = []
    chunker = TokenChunker(WordTokenizer(window=40), size=30, overlap=5)
    pipeline = IngestPipeline(
        store, fake_embeddings, chunker, batch_size=4, progress=lambda *a: seen.append(a)
    )
    pipeline.run([docs])
    assert ("parse", 3, 3) in seen
    embeds = [done for stage, done, _ in seen if stage == "embed"]
    assert embeds == sorted(embeds) and embeds[-1] == store.chunk_count()


def test_force_reembeds_unchanged_files_and_keeps_every_name(pipeline, docs, store):
    (docs / "copy.txt").write_bytes((docs / "b.txt").read_bytes())
    pipeline.run([docs], titles={docs / "b.txt": "Bananas.txt"})
    before = {d.id: sorted(d.sources) for d in store.documents()}
    old_ids = {c.chunk_id: c.id for c in store.all_chunks()}
    report = pipeline.run([docs / "b.txt"], force=True)
    assert report.count("updated") == 1 and report.chunks > 0
    assert {d.id: sorted(d.sources) for d in store.documents()} == before
    banana = next(d for d in store.documents() if "Bananas.txt" in d.titles)
    assert banana.name == "Bananas.txt"
    new_rows = {c.chunk_id: c.id for c in store.all_chunks() if c.doc_id == banana.id}
    assert all(new_rows[k] != old_ids[k] for k in new_rows)  # fresh vectors
    assert store.chunk_count() == len(old_ids)


def test_titles_name_uploads_stored_under_generated_names(pipeline, tmp_path, store):
    stored = tmp_path / "3f9c2a.md"
    stored.write_text("# Guide\n\nThe guide explains uploads.")
    pipeline.run([stored], titles={stored: "User Guide.md"})
    (chunk,) = store.all_chunks()
    assert chunk.name == "User Guide.md"
    assert chunk.to_document().metadata["title"] == "User Guide.md"
    assert chunk.source == str(stored.resolve())


# -- streaming, checkpoints, resume ------------------------------------------------------


def write_long(path: Path, paragraphs: int = 1200, topic: str = "topic") -> Path:
    path.write_text("\n\n".join(f"Paragraph {i} explains {topic} {i}." for i in range(paragraphs)))
    return path


def checkpointing(store, embeddings, progress=None, **kw) -> IngestPipeline:
    chunker = TokenChunker(WordTokenizer(window=40), size=30, overlap=5)
    return IngestPipeline(
        store,
        embeddings,
        chunker,
        batch_size=8,
        checkpoint_chunks=64,
        progress=progress or (lambda *a: None),
        progress_interval_s=0,
        **kw,
    )


class Interrupt:
    """A progress callback that stops the run (like Ctrl-C) after some checkpoints."""

    def __init__(self, after_publishes: int) -> None:
        self.left = after_publishes
        self.events: list[tuple[str, int, int]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.events.append((stage, done, total))
        if stage == "publish":
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


def test_a_large_file_is_published_in_checkpoints_while_it_is_read(tmp_path, store):
    big = write_long(tmp_path / "big.txt")
    seen: list[tuple[str, int, int]] = []
    states: list[tuple[int, bool]] = []

    def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))
        if stage == "publish":  # what a reader sees after each checkpoint
            (doc,) = store.documents()
            states.append((doc.chunks, doc.complete))

    embeddings = CountingEmbeddings(size=32)
    report = checkpointing(store, embeddings, progress).run([big])
    total = store.chunk_count()
    assert report.count("added") == 1 and report.chunks == total > 300
    assert report.checkpoints == len(states) > 4
    assert all(not complete for _, complete in states[:-1]) and states[-1] == (total, True)
    assert [n for n, _ in states] == sorted(n for n, _ in states)
    # Progress moves inside the one file: chunks embedded before the file was read whole.
    first_embed = next(i for i, e in enumerate(seen) if e[0] == "embed")
    assert first_embed < seen.index(("parse", 1, 1))
    assert embeddings.texts == total


def test_an_interrupted_run_keeps_its_checkpoints_and_the_next_run_resumes(tmp_path, store):
    big = write_long(tmp_path / "big.txt")
    small = tmp_path / "small.md"
    small.write_text("# Small\n\nA small note.")
    first = CountingEmbeddings(size=32)
    with pytest.raises(KeyboardInterrupt):
        checkpointing(store, first, Interrupt(after_publishes=3)).run([small, big])
    (partial,) = [d for d in store.documents() if not d.complete]
    assert partial.sources == [str(big.resolve())]
    stored = partial.chunks
    assert stored >= 3 * 64 - 2  # three checkpoints (the first also held small.md)
    assert any(d.complete and d.name == "small.md" for d in store.documents())

    second = CountingEmbeddings(size=32)
    report = checkpointing(store, second).run([small, big])
    assert report.count("unchanged") == 1 and report.count("added") == 1
    (resumed,) = report.resumed
    assert resumed.resumed == stored
    (doc,) = [d for d in store.documents() if d.name == "big.txt"]
    assert doc.complete
    assert second.texts == report.chunks == doc.chunks - stored  # nothing embedded twice

    # The result is the same as one uninterrupted run.
    fresh = FaissStore(
        tmp_path / "fresh", CountingEmbeddings(size=32), model_id="fake", dimension=32
    )
    checkpointing(fresh, CountingEmbeddings(size=32)).run([small, big])
    texts = [(c.chunk_id, c.text) for c in store.all_chunks()]
    assert texts == [(c.chunk_id, c.text) for c in fresh.all_chunks()]


def test_a_changed_file_keeps_its_old_version_until_the_new_one_is_complete(tmp_path, store):
    doc = write_long(tmp_path / "doc.txt", paragraphs=50, topic="apples")
    pipeline = checkpointing(store, CountingEmbeddings(size=32))
    pipeline.run([doc])
    write_long(doc, paragraphs=1200, topic="pears")
    with pytest.raises(KeyboardInterrupt):
        checkpointing(store, CountingEmbeddings(size=32), Interrupt(2)).run([doc])
    searchable = " ".join(c.text for c in store.all_chunks())
    assert "apples" in searchable and "pears" not in searchable
    docs = store.documents()
    assert sorted(d.complete for d in docs) == [False, True]
    assert store.find_document(str(doc)) == next(d.id for d in docs if d.complete)

    report = pipeline.run([doc])
    assert report.count("updated") == 1
    (only,) = store.documents()
    assert only.complete
    searchable = " ".join(c.text for c in store.all_chunks())
    assert "pears" in searchable and "apples" not in searchable


def fail_after(opener, blocks: int, error: BaseException):
    def open_failing(path: Path):
        stream = opener(path)
        inner = stream.blocks

        def failing():
            for n, block in enumerate(inner):
                if n == blocks:
                    raise error
                yield block

        stream.blocks = failing()
        return stream

    return open_failing


def test_one_file_failing_part_way_is_its_outcome_and_the_run_goes_on(tmp_path, store, docs):
    from ingest.loaders import open_stream

    bad = docs / "bad.md"
    bad.write_text("\n\n".join(f"# Part {i}\n\nSection {i} of a damaged file." for i in range(400)))
    crash = docs / "crash.md"
    crash.write_text("# Crash\n\nThis one makes the parser fail with a bug.")

    def opener(path: Path):
        if path.name == "bad.md":  # damaged on section 300, after a few checkpoints
            return fail_after(open_stream, 300, IngestError(path, "damaged section"))(path)
        if path.name == "crash.md":
            return fail_after(open_stream, 0, ValueError("parser bug"))(path)
        return open_stream(path)

    report = checkpointing(store, CountingEmbeddings(size=32), opener=opener).run([docs])
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert failed["crash.md"] == "unexpected parser error: ValueError: parser bug"
    assert failed["bad.md"].startswith("damaged section (the first ")
    assert "marked partial" in failed["bad.md"]
    assert report.count("added") == 3  # a.md, b.txt, c.pdf
    partial = next(d for d in store.documents() if d.name == "bad.md")
    assert not partial.complete and partial.chunks >= 64  # published checkpoints stay
    assert not any("crash" in c.source for c in store.all_chunks())


def test_a_run_with_nothing_to_write_never_takes_the_lock(index_dir, docs, fake_embeddings):
    store = FaissStore(index_dir, fake_embeddings, model_id="fake", dimension=32)
    checkpointing(store, fake_embeddings).run([docs])
    store.lock_timeout_s = 0.2
    with store.writer():  # another ingestion is publishing
        report = checkpointing(store, fake_embeddings).run([docs])
    assert report.count("unchanged") == 3 and report.checkpoints == 0


def test_a_second_ingestion_waits_for_the_first_to_publish(index_dir, docs, fake_embeddings):
    import threading

    store = FaissStore(index_dir, fake_embeddings, model_id="fake", dimension=32)
    seen: list[tuple[str, int, int]] = []
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with store.writer():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(5)

    def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))
        if stage == "wait":
            release.set()

    report = checkpointing(store, fake_embeddings, progress).run([docs])
    thread.join()
    assert report.count("added") == 3
    waits = [(done, total) for stage, done, total in seen if stage == "wait"]
    assert waits and waits[0][1] == int(store.lock_timeout_s)


def test_content_stored_meanwhile_by_another_ingestion_is_only_named(tmp_path, store):
    from ingest.loaders import open_stream

    a = write_long(tmp_path / "a.txt", paragraphs=40)
    b = tmp_path / "b.txt"
    b.write_bytes(a.read_bytes())
    other = checkpointing(store, CountingEmbeddings(size=32))

    def opener(path: Path):
        if path.name == "a.txt":
            other.run([b])  # another process stores the same content while we read a.txt
        return open_stream(path)

    report = checkpointing(store, CountingEmbeddings(size=32), opener=opener).run([a])
    assert report.count("added") == 1 and report.chunks == 0  # ours were not needed
    (doc,) = store.documents()
    assert sorted(Path(s).name for s in doc.sources) == ["a.txt", "b.txt"]
    assert store.chunk_count() == doc.chunks


def test_a_huge_binary_file_is_refused_before_it_is_read_whole(tmp_path, store, pipeline):
    sparse = tmp_path / "huge.txt"
    with sparse.open("wb") as fh:
        fh.truncate(4 << 30)  # 4 GiB of zeros, no disk used
    report = pipeline.run([sparse])
    (failed,) = report.failed
    assert "binary" in (failed.reason or "")


# -- what the CLI prints -----------------------------------------------------------------


def test_file_names_cannot_forge_summary_lines(capsys):
    from ingest.pipeline import FileOutcome, IngestReport
    from rag.cli.ingest import print_report

    forged = "/docs/evil\nadded 999, updated 0\x1b[2K\u202etxt.pdf"
    report = IngestReport(files=[FileOutcome(forged, "failed", "bad\rreason")])
    print_report(report, as_json=False)
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and len(out.splitlines()) == 1
    assert "\x1b" not in err and "\u202e" not in err and "\r" not in err
    assert "evil\\x0aadded 999" in err
    print_report(report, as_json=True)
    out, _ = capsys.readouterr()
    assert json.loads(out)["failed"][0]["path"] == forged  # the real name, escaped


def test_docs_list_shows_a_partial_document_as_such(tmp_path, store):
    from rag.cli.ingest import document_line

    big = write_long(tmp_path / "big.txt")
    with pytest.raises(KeyboardInterrupt):
        checkpointing(store, CountingEmbeddings(size=32), Interrupt(2)).run([big])
    (doc,) = store.documents()
    line = document_line(doc)
    assert f"partial: {doc.chunks:,} chunks; run ingest again to finish" in line
    assert line.endswith(str(big.resolve()))
    assert doc.to_json()["complete"] is False


def test_waiting_for_the_lock_is_said_on_stderr(capsys):
    from rag.cli.ingest import _Bars

    bars = _Bars(enabled=False)  # not a terminal: a line now and then, not every second
    for second in range(1, 4):
        bars("wait", second, 600)
    _, err = capsys.readouterr()
    assert err == "waiting for another ingestion to publish… 1 s\n"


# -- review findings (issue 9) -----------------------------------------------------------


def sections(path: Path, n: int = 400) -> Path:
    path.write_text("\n\n".join(f"# Part {i}\n\nSection {i} of the guide." for i in range(n)))
    return path


def test_a_failed_forced_reindex_keeps_the_complete_copy_searchable(tmp_path, store):
    from ingest.loaders import open_stream

    guide = sections(tmp_path / "guide.md")
    checkpointing(store, CountingEmbeddings(size=32)).run([guide])
    (before,) = store.documents()
    texts = [c.text for c in store.all_chunks()]
    assert before.complete and before.chunks >= 400
    seen: list[tuple[bool, int]] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage in ("embed", "publish"):  # what a search sees while the re-index runs
            (doc,) = store.documents()
            seen.append((doc.complete, doc.chunks))

    failing = fail_after(open_stream, 300, IngestError(guide, "damaged section"))
    report = checkpointing(store, CountingEmbeddings(size=32), progress, opener=failing).run(
        [guide], force=True
    )
    (failed,) = report.failed
    assert failed.reason == "damaged section"  # nothing of the new copy was kept
    (after,) = store.documents()
    assert after.complete and after.chunks == before.chunks
    assert [c.text for c in store.all_chunks()] == texts
    assert seen and set(seen) == {(True, before.chunks)}

    # A forced re-index that succeeds swaps the new copy in whole, in one transaction.
    seen.clear()
    report = checkpointing(store, CountingEmbeddings(size=32), progress).run([guide], force=True)
    assert report.count("updated") == 1 and report.checkpoints == 1
    assert set(seen) == {(True, before.chunks)}
    assert [c.text for c in store.all_chunks()] == texts


def test_a_bug_in_the_chunker_is_an_error_not_a_failed_file_each(store, fake_embeddings, docs):
    class BrokenChunker(TokenChunker):
        def split(self, blocks):
            raise RuntimeError("chunker bug")

    pipeline = IngestPipeline(store, fake_embeddings, BrokenChunker(WordTokenizer(), 30, 5))
    with pytest.raises(RuntimeError, match="chunker bug"):
        pipeline.run([docs])


def test_resume_after_the_chunking_changed_to_more_chunks_reads_again(tmp_path, store):
    big = write_long(tmp_path / "big.txt")
    with pytest.raises(KeyboardInterrupt):
        checkpointing(store, CountingEmbeddings(size=32), Interrupt(3)).run([big])
    (partial,) = store.documents()
    assert not partial.complete

    def finer(target: FaissStore) -> IngestPipeline:  # smaller chunks: more of them
        chunker = TokenChunker(WordTokenizer(window=40), size=20, overlap=5)
        return IngestPipeline(target, CountingEmbeddings(size=32), chunker, checkpoint_chunks=64)

    report = finer(store).run([big])
    assert report.count("added") == 1 and not report.resumed
    fresh = FaissStore(
        tmp_path / "fresh", CountingEmbeddings(size=32), model_id="fake", dimension=32
    )
    finer(fresh).run([big])
    assert [c.text for c in store.all_chunks()] == [c.text for c in fresh.all_chunks()]
    (doc,) = store.documents()
    assert doc.complete and doc.chunks == fresh.chunk_count()


def test_a_failed_file_counts_the_chunks_it_published(tmp_path, store):
    from ingest.loaders import open_stream

    bad = sections(tmp_path / "bad.md")
    failing = fail_after(open_stream, 300, IngestError(bad, "damaged section"))
    report = checkpointing(store, CountingEmbeddings(size=32), opener=failing).run([bad])
    (failed,) = report.failed
    (partial,) = store.documents()
    assert failed.chunks == partial.chunks == report.chunks > 0
    assert f"the first {partial.chunks:,} chunks stay in the index" in (failed.reason or "")


def test_a_cli_run_does_not_hold_the_index_it_read_first(tmp_path, store):
    docs_ = [write_long(tmp_path / f"doc{i}.txt", paragraphs=100) for i in range(3)]
    checkpointing(store, CountingEmbeddings(size=32)).run(docs_[:1])
    store.documents()  # a reader opened the published generation
    held: list[bool] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage in ("embed", "publish"):
            held.append(store._current is not None)

    pipeline = checkpointing(store, CountingEmbeddings(size=32), progress, release_generation=True)
    report = pipeline.run(docs_)
    assert report.count("added") == 2 and report.count("unchanged") == 1
    assert held and not any(held)
