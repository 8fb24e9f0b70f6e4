"""The int8 ONNX embedding model against fp32 on the PostgreSQL manual, in one run.

Two figures, both variants on the same corpus:

- speed: chunks per second embedding the same chunks of the manual (cut by the ingest
  chunker with the default settings, sorted by length and sent in batches of
  RAG_EMBEDDING_BATCH_SIZE, as ingestion sends them) through each variant's document
  model: fp32 on sentence-transformers, int8 on ONNX Runtime. One process, one warm-up
  batch each, then rounds that alternate the two (so a busy machine slows both alike);
  the ratio is the median of the per-round ratios.
- quality: recall@5 on the 100 hand-labelled questions of ``bench/postgres_eval.py``,
  after ingesting the whole manual with each variant into its own index
  (``bench.evalrun.ingest_and_eval``: the real CLI).

Targets: int8 at least 2x fp32's chunks/s; vector recall@5 at most 1 point below fp32.
Writes ``bench/results/quantized.json``.

    python bench/quantized.py [--chunks 512] [--rounds 3] [--skip-recall]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import CORPORA, corpus
from bench.evalrun import ingest_and_eval
from bench.postgres_eval import SETS
from ingest.chunking import HFTokenizer, TokenChunker
from ingest.loaders import load
from rag.embeddings import load_embeddings
from rag.settings import Settings, load_settings

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quantized.json"
VARIANTS = ("fp32", "int8")
# The int8 export's cache for these runs (RAG_DATA_DIR of the CLI runs too).
DATA_DIR = CORPORA / "quantized-data"


def sample_chunks(docs: Path, settings: Settings, count: int) -> list[str]:
    """``count`` chunks of the manual: whole pages, evenly spread over its files."""
    chunker = TokenChunker(
        HFTokenizer(settings.embedding_model_path()), settings.chunk_size, settings.chunk_overlap
    )
    files = sorted(docs.glob("*.html"))
    step = max(1, len(files) // 60)
    texts: list[str] = []
    for path in files[::step]:
        texts += [c.text for c in chunker.split(load(path).blocks)]
        if len(texts) >= count:
            break
    return texts[:count]


def speed(texts: list[str], rounds: int) -> dict[str, Any]:
    """Chunks per second of each variant's document model on ``texts``, rounds alternating."""
    models, batch = {}, 0
    for variant in VARIANTS:
        settings = load_settings(data_dir=DATA_DIR, embedding_variant=variant)
        models[variant], batch = load_embeddings(settings), settings.embedding_batch_size
    ordered = sorted(texts, key=len)
    batches = [ordered[i : i + batch] for i in range(0, len(ordered), batch)]
    for model in models.values():
        model.embed_documents(batches[len(batches) // 2])  # warm-up, not timed
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant, model in models.items():
            started = time.perf_counter()
            for chunk_batch in batches:
                model.embed_documents(chunk_batch)
            rates[variant].append(len(texts) / (time.perf_counter() - started))
    ratios = [i / f for f, i in zip(rates["fp32"], rates["int8"], strict=True)]
    return {
        "chunks": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts)),
        "batch_size": batch,
        "rounds": rounds,
        "chunks_per_s": rates,
        "ratio_per_round": ratios,
        "ratio": statistics.median(ratios),
    }


def recall(docs: Path) -> dict[str, Any]:
    """Ingest the manual with each variant and evaluate the 100 questions (all modes)."""
    results = HERE / "results" / "quantized"
    dataset = results / "all-questions.jsonl"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    dataset.write_text("".join(p.read_text(encoding="utf-8") for p in SETS.values()))
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        print(f"\n== {variant} ==")
        os.environ["RAG_EMBEDDING_VARIANT"] = variant
        os.environ["RAG_DATA_DIR"] = str(DATA_DIR)
        started = time.perf_counter()
        modes = ingest_and_eval(
            docs, dataset, CORPORA / "indexes" / f"postgresql-{variant}", results / variant
        )
        out[variant] = {
            "ingest_and_eval_s": round(time.perf_counter() - started),
            **{mode: {k: modes[mode][k] for k in ("recall@5", "ndcg@10", "mrr")} for mode in modes},
        }
    for mode in ("vector", "hybrid"):
        out[f"{mode}_recall@5_drop_points"] = 100 * (
            out["fp32"][mode]["recall@5"] - out["int8"][mode]["recall@5"]
        )
    return out


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module says."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    """Measure, print the figures and write them to ``bench/results/quantized.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=512, help="chunks timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-recall", action="store_true", help="time the models only")
    args = parser.parse_args()
    docs = corpus("postgresql")
    texts = sample_chunks(docs, load_settings(), args.chunks)
    report: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "speed": speed(texts, args.rounds),
    }
    s = report["speed"]
    print(
        f"{s['chunks']} chunks ({s['mean_chars']} characters on average), batch {s['batch_size']}"
    )
    for variant in VARIANTS:
        rates = ", ".join(f"{r:.1f}" for r in s["chunks_per_s"][variant])
        print(f"  {variant}: {rates} chunks/s")
    rounds = ", ".join(f"{r:.2f}" for r in s["ratio_per_round"])
    print(f"  int8 / fp32: {s['ratio']:.2f}x (rounds: {rounds}); target >= 2.0")
    if not args.skip_recall:
        report["recall"] = r = recall(docs)
        print("\nrecall@5        fp32    int8   drop (points; target <= 1.0 for vector)")
        for mode in ("vector", "hybrid"):
            fp32, int8 = r["fp32"][mode]["recall@5"], r["int8"][mode]["recall@5"]
            drop = r[f"{mode}_recall@5_drop_points"]
            print(f"  {mode:<12}{fp32:>6.3f}  {int8:>6.3f}  {drop:+6.1f}")
    report["load_average_after"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
