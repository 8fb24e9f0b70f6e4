"""Redis mode: real ``redis-server``, ``ragchat worker`` processes, a stub model on loopback.

Two workers share a batch; then one is killed with SIGKILL mid-batch and another
started: every question gets exactly one row, and no question the killed worker had
answered reaches the model again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huey import RedisHuey

from rag.access.principal import LOCAL
from rag.jobs.queue import QUEUE_NAME, JobQueue
from rag.jobs.redis_store import RedisJobStore
from rag.service.jobs import JobService, JobState
from tests.faultserver import Fault, FaultServer

ROOT = Path(__file__).resolve().parents[2]

WORKER = [sys.executable, "-m", "rag.cli", "worker"]


def _question(body: dict[str, Any]) -> str:
    text = str(body["messages"][-1]["content"])
    found = re.search(r"Question:\s*(.+)", text)
    return (found.group(1) if found else text).strip().splitlines()[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real index of the user guide, built with ``ragchat ingest``."""
    folder = tmp_path_factory.mktemp("data")
    subprocess.run(
        [sys.executable, "-m", "rag.cli", "ingest", str(ROOT / "docs" / "user-guide.md")],
        env={**_base_env(), "RAG_DATA_DIR": str(folder)},
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return folder


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


class Workers:
    def __init__(self, data_dir: Path, redis_url: str, llm_url: str, logs: Path) -> None:
        self.env = {
            **_base_env(),
            "RAG_DATA_DIR": str(data_dir),
            "RAG_QUEUE_URL": redis_url,
            "RAG_LLM_BASE_URL": llm_url,
            "RAG_MIN_RELEVANCE": "0",  # every question goes to the model
        }
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, threads: int = 2) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*WORKER, "--workers", str(threads), "--claim-ttl", "2"],
                env=self.env,
                stderr=out,
                stdout=out,
                cwd=ROOT,
            )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while b"ragchat worker:" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start: {log.read_text()}")
            time.sleep(0.05)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def jobs(redis_url: str) -> Iterator[JobService]:
    queue = JobQueue(
        RedisHuey(QUEUE_NAME, url=redis_url, results=False),
        RedisJobStore(redis_url),
        lambda: pytest.fail("the submitting process answers nothing"),
    )
    service = JobService(queue)
    yield service
    service.close()


def _wait(jobs: JobService, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while jobs.get(job_id, caller=LOCAL).state not in (
        JobState.DONE,
        JobState.FAILED,
        JobState.CANCELLED,
    ):
        assert time.monotonic() < deadline, jobs.get(job_id, caller=LOCAL)
        time.sleep(0.1)


def test_two_workers_share_a_batch(
    tmp_path: Path, data_dir: Path, redis_url: str, jobs: JobService
) -> None:
    questions = [{"question": f"How do I add documents, variant {i}?"} for i in range(16)]
    with FaultServer(default=Fault("slow_stream", interval=0.03, tokens=4)) as stub:
        workers = Workers(data_dir, redis_url, stub.base_url, tmp_path)
        try:
            workers.start()
            workers.start()
            info = jobs.submit_batch(questions, concurrency=4, caller=LOCAL)
            _wait(jobs, info.id, 60)
        finally:
            workers.stop()
        asked = Counter(_question(b) for b in stub.bodies)
    done = jobs.get(info.id, caller=LOCAL)
    rows = jobs.results(info.id, caller=LOCAL)
    assert done.state is JobState.DONE and done.done == 16 and done.errors == []
    assert [r["question"] for r in rows] == [q["question"] for q in questions]
    assert all(r["answer"] and r["error"] is None for r in rows)
    by_worker = Counter(r["_worker"] for r in jobs.store.rows(info.id).values())
    assert len(by_worker) == 2, by_worker  # both workers took tasks
    assert asked == {q["question"]: 1 for q in questions}
    assert stub.max_in_flight <= 4


def test_a_killed_worker_loses_no_question_and_repeats_no_answer(
    tmp_path: Path, data_dir: Path, redis_url: str, jobs: JobService
) -> None:
    questions = [{"question": f"What does the Stop button do, case {i}?"} for i in range(24)]
    with FaultServer(default=Fault("slow_stream", interval=0.08, tokens=4)) as stub:
        workers = Workers(data_dir, redis_url, stub.base_url, tmp_path)
        try:
            doomed = workers.start()
            workers.start()
            info = jobs.submit_batch(questions, concurrency=4, caller=LOCAL)
            deadline = time.monotonic() + 60
            while jobs.store.row_count(info.id) < 6:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
            answered_before = {
                r["question"]
                for r in jobs.store.rows(info.id).values()
                if r["_worker"].split(":")[-2] == str(doomed.pid)
            }
            assert jobs.get(info.id, caller=LOCAL).state is JobState.RUNNING
            workers.start()
            _wait(jobs, info.id, 60)
        finally:
            workers.stop()
        asked = Counter(_question(b) for b in stub.bodies)
    rows = jobs.results(info.id, caller=LOCAL)
    assert [r["index"] for r in rows] == list(range(24))  # each question exactly once
    assert [r["question"] for r in rows] == [q["question"] for q in questions]
    assert all(r["error"] is None for r in rows)
    assert answered_before, "the killed worker had answered nothing"
    assert all(asked[q] == 1 for q in answered_before)  # answered: never asked again
    repeated = [q for q, n in asked.items() if n > 1]
    assert len(repeated) <= 2, repeated  # only what the killed worker's 2 threads had in flight
    assert set(asked) == {q["question"] for q in questions}
    assert json.dumps(rows)  # rows are plain JSON
