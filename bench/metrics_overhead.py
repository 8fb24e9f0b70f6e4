"""What recording metrics and traces costs a question (issue 15 target: under 2 ms).

Times what the service adds per answered question (``Metrics.answered`` with a price
table: two histograms and five counters), per error, and per traced question (the four
spans of ``rag.observe.tracing``, batched for export), in this process and in
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
scrape = time.perf_counter() - t
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rag.observe import tracing
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
tracer = provider.get_tracer("bench")
attrs = {"ragchat.model": "m", "ragchat.prompt_version": "answer@3", "ragchat.tokens.prompt": 900}
t = time.perf_counter()
for _ in range(n // 10):
    s = time.perf_counter()
    times = tracing.StepTimes(s, s + 0.01, s + 0.02, s + 0.03, s + 0.05)
    tracing.record_question(tracer, times, attrs, condensed=True)
traced = (time.perf_counter() - t) / (n // 10)
provider.shutdown()
print(json.dumps({"answered_us": answered * 1e6, "failed_us": failed * 1e6,
                  "traced_question_us": traced * 1e6,
                  "scrape_ms": scrape * 1000, "scrape_bytes": size}))
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
