from __future__ import annotations

from pathlib import Path

import pytest

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline
from rag.errors import IngestError
from rag.store import FaissStore
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
