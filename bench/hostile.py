"""Hostile corpus and large legitimate files through the parser sandbox.

Prints one line per file (outcome, seconds, seconds to the first block, peak RSS of the
worker above its baseline) and a summary by outcome. Targets: 0 tracebacks, 0 files without
an outcome, every rejection within 10 s, parsing at most 512 MB above the worker's baseline.

    python bench/hostile.py [--no-large]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.sandbox import ParseLimits, ParserSandbox
from rag.errors import IngestError
from rag.text import safe_label
from tests.hostile import LARGE, build_corpus

MEMORY_TARGET_MB = 512
REJECT_TARGET_S = 10.0


def _peak_reset(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM (peak RSS)


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_one(box: ParserSandbox, path: Path) -> tuple[str, float, float | None, float, str]:
    worker = box.ready_worker()
    pid = worker.proc.pid
    baseline = worker.baseline_kb
    _peak_reset(pid)
    start = time.monotonic()
    first: float | None = None
    chars = 0
    peak = 0
    try:
        stream = box.open(path)
        for block in stream.blocks:
            if first is None:
                first = time.monotonic() - start
            chars += len(block.text)
            peak = max(peak, _status_kb(pid, "VmHWM"))
        outcome, detail = "parsed", f"{chars:,} chars, {stream.kind.value}"
    except IngestError as exc:
        outcome, detail = "rejected", exc.reason
    except Exception as exc:  # noqa: BLE001 - the bench counts what the sandbox let through
        outcome, detail = "traceback", f"{type(exc).__name__}: {exc}"
    seconds = time.monotonic() - start
    peak = max(peak, _status_kb(pid, "VmHWM"))
    above_mb = max(0, peak - baseline) / 1024 if baseline and box.worker_pid == pid else 0.0
    return outcome, seconds, first, above_mb, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-large", action="store_true", help="skip the large legit files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        folder.mkdir()
        t0 = time.monotonic()
        files = [c.path for c in build_corpus(folder)]
        if not args.no_large:
            large = Path(tmp) / "large"
            large.mkdir()
            files += [write(large) for write in LARGE]
        print(f"corpus written in {time.monotonic() - t0:.1f} s: {len(files)} files")

        t0 = time.monotonic()
        box = ParserSandbox(ParseLimits())
        worker = box.ready_worker()
        print(
            f"worker start-up: {time.monotonic() - t0:.2f} s, "
            f"baseline RSS {worker.baseline_kb / 1024:.0f} MB"
        )
        counts: Counter[str] = Counter()
        worst_reject = worst_any = (0.0, "")
        worst_mem = (0.0, "")
        with box:
            for path in files:
                outcome, seconds, first, above, detail = run_one(box, path)
                if above > MEMORY_TARGET_MB:
                    outcome = "over memory"
                counts[outcome] += 1
                name = safe_label(path.name, 28)
                worst_any = max(worst_any, (seconds, name))
                worst_mem = max(worst_mem, (above, name))
                if outcome == "rejected":
                    worst_reject = max(worst_reject, (seconds, name))
                first_s = f"{first:6.2f}" if first is not None else "     -"
                print(
                    f"{outcome:9} {seconds:7.2f} s  first {first_s} s  +{above:5.0f} MB  "
                    f"{name:28}  {safe_label(detail, 90)}"
                )
            restarts = box.restarts
    print()
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for key in ("traceback", "no outcome", "over memory"):
        print(f"  {key}: {counts.get(key, 0)}")
    print(
        f"slowest rejection: {worst_reject[0]:.2f} s ({worst_reject[1]}); "
        f"target <= {REJECT_TARGET_S:g} s"
    )
    print(f"slowest file: {worst_any[0]:.2f} s ({worst_any[1]})")
    print(
        f"peak worker RSS above baseline: {worst_mem[0]:.0f} MB ({worst_mem[1]}); "
        f"target <= {MEMORY_TARGET_MB} MB"
    )
    print(f"worker restarts: {restarts}")
    ok = (
        not counts.get("traceback")
        and not counts.get("over memory")
        and worst_reject[0] <= REJECT_TARGET_S
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
