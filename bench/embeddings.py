"""The bundled embedding model in numpy against sentence-transformers, in one process each.

Prints, per backend: seconds to import and load the model (in a fresh process, so the
import is counted), milliseconds per query (median of 50), chunks per second over 512
chunks of PostgreSQL-manual-like text (~200 word-pieces each), and the largest difference
between the two backends' vectors.

    python bench/embeddings.py
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, random, statistics, sys, time
t0 = time.perf_counter()
from rag.embeddings import load_embeddings
from rag.settings import load_settings
model = load_embeddings(load_settings(embedding_backend=sys.argv[1]))
model.embed_query("warm")
load = time.perf_counter() - t0
queries = []
for i in range(50):
    t = time.perf_counter(); model.embed_query(f"how do I set max_connections {i}?")
    queries.append(time.perf_counter() - t)
texts = json.loads(sys.stdin.read())
t = time.perf_counter(); vectors = model.embed_documents(texts); docs = time.perf_counter() - t
print(json.dumps({"load": load, "query_ms": 1000 * statistics.median(queries),
                  "rate": len(texts) / docs, "vectors": vectors[:64]}))
"""

WORDS = (
    "the server parameter max_connections determines maximum number of concurrent "
    "connections to database postgresql.conf shared_buffers sets amount memory used "
    "for caching data TLS 1.2 client authentication pg_hba.conf controls which hosts "
    "are allowed connect table index vacuum analyze query planner statistics"
).split()


def main() -> None:
    """Print the comparison table."""
    random.seed(7)
    texts = [" ".join(random.choices(WORDS, k=random.randint(120, 180))) for _ in range(512)]
    results = {}
    for backend in ("numpy", "sentence-transformers"):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, backend], input=json.dumps(texts), cwd=ROOT,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[backend] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'backend':<24}{'load (s)':>10}{'query (ms)':>12}{'chunks/s':>10}")
    for backend, r in results.items():
        print(f"{backend:<24}{r['load']:>10.2f}{r['query_ms']:>12.1f}{r['rate']:>10.1f}")
    a, b = results["numpy"]["vectors"], results["sentence-transformers"]["vectors"]
    diff = max(abs(x - y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))
    print(f"largest difference between the vectors: {diff:.1e}")


if __name__ == "__main__":
    main()
