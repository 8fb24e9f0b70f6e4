"""Large legitimate files through the real pipeline and the real parser sandbox.

Generates (in a temporary folder) a 10,000-page PDF, a 50,000-paragraph DOCX, a 50 MB HTML
page and a 100 MB text file, ingests each in a fresh process (so peak memory is per file)
and prints per file: chunks, seconds, time to the first progress report, checkpoints, and
the peak resident memory of the main process and of the parser worker. Then it kills an
ingestion (SIGKILL) after a few checkpoints, runs it again, and prints how many stored
chunks were embedded a second time (should be 0).

With ``--fake-embeddings`` (the default for the large files) a fast deterministic 384-d
embedding stands in for the model, so memory and streaming are measured without an hour
of embedding; ``--real-slice MB`` also times the real model on the first MB of the text.

    python bench/large_files.py [--only pdf,docx,html,text] [--real-slice 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hostile import docx_large, html_large, pdf_many_pages, text_large

ROOT = Path(__file__).resolve().parent.parent


def _vm_hwm_kb(pid: int | None) -> int:
    """Peak resident memory (VmHWM) of a live process, 0 if it is gone."""
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def ingest_one(path: Path, index: Path, *, fake: bool, checkpoint: int) -> dict[str, Any]:
    """Ingest one file in this process and measure it (run as ``--one``)."""
    import logging

    from langchain_core.embeddings import DeterministicFakeEmbedding

    from ingest.chunking import HFTokenizer, TokenChunker
    from ingest.pipeline import IngestPipeline
    from ingest.sandbox import ParseLimits, ParserSandbox
    from rag.service.components import build_store
    from rag.settings import Settings
    from rag.store.faiss import FaissStore

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    settings = Settings(index_dir=index, checkpoint_chunks=checkpoint)
    embedded = 0

    class Counting(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            nonlocal embedded
            embedded += len(texts)
            return super().embed_documents(texts)

    if fake:
        store = FaissStore(index, Counting(size=384), model_id="fake-384", dimension=384)
        embeddings: Any = store.embeddings
    else:
        store = build_store(settings)
        embeddings = store.embeddings
        embeddings.embed_query("warm up")  # load the model before the clock starts

        real = embeddings

        class CountingReal:
            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                nonlocal embedded
                embedded += len(texts)
                return real.embed_documents(texts)

        embeddings = CountingReal()
    chunker = TokenChunker(
        HFTokenizer(settings.embedding_model_path()), settings.chunk_size, settings.chunk_overlap
    )
    first: list[float] = []
    worker_peak = [0]
    started = 0.0

    with ParserSandbox(ParseLimits.from_settings(settings)) as sandbox:
        sandbox.ready_worker()  # worker start-up is not the file's time

        def progress(stage: str, done: int, total: int) -> None:
            if stage in ("read", "embed", "publish") and not first:
                first.append(time.perf_counter() - started)
            worker_peak[0] = max(worker_peak[0], _vm_hwm_kb(sandbox.worker_pid))

        pipeline = IngestPipeline(
            store,
            embeddings,
            chunker,
            batch_size=settings.embedding_batch_size,
            checkpoint_chunks=checkpoint,
            opener=sandbox.open,
            progress=progress,
            release_generation=True,  # as `ragchat ingest` runs it
        )
        started = time.perf_counter()
        report = pipeline.run([path])
        seconds = time.perf_counter() - started
    outcome = report.files[0]
    return {
        "file": path.name,
        "mb": round(path.stat().st_size / 2**20, 1),
        "status": outcome.status,
        "reason": outcome.reason,
        "chunks": report.chunks,
        "resumed": outcome.resumed,
        "embedded": embedded,
        "seconds": round(seconds, 1),
        "embed_seconds": round(report.embed_seconds, 1),
        "first_progress_s": round(first[0], 2) if first else None,
        "checkpoints": report.checkpoints,
        "main_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "worker_peak_mb": round(worker_peak[0] / 1024),
    }


def _child(path: Path, index: Path, *, fake: bool, checkpoint: int) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(path)]
    cmd += ["--index", str(index), "--checkpoint", str(checkpoint)]
    return cmd + (["--fake-embeddings"] if fake else [])


def run_child(path: Path, index: Path, *, fake: bool, checkpoint: int) -> dict[str, Any]:
    result = subprocess.run(
        _child(path, index, fake=fake, checkpoint=checkpoint),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise SystemExit(f"{path.name}: exit {result.returncode}\n{result.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def interrupted(path: Path, index: Path, *, checkpoint: int, after: int) -> dict[str, Any]:
    """Kill an ingestion after ``after`` checkpoints, run it again, count re-embedded chunks."""
    from rag.store.faiss import FaissStore

    proc = subprocess.Popen(
        _child(path, index, fake=True, checkpoint=checkpoint),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(f"checkpoint {after}:"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    store = FaissStore(index, _Unused(), model_id="fake-384", dimension=384)
    (doc,) = store.documents()
    stored, complete = doc.chunks, doc.complete
    again = run_child(path, index, fake=True, checkpoint=checkpoint)
    (doc,) = FaissStore(index, _Unused(), model_id="fake-384", dimension=384).documents()
    return {
        "file": path.name,
        "killed_with": proc.returncode,
        "stored_at_kill": stored,
        "complete_at_kill": complete,
        "rerun_embedded": again["embedded"],
        "total_chunks": doc.chunks,
        "re_embedded": again["embedded"] - (doc.chunks - stored),
        "rerun_seconds": again["seconds"],
        "complete_after": doc.complete,
    }


class _Unused:
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("not used")

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError("not used")


def slice_of(path: Path, mb: float, out: Path) -> Path:
    with path.open("rb") as src, out.open("wb") as dst:
        dst.write(src.read(int(mb * 2**20)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fake-embeddings", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=int, default=4096, help="RAG_CHECKPOINT_CHUNKS")
    parser.add_argument("--only", default="pdf,docx,html,text", help="which files")
    parser.add_argument("--real-slice", type=float, default=2.0, help="MB timed with the model")
    parser.add_argument("--keep", type=Path, help="generate files here and keep them")
    args = parser.parse_args()
    if args.one:
        data = ingest_one(
            args.one, args.index, fake=args.fake_embeddings, checkpoint=args.checkpoint
        )
        print(json.dumps(data))
        return

    tmp = Path(tempfile.mkdtemp(prefix="large-files-"))
    folder = args.keep or tmp / "files"
    folder.mkdir(parents=True, exist_ok=True)
    makers = {
        "pdf": lambda: pdf_many_pages(folder, pages=10_000),
        "docx": lambda: docx_large(folder, paragraphs=50_000),
        "html": lambda: html_large(folder, mb=50),
        "text": lambda: text_large(folder, mb=100),
    }
    try:
        files: dict[str, Path] = {}
        for name in args.only.split(","):
            t = time.perf_counter()
            files[name] = makers[name]()
            print(f"generated {files[name].name} in {time.perf_counter() - t:.1f}s", flush=True)
        print("\nfake embeddings (384-d, deterministic); real sandbox, tokenizer and store")
        header = (
            f"{'file':24} {'MB':>6} {'chunks':>8} {'s':>7} {'embed s':>8} {'1st progress':>12} "
            f"{'ckpts':>5} {'main MB':>8} {'worker MB':>9}"
        )
        print(header)
        for name, path in files.items():
            r = run_child(path, tmp / f"index-{name}", fake=True, checkpoint=args.checkpoint)
            print(
                f"{r['file']:24} {r['mb']:6} {r['chunks']:8} {r['seconds']:7} "
                f"{r['embed_seconds']:8} {r['first_progress_s']!s:>12} {r['checkpoints']:5} "
                f"{r['main_peak_mb']:8} {r['worker_peak_mb']:9}"
                + (f"  {r['status']}: {r['reason']}" if r["status"] == "failed" else ""),
                flush=True,
            )
        victim = files.get("pdf") or next(iter(files.values()))
        print("\ninterrupted and resumed (SIGKILL after 3 checkpoints of 1024 chunks):")
        print(json.dumps(interrupted(victim, tmp / "index-kill", checkpoint=1024, after=3)))
        if args.real_slice and "text" in files:
            part = slice_of(files["text"], args.real_slice, tmp / "slice.txt")
            r = run_child(part, tmp / "index-real", fake=False, checkpoint=args.checkpoint)
            rate = r["chunks"] / r["seconds"] if r["seconds"] else 0
            print(
                f"\nreal model on {args.real_slice:g} MB of the text: {r['chunks']} chunks in "
                f"{r['seconds']}s ({rate:.1f} chunks/s, embedding {r['embed_seconds']}s), "
                f"first progress {r['first_progress_s']}s, main {r['main_peak_mb']} MB, "
                f"worker {r['worker_peak_mb']} MB"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
