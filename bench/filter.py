"""Collection filtering: what a search limited to some collections costs over an unfiltered one.

Builds a ``FaissStore`` in a temporary folder with ``--chunks`` chunks (one- to four-chunk
documents) filed in three collections: ``c1`` holds 1 % of the chunks, ``c10`` 10 % and
``rest`` the other 89 %. Vectors are seeded random unit vectors (dimension 384, not the
real model, which would take too long for 100,000 chunks); texts are words drawn from a
Zipf-like vocabulary of 4,000 generated tokens, so FTS5 has something to rank (keyword
queries are three words, the 100 commonest tokens left out).

Then, for each query, every case is run once, in turn, inside one ``store.reader()`` view
(so pinning a generation is not measured): ``search_chunks_by_vector`` and
``keyword_search`` with ``within`` = None (unfiltered), {c1}, {c10}, {c1, c10, rest}
(100 %, but filtered) and {rest} (89 %). The whole ``HybridRetriever.search`` (fake query
embeddings, its own reader per call) is timed the same way. Prints p50, p95 and mean in ms,
the ratio to the unfiltered search (the issue's target: below 1.5x at p50 and p95), and
checks every filtered result: exactly k hits whenever the allowed collections hold k
matches, all from them. The first filtered search of a generation (which builds the
position-to-collection codes) is timed on its own.

    .venv/bin/python -m bench.filter [--chunks 100000] [--queries 200] [--k 8] [--json]

``--threads N`` sets ``faiss.omp_set_num_threads(N)`` first (default: left as it is; the
store itself searches each query on one thread). ``--json`` also writes the figures to
``bench/results/filter.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from langchain_core.embeddings import DeterministicFakeEmbedding

from rag.evaluation import percentile
from rag.retrieval import HybridRetriever, Mode
from rag.store import collections
from rag.store.faiss import FaissStore, NewChunk, content_id

DIM = 384
VOCABULARY = 4000
WORDS_PER_CHUNK = (20, 60)
CHUNKS_PER_DOC = (1, 4)
QUERY_WORDS = 3
QUERY_SKIP = 100  # query words skip the commonest tokens (they act like stopwords)
SHARES = {"c1": 0.01, "c10": 0.10}  # "rest" gets what is left
REST = "rest"
CASES: dict[str, frozenset[str] | None] = {
    "unfiltered": None,
    "c1 (1 %)": frozenset({"c1"}),
    "c10 (10 %)": frozenset({"c10"}),
    "all 3 (100 %)": frozenset({"c1", "c10", REST}),
    "rest (89 %)": frozenset({REST}),
}
RESULTS = Path(__file__).resolve().parent / "results" / "filter.json"


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    """``size`` distinct pronounceable lower-case tokens (letters only, none a stopword)."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = int(rng.integers(2, 4))
        word = (
            "".join(
                consonants[int(rng.integers(len(consonants)))]
                + vowels[int(rng.integers(len(vowels)))]
                for _ in range(syllables)
            )
            + consonants[int(rng.integers(len(consonants)))]
        )
        words[word] = None
    return list(words)


def _plan(chunks: int) -> list[tuple[str, int]]:
    """(collection, chunks) per document, so each collection holds exactly its share."""
    rng = np.random.default_rng(1)
    quotas = {name: round(chunks * share) for name, share in SHARES.items()}
    quotas[REST] = chunks - sum(quotas.values())
    plan: list[tuple[str, int]] = []
    for name, quota in quotas.items():
        left = quota
        while left > 0:
            n = min(int(rng.integers(CHUNKS_PER_DOC[0], CHUNKS_PER_DOC[1] + 1)), left)
            plan.append((name, n))
            left -= n
    order = rng.permutation(len(plan))  # interleave the collections in the index
    return [plan[i] for i in order]


