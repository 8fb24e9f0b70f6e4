"""What recording the metrics costs a question (issue 15 target: under 2 ms).

Times what the service adds per answered question (``Metrics.answered`` with a price
table: two histograms and five counters) and per error, in this process and in
prometheus-client's multiprocess mode (values written to memory-mapped files), and one
scrape after 10,000 questions.

    python bench/metrics_overhead.py [--questions 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_RUN = """
import json, sys, time
from rag.errors import ProviderError
from rag.observe.metrics import Metrics
from rag.observe.prices import Price
n = int(sys.argv[1])
m = Metrics(prices={"*": Price(0.5, 1.5)})
error = ProviderError("http://llm", 503, "down")
t = time.perf_counter()
for i in range(n):
    m.answered(model=f"model-{i % 3}", total_s=1.5, first_token_s=0.2, retrieval_s=0.01,
               prompt_tokens=900, completion_tokens=120, abstained=i % 10 == 0)
answered = (time.perf_counter() - t) / n
t = time.perf_counter()
for _ in range(n // 10):
    m.failed(error)
failed = (time.perf_counter() - t) / (n // 10)
t = time.perf_counter()
size = len(m.scrape())
print(json.dumps({"answered_us": answered * 1e6, "failed_us": failed * 1e6,
                  "scrape_ms": (time.perf_counter() - t) * 1000, "scrape_bytes": size}))
"""


def run(questions: int, multiproc: str | None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if multiproc:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiproc
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(questions)], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return {k: round(v, 2) for k, v in json.loads(done.stdout).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = {
            "questions": args.questions,
            "one_process": run(args.questions, None),
            "multiprocess": run(args.questions, folder),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
