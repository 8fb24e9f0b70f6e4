"""Batch throughput: sequential asks vs batch jobs at several concurrencies, and two workers.

200 questions over the user guide (real embedding model, real index) against a stub
OpenAI-compatible endpoint that takes a fixed 300 ms per answer. Prints questions per
minute, the ratio to sequential, and ragchat's own time per question (wall time per
sequential question less the stub's 300 ms).

    .venv/bin/python -m bench.batch [--questions 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.stub_llm import StubServer
from bench.stub_llm import _Handler as InstantHandler
from rag.access.principal import LOCAL
from rag.evaluation import percentile

LATENCY_S = 0.3
ROOT = Path(__file__).resolve().parents[1]


class _SlowHandler(InstantHandler):
    def do_POST(self) -> None:
        time.sleep(LATENCY_S)
        super().do_POST()


def _settings(data: Path, url: str) -> Any:
    from rag.settings import Settings

    return Settings(data_dir=data, llm_base_url=url, llm_model="stub", min_relevance=0.0)


def _questions(n: int) -> list[dict[str, Any]]:
    topics = [
        "add my own documents", "stop an answer", "delete a document", "cite a page",
        "use another model", "see the sources", "start a conversation", "re-index",
    ]  # fmt: skip
    return [{"question": f"How do I {topics[i % len(topics)]} (case {i})?"} for i in range(n)]


def _batch(data: Path, url: str, questions: list[dict[str, Any]], concurrency: int) -> float:
    from rag.service.components import open_service
    from rag.service.jobs import JobState, build_job_service

    settings = _settings(data, url)
    with open_service(settings) as service:
        service.warm()
        service.ask("warm up", buffered=True, caller=LOCAL)
        jobs = build_job_service(settings, service, workers=concurrency)
        try:
            start = time.perf_counter()
            info = jobs.submit_batch(questions, concurrency=concurrency, caller=LOCAL)
            while jobs.get(info.id, caller=LOCAL).state not in (JobState.DONE, JobState.FAILED):
                time.sleep(0.05)
            return time.perf_counter() - start
        finally:
            jobs.close()


def _worker_process(data: str, url: str, threads: int, stop: Any) -> None:
    from rag.jobs.queue import JobQueue, build_huey, build_job_store
    from rag.service.components import open_service

    settings = _settings(Path(data), url)
    with open_service(settings) as service:
        service.warm()
        queue = JobQueue(build_huey(settings), build_job_store(settings), lambda: service)
        queue.start(threads, recover=False)
        stop.wait()
        queue.stop()


def _two_workers(data: Path, url: str, questions: list[dict[str, Any]], concurrency: int) -> float:
    from rag.jobs.queue import JobQueue, build_huey, build_job_store
    from rag.service.jobs import JobService, JobState

    settings = _settings(data, url)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs = [
        ctx.Process(target=_worker_process, args=(str(data), url, concurrency // 2, stop))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    time.sleep(8)  # both load the embedding model
    queue = JobQueue(build_huey(settings), build_job_store(settings), lambda: None)  # type: ignore[arg-type,return-value]
    jobs = JobService(queue)
    try:
        start = time.perf_counter()
        info = jobs.submit_batch(questions, concurrency=concurrency, caller=LOCAL)
        while jobs.get(info.id, caller=LOCAL).state not in (JobState.DONE, JobState.FAILED):
            time.sleep(0.05)
        return time.perf_counter() - start
    finally:
        stop.set()
        for p in procs:
            p.join(30)
        jobs.close()


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rag.service.components import open_service

    questions = _questions(args.questions)
    server = StubServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        index = base / "index"
        settings = _settings(base / "seq", url).model_copy(update={"index_dir": index})
        with open_service(settings) as service:
            service.ingest([ROOT / "docs" / "user-guide.md"], caller=LOCAL)
            service.warm()
            service.ask("warm up", buffered=True, caller=LOCAL)
            own: list[float] = []
            start = time.perf_counter()
            for q in questions:
                t0 = time.perf_counter()
                stream = service.ask(q["question"], buffered=True, caller=LOCAL)
                for _ in stream:
                    pass
                own.append((time.perf_counter() - t0 - LATENCY_S) * 1000)
            sequential = time.perf_counter() - start
        rate = len(questions) / sequential * 60
        print(f"{'run':<22}{'seconds':>9}{'q/min':>9}{'x seq':>8}")
        print(f"{'sequential ask':<22}{sequential:>9.1f}{rate:>9.0f}{1.0:>8.2f}")
        results = {}
        for c in (1, 4, 8, 16):
            data = base / f"c{c}"
            data.mkdir()
            (data / "index").symlink_to(index)
            took = _batch(data, url, questions, c)
            results[c] = took
            r = len(questions) / took * 60
            print(f"{f'batch c={c}':<22}{took:>9.1f}{r:>9.0f}{r / rate:>8.2f}")
        data = base / "two"
        data.mkdir()
        (data / "index").symlink_to(index)
        took = _two_workers(data, url, questions, 16)
        r = len(questions) / took * 60
        print(f"{'2 workers x 8, c=16':<22}{took:>9.1f}{r:>9.0f}{r / rate:>8.2f}")
        print(
            f"\nragchat's own time per question (sequential wall - {LATENCY_S * 1000:.0f} ms): "
            f"p50 {percentile(own, 50):.1f} ms, p95 {percentile(own, 95):.1f} ms"
        )
    server.shutdown()


if __name__ == "__main__":
    main()