def build(
    index_dir: Path, chunks: int, batch: int
) -> tuple[FaissStore, list[str], np.ndarray, dict[str, str]]:
    """A store of ``chunks`` chunks; returns it, the vocabulary, word weights, doc -> collection."""
    rng = np.random.default_rng(0)
    vocabulary = _vocabulary(rng, VOCABULARY)
    weights = 1.0 / np.arange(1, VOCABULARY + 1)
    weights /= weights.sum()
    store = FaissStore(
        index_dir, DeterministicFakeEmbedding(size=DIM), model_id="bench-fake", dimension=DIM
    )
    plan = _plan(chunks)
    doc_collection: dict[str, str] = {}
    start = 0
    while start < len(plan):
        end, size = start, 0
        while end < len(plan) and size < batch:
            size += plan[end][1]
            end += 1
        with store.writer() as writer:
            for n, (collection, count) in enumerate(plan[start:end], start):
                texts = []
                for _ in range(count):
                    length = int(rng.integers(WORDS_PER_CHUNK[0], WORDS_PER_CHUNK[1] + 1))
                    picked = rng.choice(VOCABULARY, size=length, p=weights)
                    texts.append(" ".join(vocabulary[i] for i in picked))
                vectors = rng.standard_normal((count, DIM)).astype("float32")
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                doc_id = collections.document_id(
                    content_id(f"bench document {n}".encode()), collection
                )
                writer.add_document(
                    doc_id,
                    kind="text",
                    pages=None,
                    source=f"/bench/{collection}/doc{n:06d}.txt",
                    chunks=[NewChunk(text=t, page=None) for t in texts],
                    vectors=vectors,
                    collection=collection,
                )
                doc_collection[doc_id] = collection
        start = end
    return store, vocabulary, weights, doc_collection


