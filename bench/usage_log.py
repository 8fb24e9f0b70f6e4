"""What the usage log (the Metrics page) costs: a row per answer, and the report.

Records ``--answers`` answers spread over 30 days, in time order as a server writes them
(three models, one in ten abstained), then times ``UsageLog.report`` for 30 days, with
and without the split by model. The database is a fresh file in a temporary folder.

    python bench/usage_log.py [--answers 100000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.observe.prices import Price
from rag.observe.usage import UsageEntry, UsageLog


def main() -> None:
    """Print microseconds per recorded answer and seconds per report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(15)
    now = datetime.now(UTC)
    clock = [now]
    with tempfile.TemporaryDirectory() as folder:
        log = UsageLog(
            Path(folder) / "usage.sqlite", prices={"*": Price(0.5, 1.5)}, clock=lambda: clock[0]
        )
        times = sorted(
            now - timedelta(seconds=rng.uniform(0, 30 * 86400)) for _ in range(args.answers)
        )
        started = time.perf_counter()
        for when in times:
            clock[0] = when
            abstained = rng.random() < 0.1
            log.record(
                UsageEntry(
                    user_id=f"user-{rng.randrange(50)}",
                    model=rng.choice(["small", "medium", "large"]),
                    total_ms=rng.lognormvariate(7, 0.6),
                    first_token_ms=rng.lognormvariate(5, 0.5),
                    prompt_tokens=900,
                    completion_tokens=120,
                    abstained=abstained,
                    question=f"Where is the guide to topic {rng.randrange(300)}?"
                    if abstained
                    else "",
                )
            )
        per_answer = (time.perf_counter() - started) / args.answers
        clock[0] = now
        print(f"record: {per_answer * 1e6:.0f} us an answer ({args.answers:,} answers)")
        for by_model in (False, True):
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                report = log.report(30, by_model=by_model)
                runs.append(time.perf_counter() - started)
            print(
                f"report of 30 days ({report.total.questions:,} answers), by model {by_model}: "
                f"median {statistics.median(runs):.3f} s"
            )
        log.close()


if __name__ == "__main__":
    main()
