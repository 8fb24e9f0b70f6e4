"""Time to first token of response-cache hits through ``RagService.ask`` (target: < 20 ms).

A real on-disk FAISS index of generated passages with the bundled embedding model, the
cache in SQLite under the data folder (as by default), and a stub OpenAI-compatible model
that answers at once (it writes the answers the cache then serves). Each question is asked
once (a miss: answered by the model, kept), then again as an exact repeat (other case and
spacing) and as a paraphrase (a semantic hit when the bundled model embeds it at or above
RAG_CACHE_SIMILARITY). Time to first token is wall-clock from the call to ``ask`` to the
first piece of text, as a caller sees it; for comparison, the misses' own first token.

    python bench/cache_hit.py [--questions 100] [--chunks 1000] [--fill 500]

``--fill``: answers kept in the scope before timing (the semantic look-up compares the
question with up to RAG_CACHE_SCAN of them).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.first_token import TOPICS, build_index
from bench.stub_llm import StubLLM
from rag.access.principal import LOCAL
from rag.embeddings import load_embeddings
from rag.service.components import build_service
from rag.settings import Settings


def first_token(service, question: str) -> tuple[float, str | None, bool]:
    """Milliseconds to the first piece, where the answer came from, whether it abstained."""
    started = time.perf_counter()
    stream = service.ask(question, caller=LOCAL)
    pieces = iter(stream)
    next(pieces)
    elapsed = (time.perf_counter() - started) * 1000
    for _ in pieces:
        pass
    assert stream.result is not None
    return elapsed, stream.result.served_from, stream.result.abstained


def summary(label: str, times: list[float]) -> str:
    if not times:
        return f"{label}: none"
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    return (
        f"{label}: n={len(times)}, p50 {statistics.median(times):.2f} ms, "
        f"p95 {p95:.2f} ms, max {times[-1]:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--fill", type=int, default=500)
    args = parser.parse_args()
    rng = random.Random(7)
    combos = [(t, n, w) for t in TOPICS for n in range(1, 97) for w in ("server", "replica")]
    asked = rng.sample(combos, args.questions)  # distinct questions
    questions = [f"How do I tune {t} for level {n} on the {w}?" for t, n, w in asked]
    repeats = [f"  how do I TUNE {t} for level {n} on the {w} " for t, n, w in asked]
    paraphrases = [f"How can I tune {t} for level {n} on the {w}?" for t, n, w in asked]
    with tempfile.TemporaryDirectory() as tmp, StubLLM() as stub:
        settings = Settings(
            data_dir=Path(tmp), llm_base_url=stub.base_url, min_relevance=0.0, relevance_gap=1.0
        )
        embeddings = load_embeddings(settings)
        build_index(settings, embeddings, args.chunks)
        service = build_service(settings)
        try:
            service.warm()
            for i in range(args.fill):  # other answers of the same scope
                first_token(service, f"What does parameter {i} of the {TOPICS[i % 12]} do?")
            misses = []
            for q in questions:
                ms, served, abstained = first_token(service, q)
                assert served is None and not abstained, (q, served, abstained)
                misses.append(ms)
            exact, semantic, missed = [], [], 0
            for q in repeats:
                ms, served, _ = first_token(service, q)
                assert served == "cache", q
                exact.append(ms)
            for q in paraphrases:
                ms, served, _ = first_token(service, q)
                if served == "cache":
                    semantic.append(ms)
                else:
                    missed += 1
            embed = []  # what a semantic hit pays first: the question's embedding
            for q in paraphrases:
                started = time.perf_counter()
                service.store.embeddings.embed_query(q)
                embed.append((time.perf_counter() - started) * 1000)
            scraped = service.metrics.scrape().decode()
        finally:
            service.close()
    hits = [line for line in scraped.splitlines() if line.startswith("ragchat_cache_hits_total")]
    print(f"index of {args.chunks} chunks, {args.fill + len(questions)} answers in the cache")
    print("  " + summary("miss (model stub answers at once), first token", misses))
    print("  " + summary("exact hit, first token", exact))
    print("  " + summary("semantic hit, first token", semantic))
    print(f"  paraphrases not served from the cache: {missed} of {len(paraphrases)}")
    print("  " + summary("the query embedding alone (part of a semantic hit)", embed))
    print("  " + "; ".join(hits))


if __name__ == "__main__":
    main()
