"""Ingestion throughput: the whole pipeline against the bare embedding model.

Ingests a real corpus (default: the PostgreSQL 15 manual, HTML, from Debian's
postgresql-doc-15) into a fresh index and prints chunks per second for the pipeline next
to chunks per second of the bare sentence-transformers model on the very same chunks, so
the overhead of everything around the model is visible. Then re-ingests the unchanged
corpus to show the incremental path.

    python bench/ingest.py [--corpus postgresql|PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import PACKAGES, corpus
from ingest.chunking import HFTokenizer, TokenChunker
from ingest.files import iter_files
from ingest.pipeline import IngestPipeline
from ingest.sandbox import ParseLimits, ParserSandbox
from rag.embeddings import load_embeddings
from rag.service.components import build_store
from rag.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="postgresql", help="corpus name or folder")
    parser.add_argument("--limit", type=int, default=0, help="only the first N files")
    parser.add_argument(
        "--index", type=Path, help="keep the index here (default: a temporary folder)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = corpus(args.corpus) if args.corpus in PACKAGES else Path(args.corpus)
    files = [f.path for f in iter_files([root]) if f.problem is None]
    if args.limit:
        files = files[: args.limit]
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"corpus: {root} ({len(files)} files, {size_mb:.1f} MB)")

    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or Path(tmp) / "index"
        if index.exists():
            shutil.rmtree(index)  # measure a fresh ingestion
        settings = Settings(index_dir=index)
        t = time.perf_counter()
        embeddings = load_embeddings(settings)
        embeddings.embed_query("warm up")
        print(f"model load: {time.perf_counter() - t:.1f}s")
        store = build_store(settings, embeddings)
        chunker = TokenChunker(
            HFTokenizer(settings.embedding_model_path()),
            settings.chunk_size,
            settings.chunk_overlap,
        )
        # As `ragchat ingest` runs it: files parsed in the sandboxed worker, checkpoints.
        sandbox = ParserSandbox(ParseLimits.from_settings(settings))
        pipeline = IngestPipeline(
            store,
            embeddings,
            chunker,
            batch_size=settings.embedding_batch_size,
            checkpoint_chunks=settings.checkpoint_chunks,
            opener=sandbox.open,
            release_generation=True,
        )

        report = pipeline.run(files)
        pipe_rate = report.chunks / report.seconds
        print(
            f"pipeline: {report.chunks} chunks from {report.count('added')} files "
            f"({len(report.failed)} failed) in {report.seconds:.1f}s = {pipe_rate:.1f} chunks/s"
        )
        print(
            f"  of which embedding {report.embed_seconds:.1f}s, everything else "
            f"{report.seconds - report.embed_seconds:.1f}s (parse, chunk, hash, store, publish)"
        )

        texts = [c.text for c in store.all_chunks()]
        model = embeddings._client  # the bare SentenceTransformer behind the wrapper
        t = time.perf_counter()
        model.encode(texts, batch_size=settings.embedding_batch_size, normalize_embeddings=True)
        bare = time.perf_counter() - t
        bare_rate = len(texts) / bare
        print(f"bare model: {len(texts)} chunks in {bare:.1f}s = {bare_rate:.1f} chunks/s")
        print(f"pipeline overhead: {100 * (bare_rate / pipe_rate - 1):.1f}% slower than bare model")

        again = pipeline.run(files)
        print(
            f"re-ingest unchanged: {again.count('unchanged')} unchanged, {again.chunks} chunks "
            f"embedded, {again.seconds:.2f}s"
        )
        sandbox.close()
        tokenizer = chunker.tokenizer
        worst = max(tokenizer.count(t) for t in texts)
        print(f"largest chunk: {worst} word-pieces (window {tokenizer.window})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    main()