def _queries(
    n: int, vocabulary: list[str], weights: np.ndarray
) -> tuple[list[np.ndarray], list[str]]:
    """``n`` random unit query vectors and ``n`` keyword queries of less common words."""
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((n, DIM)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    p = weights[QUERY_SKIP:] / weights[QUERY_SKIP:].sum()
    texts = []
    for _ in range(n):
        picked = rng.choice(VOCABULARY - QUERY_SKIP, QUERY_WORDS, replace=False, p=p)
        texts.append(" ".join(vocabulary[QUERY_SKIP + i] for i in picked))
    return list(vectors), texts


def _matches(
    db: sqlite3.Connection, chunk_collection: dict[int, str], query: str
) -> dict[str, int]:
    """How many chunks of each collection match the keyword query (the store's own FTS5)."""
    terms = " OR ".join(f'"{t}"' for t in query.split())
    counts = dict.fromkeys((*SHARES, REST), 0)
    for (rowid,) in db.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?", (terms,)):
        counts[chunk_collection[rowid]] += 1
    return counts


class Case:
    """Timings and result checks of one (method, within) pair."""

    def __init__(self, within: frozenset[str] | None) -> None:
        self.within = within
        self.ms: list[float] = []
        self.hits: list[int] = []
        self.short = 0  # fewer than k while the allowed collections held k matches
        self.outside = 0  # hits from a collection not in ``within``

    def check(self, collections_hit: list[str], available: int, k: int) -> None:
        self.hits.append(len(collections_hit))
        if len(collections_hit) < min(k, available):
            self.short += 1
        if self.within is not None:
            self.outside += sum(c not in self.within for c in collections_hit)

    def figures(self, base: Case | None) -> dict[str, Any]:
        p50, p95 = percentile(self.ms, 50), percentile(self.ms, 95)
        out: dict[str, Any] = {
            "p50_ms": round(p50, 3),
            "p95_ms": round(p95, 3),
            "mean_ms": round(float(np.mean(self.ms)), 3),
            "mean_hits": round(float(np.mean(self.hits)), 2),
            "short_results": self.short,
            "outside_hits": self.outside,
        }
        if base is not None:
            out["ratio_p50"] = round(p50 / percentile(base.ms, 50), 3)
            out["ratio_p95"] = round(p95 / percentile(base.ms, 95), 3)
        return out


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - t0) * 1000


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the store, time every case, and return the figures."""
    threads_before = faiss.omp_get_max_threads()
    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)
    report: dict[str, Any] = {
        "chunks": args.chunks,
        "queries": args.queries,
        "k": args.k,
        "dimension": DIM,
        "faiss_threads_requested": args.threads,
        "faiss_max_threads_at_start": threads_before,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store, vocabulary, weights, doc_collection = build(
            Path(tmp) / "index", args.chunks, args.batch
        )
        report["build_s"] = round(time.perf_counter() - t0, 1)
        print(f"built {args.chunks} chunks in {report['build_s']} s")
        vectors, texts = _queries(args.queries + args.warmup, vocabulary, weights)
        k = args.k
        methods = ["vector", "keyword"] + ([] if args.no_hybrid else ["hybrid"])
        cases = {m: {name: Case(within) for name, within in CASES.items()} for m in methods}
        sizes: dict[str, int] = {}
        with store.reader() as view:
            db = view._conn()  # the pinned generation's metadata, for the checks only
            chunk_collection = {
                int(i): doc_collection[d] for i, d in db.execute("SELECT id, doc_id FROM chunks")
            }
            for c in chunk_collection.values():
                sizes[c] = sizes.get(c, 0) + 1
            report["collection_chunks"] = sizes
            # The generation's first filtered search builds its position codes.
            _, first = _timed(
                lambda: view.search_chunks_by_vector(vectors[0], k, CASES["c1 (1 %)"])
            )
            report["first_filtered_vector_search_ms"] = round(first, 1)
            codes, built = _timed(lambda: collections.PositionCodes(view._gen.index, db))
            _, masked = _timed(lambda: codes.mask(CASES["c1 (1 %)"]))
            report["position_codes_build_ms"] = round(built, 1)
            report["mask_ms"] = round(masked, 3)
            matched = []
            for q, (vector, text) in enumerate(zip(vectors, texts, strict=True)):
                measured = q >= args.warmup
                counts = _matches(db, chunk_collection, text)
                if measured:
                    matched.append(sum(counts.values()))
                for name, within in CASES.items():
                    allowed = within or frozenset(sizes)
                    hits, ms = _timed(
                        lambda v=vector, w=within: view.search_chunks_by_vector(v, k, w)
                    )
                    if measured:
                        case = cases["vector"][name]
                        case.ms.append(ms)
                        case.check(
                            [doc_collection[r.doc_id] for r, _ in hits],
                            sum(sizes[c] for c in allowed),
                            k,
                        )
                    hits, ms = _timed(lambda t=text, w=within: view.keyword_search(t, k, w))
                    if measured:
                        case = cases["keyword"][name]
                        case.ms.append(ms)
                        case.check(
                            [doc_collection[r.doc_id] for r, _ in hits],
                            sum(counts[c] for c in allowed),
                            k,
                        )
            report["keyword_matches_per_query_mean"] = round(float(np.mean(matched)), 1)
        if "hybrid" in methods:
            retriever = HybridRetriever(store=store, mode=Mode.HYBRID, k=k)
            for q, text in enumerate(texts):
                for name, within in CASES.items():
                    found, ms = _timed(lambda t=text, w=within: retriever.search(t, within=w))
                    if q >= args.warmup:
                        case = cases["hybrid"][name]
                        case.ms.append(ms)
                        allowed = within or frozenset(sizes)
                        case.check(
                            [doc_collection[d.metadata["doc_id"]] for d, _ in found],
                            sum(sizes[c] for c in allowed),
                            k,
                        )
        store.close()
    report["faiss_max_threads_at_end"] = faiss.omp_get_max_threads()
    report["cases"] = {
        m: {
            name: case.figures(None if name == "unfiltered" else by_name["unfiltered"])
            for name, case in by_name.items()
        }
        for m, by_name in cases.items()
    }
    return report


def show(report: dict[str, Any]) -> None:
    """Print the figures as a table."""
    print(
        f"{report['chunks']} chunks {report['collection_chunks']}, {report['queries']} queries, "
        f"k={report['k']}, faiss threads requested {report['faiss_threads_requested']} "
        f"(max {report['faiss_max_threads_at_start']} at start, "
        f"{report['faiss_max_threads_at_end']} at end)"
    )
    print(
        f"build {report['build_s']} s; first filtered vector search "
        f"{report['first_filtered_vector_search_ms']} ms (PositionCodes build "
        f"{report['position_codes_build_ms']:.1f} ms, one mask {report['mask_ms']:.2f} ms); "
        f"keyword matches per query: {report['keyword_matches_per_query_mean']}"
    )
    head = f"{'method':<9}{'within':<15}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}"
    print(f"\n{head}{'x p50':>8}{'x p95':>8}{'hits':>7}{'short':>7}{'outside':>8}  <1.5x")
    for method, by_name in report["cases"].items():
        for name, f in by_name.items():
            r50, r95 = f.get("ratio_p50"), f.get("ratio_p95")
            ratios = f"{r50:>8.2f}{r95:>8.2f}" if r50 is not None else f"{'':>16}"
            ok = "" if r50 is None else ("yes" if max(r50, r95) < 1.5 else "NO")
            print(
                f"{method:<9}{name:<15}{f['p50_ms']:>9.3f}{f['p95_ms']:>9.3f}{f['mean_ms']:>9.3f}"
                f"{ratios}{f['mean_hits']:>7.2f}{f['short_results']:>7}{f['outside_hits']:>8}  {ok}"
            )


def main() -> None:
    """Run the benchmark, print a table, and write JSON with ``--json``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20, help="queries run before timing")
    parser.add_argument("--batch", type=int, default=25_000, help="chunks per write transaction")
    parser.add_argument("--threads", type=int, default=None, help="faiss.omp_set_num_threads")
    parser.add_argument("--no-hybrid", action="store_true", help="skip HybridRetriever.search")
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS.name}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report = run(args)
    show(report)
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
