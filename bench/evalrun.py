"""Run the ragchat CLI for benchmarks (ingest, then eval in every mode)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def ragchat(*args: str) -> str:
    """Run ``ragchat ARGS`` with this interpreter; returns stdout, fails loudly."""
    cmd = [sys.executable, "-m", "rag.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def ingest_and_eval(corpus: Path, dataset: Path, index: Path, report: Path) -> dict[str, Any]:
    """Index the corpus (incrementally) and evaluate all three modes; prints the table."""
    started = time.perf_counter()
    summary = json.loads(ragchat("ingest", str(corpus), "--index", str(index), "--json"))
    print(
        f"ingest: {summary['added']} added, {summary['unchanged']} unchanged, "
        f"{len(summary['failed'])} failed, {summary['chunks']} chunks embedded "
        f"({time.perf_counter() - started:.0f}s)"
    )
    started = time.perf_counter()
    results = json.loads(
        ragchat("eval", str(dataset), "--mode", "all", "--json", "--report", str(report),
                "--index", str(index))
    )  # fmt: skip
    print(f"eval: {time.perf_counter() - started:.0f}s, report in {report}/report.md")
    keys = ["recall@1", "recall@5", "recall@10", "mrr", "ndcg@10", "hit@5", "page_accuracy@1"]
    print(f"{'':16}" + "".join(f"{m:>10}" for m in results))
    for key in keys:
        if all(key in r for r in results.values()):
            print(f"{key:16}" + "".join(f"{r[key]:>10.3f}" for r in results.values()))
    print(f"{'questions':16}" + "".join(f"{r['items']:>10d}" for r in results.values()))
    hybrid, vector, keyword = results["hybrid"], results["vector"], results["keyword"]
    print(f"hybrid: {hybrid['config']}")
    for key in ("recall@5", "ndcg@10"):
        beats = hybrid[key] > max(vector[key], keyword[key])
        print(f"hybrid beats both single modes on {key}: {'yes' if beats else 'NO'}")
        for other in ("vector", "keyword"):
            d = hybrid["differences"][other][key]
            low, high = d["ci95"]
            verdict = "better" if low > 0 else "worse" if high < 0 else "within noise"
            print(f"  hybrid - {other}: {d['delta']:+.3f} [{low:+.3f}, {high:+.3f}] {verdict}")
    return results
