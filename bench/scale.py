"""Scale benchmark: the store at 100k and 1M chunks.

Builds an index of ``--chunks`` synthetic chunks (150-word texts drawn from a Zipf
vocabulary, random unit vectors, or real embeddings with ``--vectors``) through the store's
own writer, compacts it, then measures in a fresh serving process:

- publishing one 10-chunk document (writer opened to ``CURRENT`` renamed), 5 times;
- the first hybrid retrieval after each publish, in a reader that was serving before it
  (it loads only the new segment);
- hybrid retrieval latency (``HybridRetriever.search``, query embedding excluded: the
  query vector is given), p50 / p95 over ``--queries`` questions of four common and two
  content words, and over as many of six words drawn as the chunks' words (mostly words
  in nearly every chunk, which large indexes leave to the vector ranking);
- peak RSS of that serving process (before the recall check, which reads every vector);
- ANN recall@10 of the vector search against exact search over every live vector;
- disk: the index folder against one copy of its data (the database and the segments
  the published generation uses), and the raw text + vector bytes.

    python bench/scale.py --chunks 100000 [--backend faiss|postgres --url URL]
        [--vectors V.npy --query-vectors Q.npy] [--dir DIR] [--json OUT]

Targets (issue 14): publish <= 1 s and first query <= 200 ms at 1M, hybrid p95 <= 50 ms,
recall@10 >= 0.95 (real embeddings), peak RSS <= 2.5 GB, disk <= 1.3x one copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIM = 384
DOC_CHUNKS = 100  # chunks per synthetic document
BATCH_DOCS = 500  # documents per writer (50k chunks, one generation)
WORDS_PER_CHUNK = 150
VOCAB = 30_000


class GivenVector:
    """Embeddings that return the query vector the benchmark set (embedding excluded)."""

    def __init__(self) -> None:
        self.vector: list[float] = [0.0] * DIM

    def embed_query(self, text: str) -> list[float]:
        return self.vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("the benchmark gives every vector")


def vocabulary(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, VOCAB)
    return np.array(["".join(rng.choice(letters, n)) for n in lengths])


def texts(rng: np.random.Generator, words: np.ndarray, n: int) -> list[str]:
    """``n`` chunk texts of WORDS_PER_CHUNK words drawn by a Zipf law."""
    ranks = np.minimum(rng.zipf(1.2, size=(n, WORDS_PER_CHUNK)) - 1, VOCAB - 1)
    return [" ".join(row) for row in words[ranks]]


def questions(rng: np.random.Generator, words: np.ndarray, n: int) -> list[str]:
    """``n`` questions: 4 words drawn as the chunks draw theirs (the, of, how, ...) and 2
    content words drawn evenly from ranks 100 on (each in 0.02% to 10% of the chunks)."""
    common = np.minimum(rng.zipf(1.2, size=(n, 4)) - 1, VOCAB - 1)
    content = rng.integers(100, VOCAB - 1, size=(n, 2))
    return [" ".join(row) for row in words[np.hstack([common, content])]]


def percentiles(seconds: list[float]) -> dict[str, Any]:
    return {
        "p50": round(1000 * statistics.median(seconds), 2),
        "p95": round(1000 * float(np.percentile(seconds, 95)), 2),
        "queries": len(seconds),
    }


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def open_store(args: argparse.Namespace, embeddings: Any, **kw: Any) -> Any:
    if args.backend == "postgres":
        from rag.store.postgres import PostgresStore

        return PostgresStore(args.url, embeddings, model_id="bench-384", dimension=DIM, **kw)
    from rag.store.faiss import FaissStore

    return FaissStore(
        Path(args.dir), embeddings, model_id="bench-384", dimension=DIM, auto_compact=False, **kw
    )


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Write the base index; returns timings."""
    from rag.store.faiss import NewChunk

    rng = np.random.default_rng(7)
    words = vocabulary(rng)
    real = np.load(args.vectors, mmap_mode="r") if args.vectors else None
    store = open_store(args, GivenVector())
    started = time.monotonic()
    written = 0
    text_bytes = 0
    doc_no = 0
    while written < args.chunks:
        with store.writer() as w:
            for _ in range(BATCH_DOCS):
                if written >= args.chunks:
                    break
                n = min(DOC_CHUNKS, args.chunks - written)
                chunk_texts = texts(rng, words, n)
                text_bytes += sum(len(t) for t in chunk_texts)
                if real is not None:
                    vectors = np.asarray(real[written : written + n], dtype=np.float32)
                else:
                    vectors = unit(rng, n)
                w.add_document(
                    f"doc{doc_no:07d}", kind="text", pages=None, source=f"/bench/doc{doc_no}.txt",
                    chunks=[NewChunk(t, page=1 + i // 10) for i, t in enumerate(chunk_texts)],
                    vectors=vectors,
                )  # fmt: skip
                written += n
                doc_no += 1
        print(f"  wrote {written} chunks ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    built = time.monotonic() - started
    compact_s = 0.0
    if args.backend == "faiss":
        t = time.monotonic()
        while (report := store.compact()) is not None:
            said = f"{report.merged} -> {report.into} ({report.kind}, {report.vectors} vectors"
            print(f"  compacted {said}, {report.seconds:.0f} s)", file=sys.stderr)
        compact_s = time.monotonic() - t
    return {
        "build_s": round(built, 1),
        "compact_s": round(compact_s, 1),
        "text_bytes": text_bytes,
        "vector_bytes": args.chunks * DIM * 4,
    }


def serve(args: argparse.Namespace) -> dict[str, Any]:
    """The serving process: publishes, first queries, latency, RSS, recall."""
    from rag.retrieval import HybridRetriever
    from rag.store.faiss import NewChunk

    rng = np.random.default_rng(11)
    words = vocabulary(np.random.default_rng(7))
    given = GivenVector()
    t = time.monotonic()
    reader = open_store(args, given)
    retriever = HybridRetriever(store=reader, k=5)
    given.vector = unit(rng, 1)[0].tolist()
    retriever.search("warm up", within=None)
    open_s = time.monotonic() - t
    queries = unit(rng, args.queries)
    if args.query_vectors:
        queries = np.load(args.query_vectors)[: args.queries].astype(np.float32)
    query_texts = questions(rng, words, args.queries)
    common_texts = [" ".join(t.split()[:6]) for t in texts(rng, words, args.queries)]
    latencies, common_latencies = [], []
    for q, text, common in zip(queries, query_texts, common_texts, strict=True):
        given.vector = q.tolist()
        t = time.perf_counter()
        retriever.search(text, within=None)
        latencies.append(time.perf_counter() - t)
        t = time.perf_counter()
        retriever.search(common, within=None)
        common_latencies.append(time.perf_counter() - t)
    writer_store = open_store(args, given)
    publishes, firsts = [], []
    run = os.getpid()  # new document names on every run (--reuse serves one index again)
    for n in range(5):
        chunk_texts = texts(rng, words, 10)
        t = time.perf_counter()
        with writer_store.writer() as w:
            w.add_document(
                f"new{run}-{n}", kind="text", pages=None, source=f"/bench/new{run}-{n}.txt",
                chunks=[NewChunk(x) for x in chunk_texts], vectors=unit(rng, 10),
            )  # fmt: skip
        publishes.append(time.perf_counter() - t)
        given.vector = queries[n].tolist()
        t = time.perf_counter()
        retriever.search(query_texts[n], within=None)
        firsts.append(time.perf_counter() - t)
    rss_parts = memory_parts()
    recall = (
        measure_recall(reader, queries[: args.recall_queries])
        if args.backend == "faiss"
        else (measure_recall_pg(reader, queries[: args.recall_queries]))
    )
    return {
        "open_and_first_query_s": round(open_s, 3),
        "publish_10_chunks_s": [round(x, 3) for x in publishes],
        "first_query_after_publish_ms": [round(1000 * x, 1) for x in firsts],
        "hybrid_ms": percentiles(latencies),
        "hybrid_ms_common_words_only": percentiles(common_latencies),
        "peak_rss_mb": rss_parts.pop("VmHWM"),
        "rss_now_mb": rss_parts,
        "recall_at_10": recall,
    }


def memory_parts() -> dict[str, int]:
    """Peak resident memory (``VmHWM``), and resident memory now, split: anonymous (the
    process's own) and file-backed (mapped segments, in the page cache and shared).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries it across ``execve``, so a serving
    process started by the builder would report the builder's peak.
    """
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            parts[key] = round(int(value.split()[0]) / 1024)
    return parts


def measure_recall(store: Any, queries: np.ndarray) -> float:
    """Recall@10 of the store's vector search against exact search over live vectors."""
    with store.reader() as view:
        gen = view._gen  # the pinned generation's segments, for the exact answer
        dead = set(gen.dead.tolist())
        found = 0
        exact_scores, exact_ids = [], []
        for seg in gen.segments:
            keep = ~np.isin(seg.labels, np.fromiter(dead, dtype=np.int64))
            vectors = seg.vectors_at(np.flatnonzero(keep))
            exact_scores.append(vectors @ queries.T)
            exact_ids.append(seg.labels[keep])
            del vectors
        scores = np.concatenate(exact_scores)
        ids = np.concatenate(exact_ids)
        for j, q in enumerate(queries):
            truth = set(ids[np.argsort(-scores[:, j])[:10]].tolist())
            got = {r.id for r, _ in view.search_chunks_by_vector(q.tolist(), 10)}
            found += len(truth & got)
    return round(found / (10 * len(queries)), 4)


def measure_recall_pg(store: Any, queries: np.ndarray) -> dict[str, float] | None:
    """Recall@10 of the Postgres store against its own exact search (if it offers one),
    at its ``ef_search`` and at others, with the p95 of the vector search at each."""
    exact = getattr(store, "exact_search", None)
    if exact is None:
        return None
    truths = [{r.id for r, _ in exact(q.tolist(), 10)} for q in queries]
    default, out = store.ef_search, {}
    try:
        for ef in sorted({40, 100, 200, default}):
            store.ef_search = ef
            found, took = 0, []
            for q, truth in zip(queries, truths, strict=True):
                t = time.perf_counter()
                got = {r.id for r, _ in store.search_chunks_by_vector(q.tolist(), 10)}
                took.append(time.perf_counter() - t)
                found += len(truth & got)
            recall = round(found / (10 * len(queries)), 4)
            out[f"ef_search={ef}"] = {"recall": recall, "vector_ms": percentiles(took)}
    finally:
        store.ef_search = default
    return out


def disk(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.dir)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    current = (folder / "CURRENT").read_text().strip()
    manifest = json.loads((folder / "manifests" / f"{current}.json").read_text())
    used = sum((folder / "segments" / f"{s['name']}.faiss").stat().st_size
               for s in manifest["segments"])  # fmt: skip
    one_copy = used + (folder / "meta.sqlite").stat().st_size
    return {
        "folder_bytes": total,
        "one_copy_bytes": one_copy,
        "ratio": round(total / one_copy, 3),
        "segments": [(s["name"], s["kind"], s["count"]) for s in manifest["segments"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--backend", choices=["faiss", "postgres"], default="faiss")
    parser.add_argument("--url", help="postgresql://... for --backend postgres")
    parser.add_argument("--dir", help="index folder (default: a temporary one)")
    parser.add_argument("--vectors", help=".npy of real chunk embeddings (else random)")
    parser.add_argument("--query-vectors", help=".npy of real query embeddings")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reuse", action="store_true", help="serve an index --dir holds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.serve_only:
        print(json.dumps(serve(args)))
        return 0
    tmp = None
    if args.dir is None:
        tmp = tempfile.mkdtemp(prefix="ragchat-scale-")
        args.dir = str(Path(tmp) / "index")
    try:
        result: dict[str, Any] = {"chunks": args.chunks, "backend": args.backend,
                                  "vectors": args.vectors or "random"}  # fmt: skip
        if not args.reuse:
            result["build"] = build(args)
        argv = [sys.executable, __file__, "--serve-only", *sys.argv[1:], "--dir", args.dir]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            return 1
        result["serve"] = json.loads(done.stdout.strip().splitlines()[-1])
        if args.backend == "faiss":
            result["disk"] = disk(args)
        out = json.dumps(result, indent=2)
        print(out)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(out + "\n")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(main())
