"""Time ragchat adds before the first answer token: condense + retrieval + prompt building.

The model is a local OpenAI-compatible stub that streams instantly, so what is measured is
ragchat's own work (plus one loopback HTTP round trip per model call). Indexes of 1k and
100k chunks are built from real embeddings of generated passages, tiled with small random
perturbations to reach the larger size (FAISS and SQLite do the same work whatever the
vectors say).

    python bench/first_token.py [--sizes 1000 100000] [--questions 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stub_llm import StubLLM
from rag.context import Turn
from rag.embeddings import load_embeddings
from rag.llm.client import endpoints
from rag.service.components import build_engine, build_store
from rag.settings import Settings
from rag.store.faiss import NewChunk

TOPICS = [
    "connection limits", "vacuum and autovacuum", "write-ahead log", "replication slots",
    "index types", "query planning", "backups with pg_dump", "role privileges",
    "transaction isolation", "full text search", "table partitioning", "logical decoding",
]  # fmt: skip


def passage(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (
        f"Section {i} on {topic}. The setting number {i} controls how the server handles "
        f"{topic} when the workload reaches level {i % 97}. Administrators usually tune it "
        f"together with parameter {(i * 7) % 1000} after measuring the effect on {topic}."
    )


def build_index(settings: Settings, embeddings, size: int) -> None:
    base_n = min(size, 1000)
    texts = [passage(i) for i in range(base_n)]
    base = np.asarray(embeddings.embed_documents(texts), dtype="float32")
    rng = np.random.default_rng(0)
    store = build_store(settings, embeddings)
    with store.writer() as writer:
        for start in range(0, size, 1000):
            n = min(1000, size - start)
            vectors = base[:n] + rng.normal(0, 0.02, (n, base.shape[1])).astype("float32")
            writer.add_document(
                f"doc{start:08d}",
                kind="text",
                pages=None,
                source=f"/bench/doc{start}.txt",
                chunks=[NewChunk(passage(start + j)) for j in range(n)],
                vectors=vectors,
            )


def measure(engine, questions: list[str], history: list[Turn]) -> list[float]:
    times = []
    for q in questions:
        stream = engine.ask(q, history, within=None)
        list(stream)
        assert stream.result is not None
        times.append(stream.result.timings["first_token_ms"])
    return times


def summary(label: str, times: list[float]) -> str:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    return f"{label}: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--questions", type=int, default=30)
    args = parser.parse_args()
    rng = random.Random(1)
    questions = [
        f"How do I tune {rng.choice(TOPICS)} for level {rng.randint(1, 96)}?"
        for _ in range(args.questions)
    ]
    history = [
        Turn("user", "What controls connection limits?"),
        Turn("assistant", "The setting max_connections does [1]."),
    ]
    with tempfile.TemporaryDirectory() as tmp, StubLLM() as stub:
        probe = Settings(index_dir=Path(tmp) / "probe")
        embeddings = load_embeddings(probe)
        embeddings.embed_query("warm up")
        for size in args.sizes:
            settings = Settings(
                index_dir=Path(tmp) / f"i{size}", llm_base_url=stub.base_url, min_relevance=0.0
            )
            t = time.perf_counter()
            build_index(settings, embeddings, size)
            built = time.perf_counter() - t
            store = build_store(settings, embeddings)
            engine = build_engine(settings, store, endpoints(settings))
            measure(engine, questions[:3], [])  # warm up: opens the index, first HTTP call
            first = measure(engine, questions, [])
            follow = measure(engine, questions, history)
            retrieval = []
            for q in questions:
                stream = engine.ask(q, within=None)
                list(stream)
                assert stream.result is not None
                retrieval.append(stream.result.timings["retrieval_ms"])
            print(f"{size} chunks (index built in {built:.1f}s):")
            print("  " + summary("first turn, time to first token", first))
            print("  " + summary("follow-up (with condense), time to first token", follow))
            print("  " + summary("retrieval alone (embed query + search + fetch)", retrieval))


if __name__ == "__main__":
    main()
