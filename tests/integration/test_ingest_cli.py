"""The ingest side end to end, with the real bundled embedding model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag.cli import main
from rag.service.components import build_store
from rag.settings import Settings
from tests.docgen import make_docx, make_html, make_markdown, make_pdf

PDF_PAGES = [
    "Chapter one explains the history of lighthouses along the northern coast.",
    "The Skerryvore lighthouse keeper recorded wind speeds every four hours in a logbook.",
    "Maintenance of the Fresnel lens requires polishing with jeweller's rouge once a month.",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    make_pdf(folder / "lighthouses.pdf", PDF_PAGES, headings=["History", "Keepers", "Lenses"])
    make_docx(
        folder / "budget.docx",
        [
            ("Overview", "This report summarises the annual budget of the rowing club."),
            ("Boats", "The club will buy two carbon racing shells for 48,000 euros in spring."),
        ],
    )
    make_html(
        folder / "manual.html",
        [
            ("Installation", "Unpack the archive and run the setup wizard as administrator."),
            ("Backups", "Nightly backups are written to the vault at two in the morning."),
        ],
    )
    make_markdown(
        folder / "recipes.md",
        [
            ("Bread", "Knead the sourdough for ten minutes and let it rise overnight."),
            ("Soup", "Simmer the lentil soup with cumin and smoked paprika for forty minutes."),
        ],
    )
    return folder


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def search(capsys, index: Path, query: str, k: int = 3) -> list[dict]:
    code, out, _ = run(capsys, "search", query, "-k", str(k), "--json", "--index", str(index))
    assert code == 0
    return json.loads(out)


@pytest.mark.parametrize(
    ("query", "source", "page", "needle"),
    [
        (
            "how often were wind speeds written down by the keeper",
            "lighthouses.pdf",
            2,
            "Skerryvore",
        ),
        ("what do you polish the lens with", "lighthouses.pdf", 3, "jeweller's rouge"),
        ("how much do the new racing boats cost", "budget.docx", None, "48,000 euros"),
        ("when do the nightly backups run", "manual.html", None, "two in the morning"),
        ("what spices go in the lentil soup", "recipes.md", None, "smoked paprika"),
    ],
)
def test_search_finds_the_right_chunk_source_and_page(
    capsys, corpus, tmp_path, query, source, page, needle
):
    index = tmp_path / "index"
    code, out, _ = run(capsys, "ingest", str(corpus), "--index", str(index), "--json")
    assert code == 0
    assert json.loads(out)["added"] == 4
    top = search(capsys, index, query)[0]
    assert Path(top["source"]).name == source
    assert top["page"] == page
    assert needle in top["text"]


def test_incremental_reingest_prune_and_delete(capsys, corpus, tmp_path):
    index = tmp_path / "index"
    code, out, _ = run(capsys, "ingest", str(corpus), "--index", str(index), "--json")
    first = json.loads(out)
    assert code == 0 and first["added"] == 4 and first["chunks"] > 4

    # Unchanged: nothing is embedded again.
    code, out, _ = run(capsys, "ingest", str(corpus), "--index", str(index), "--json")
    again = json.loads(out)
    assert (again["unchanged"], again["added"], again["updated"], again["chunks"]) == (4, 0, 0, 0)

    # Changed: the old chunks are replaced.
    make_markdown(corpus / "recipes.md", [("Salad", "Dress the beetroot salad with walnut oil.")])
    code, out, _ = run(capsys, "ingest", str(corpus), "--index", str(index), "--json")
    assert json.loads(out)["updated"] == 1
    texts = " ".join(hit["text"] for hit in search(capsys, index, "lentil soup spices", k=20))
    assert "smoked paprika" not in texts and "walnut oil" in texts

    # Prune: a deleted file's chunks go.
    (corpus / "manual.html").unlink()
    code, out, _ = run(capsys, "ingest", str(corpus), "--prune", "--index", str(index), "--json")
    assert json.loads(out)["removed"] == 1
    hits = search(capsys, index, "nightly backups", k=20)
    assert all(not h["source"].endswith("manual.html") for h in hits)

    # docs list / docs delete by path.
    code, out, _ = run(capsys, "docs", "list", "--json", "--index", str(index))
    listed = json.loads(out)
    assert len(listed) == 3
    assert set(listed[0]) == {
        "id", "sources", "pages", "chunks", "ingested_at", "complete", "name", "titles",
        "pii", "flagged_chunks", "collection",
    }  # fmt: skip
    assert all(d["complete"] for d in listed)
    pdf = next(d for d in listed if d["sources"][0].endswith(".pdf"))
    assert pdf["pages"] == 3
    code, out, _ = run(
        capsys, "docs", "delete", str(corpus / "lighthouses.pdf"), "--index", str(index)
    )
    assert code == 0 and "deleted" in out
    hits = search(capsys, index, "lighthouse keeper", k=20)
    assert all(not h["source"].endswith(".pdf") for h in hits)
    code, _, err = run(capsys, "docs", "delete", "no-such-doc", "--index", str(index))
    assert code == 2 and err.count("\n") == 1 and "no-such-doc" in err


def test_bad_files_are_named_the_rest_indexed_and_exit_nonzero(capsys, corpus, tmp_path):
    index = tmp_path / "index"
    run(capsys, "ingest", str(corpus / "recipes.md"), "--index", str(index))
    (corpus / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> trailer garbage")
    (corpus / "photo.pdf").write_bytes(os.urandom(4096))
    code, out, err = run(capsys, "ingest", str(corpus), "--index", str(index))
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(lines) == 2
    assert any("corrupt.pdf" in line and "PDF" in line for line in lines)
    assert any("photo.pdf" in line and "not a valid PDF" in line for line in lines)
    assert "Traceback" not in err
    assert "added 3" in out and "unchanged 1" in out and "failed 2" in out
    assert Path(search(capsys, index, "sourdough")[0]["source"]).name == "recipes.md"


def test_setup_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "ingest", str(tmp_path / "nope"), "--index", str(tmp_path / "i"))
    assert code == 2 and err.strip().count("\n") == 0 and "nope" in err
    code, _, err = run(capsys, "search", "x", "--index", str(tmp_path / "empty"))
    assert code == 2 and "no index" in err and "Traceback" not in err
    code, _, err = run(capsys, "ingest", str(tmp_path), "--chunk-size", "400")
    assert code == 2 and "RAG_CHUNK_SIZE" in err


def test_model_mismatch_names_both_models(capsys, corpus, tmp_path, monkeypatch):
    index = tmp_path / "index"
    run(capsys, "ingest", str(corpus / "recipes.md"), "--index", str(index))
    manifest = next((index / "manifests").glob("g*.json"))
    data = json.loads(manifest.read_text())
    data["embedding_model"] = "other-model"
    manifest.write_text(json.dumps(data))
    code, _, err = run(capsys, "search", "bread", "--index", str(index))
    assert code == 2
    assert "other-model" in err and "all-MiniLM-L6-v2" in err


def test_no_chunk_exceeds_the_embedding_window(tmp_path):
    from ingest.chunking import HFTokenizer
    from ingest.loaders import load

    settings = Settings(index_dir=tmp_path / "index")
    tokenizer = HFTokenizer(settings.embedding_model_path())
    assert tokenizer.window == 256
    nasty = tmp_path / "nasty.md"
    long_word = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 40
    url = "https://example.org/" + "/".join(f"seg{i}x{i * 7}" for i in range(200))
    nasty.write_text(
        "# Unbroken\n\n" + " ".join(f"token{i}" for i in range(3000))
        + "\n\n# Long word\n\n" + long_word + " " + url
        + "\n\n# Unicode\n\n" + "Übergrößenträger naïve façade 東京都庁 " * 300
        + "\n\n# Numbers\n\n" + " ".join(str(i * 7919) + "." for i in range(2000))
    )  # fmt: skip
    from ingest.chunking import TokenChunker

    chunker = TokenChunker(tokenizer, settings.chunk_size, settings.chunk_overlap)
    chunks = chunker.split(load(nasty).blocks)
    assert len(chunks) > 20
    worst = max(tokenizer.count(c.text) for c in chunks)
    assert worst <= tokenizer.window, worst
    # The largest chunk size allowed by the window is refused beyond it.
    TokenChunker(tokenizer, 254, 0)


def _state(index: Path) -> tuple:
    store = build_store(Settings(index_dir=index))
    docs = sorted((d.id, tuple(d.sources), d.chunks) for d in store.documents())
    chunks = sorted((c.chunk_id, c.text) for c in store.all_chunks())
    return docs, chunks, store.chunk_count()


def test_sigkill_while_embedding_leaves_the_previous_index(tmp_path, corpus):
    index = tmp_path / "index"
    env = {**os.environ, "RAG_EMBEDDING_BATCH_SIZE": "4"}
    base = [sys.executable, "-m", "ingest", "--index", str(index)]
    subprocess.run([*base, str(corpus)], check=True, env=env, capture_output=True, timeout=300)
    before = _state(index)
    assert before[2] > 0

    big = tmp_path / "big"
    big.mkdir()
    for i in range(12):
        (big / f"part{i}.txt").write_text(
            "\n\n".join(f"Paragraph {j} of part {i} about topic {i * j}." * 8 for j in range(40))
        )
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "-vv", "ingest", "--index", str(index), str(big)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    batches = 0
    for line in proc.stderr:
        if "embedded batch" in line:
            batches += 1
            if batches == 3:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, "the ingestion ended before it was killed"
    assert _state(index) == before

    # The lock died with the process and the next run publishes normally.
    result = subprocess.run(
        [*base, "--json", str(big)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 12
    after = _state(index)
    assert after[2] > before[2]
    assert len(list((index / "manifests").glob("g*.json"))) == 2


def test_sigkill_after_a_checkpoint_keeps_it_and_the_next_run_resumes(capsys, tmp_path):
    index = tmp_path / "index"
    book = tmp_path / "book.txt"
    book.write_text(
        "\n\n".join(
            " ".join(f"In year {i} the keeper logged wind number {j} at dawn." for j in range(10))
            for i in range(150)
        )
    )
    env = {**os.environ, "RAG_EMBEDDING_BATCH_SIZE": "16", "RAG_CHECKPOINT_CHUNKS": "64"}
    flags = ["--index", str(index), "--chunk-size", "64", "--chunk-overlap", "8"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "-v", "ingest", *flags, str(book)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "checkpoint 1:" in line:  # the first checkpoint is published
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, "the ingestion ended before it was killed"

    (doc,) = build_store(Settings(index_dir=index)).documents()
    assert not doc.complete and doc.chunks >= 64  # the checkpoint survived kill -9
    stored = doc.chunks
    code, out, _ = run(capsys, "docs", "list", "--index", str(index))
    assert code == 0 and f"partial: {stored:,} chunks; run ingest again to finish" in out

    # The next run resumes: it embeds only the chunks that were not stored.
    result = subprocess.run(
        [sys.executable, "-m", "ingest", *flags, "--json", str(book)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["added"] == 1 and summary["failed"] == []
    store = build_store(Settings(index_dir=index))
    (doc,) = store.documents()
    assert doc.complete and doc.chunks > stored
    assert summary["chunks"] == doc.chunks - stored  # nothing stored was embedded again
    assert store.chunk_count() == doc.chunks
    hits = search(capsys, index, "wind number 7 in year 149")
    assert "year 149" in hits[0]["text"]
