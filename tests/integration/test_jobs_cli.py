"""``ragchat batch`` end to end: the real embedding model, a stub model on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from rag.jobs.store import SqliteJobStore
from tests.faultserver import Fault, FaultServer
from tests.integration.test_jobs_redis import _question

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env = {**base, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAG_DATA_DIR": str(folder)}
    subprocess.run(
        [sys.executable, "-m", "rag.cli", "ingest", str(ROOT / "docs" / "user-guide.md")],
        env=env, check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return env


def _batch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", "batch", *args],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def test_batch_writes_answers_in_input_order_with_eval_metrics(
    tmp_path: Path, env: dict[str, str]
) -> None:
    questions = tmp_path / "control.jsonl"
    lines = [
        {"question": "How do I add my own documents?", "sources": ["user-guide.md"]},
        {"question": ""},
        *({"question": f"What does the Stop button do ({i})?"} for i in range(7)),
    ]
    questions.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "answers.jsonl"
    with FaultServer(default=Fault("slow_stream", interval=0.02, tokens=3)) as stub:
        run = _batch(
            {**env, "RAG_LLM_BASE_URL": stub.base_url, "RAG_MIN_RELEVANCE": "0"},
            str(questions), "-o", str(out), "--concurrency", "3", "--json",
        )  # fmt: skip
        asked = Counter(_question(b) for b in stub.bodies)
    assert run.returncode == 1, run.stderr  # a line was skipped
    assert "skipped line 2: question" in run.stderr
    summary = json.loads(run.stdout)
    assert summary["state"] == "done" and (summary["done"], summary["total"]) == (8, 8)
    assert summary["errors"] == [
        {"line": 2, "field": "question", "error": "must be a non-empty string"}
    ]
    assert summary["metrics"]["labelled"] == 1 and summary["metrics"]["hit@5"] == 1.0
    assert "citation_validity" in summary["metrics"]
    assert stub.max_in_flight <= 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [x["question"] for x in lines if x["question"]]
    assert [r["question"] for r in rows] == expected
    assert all(r["answer"] and r["error"] is None and r["model"] for r in rows)
    assert asked == dict.fromkeys(expected, 1)

    # --resume of a finished job writes its results again, asking nothing.
    again = _batch(env, "--resume", summary["id"])
    assert (
        again.returncode == 1
        and [json.loads(x)["question"] for x in again.stdout.splitlines()] == expected
    )


def test_batch_reports_a_bad_file_in_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    bad = tmp_path / "q.txt"
    bad.write_text("question\nhello\n")
    run = _batch(env, str(bad))
    assert run.returncode == 2
    assert re.fullmatch(
        r"error: file: q\.txt: use a \.jsonl, \.json or \.csv file \(error id [0-9a-f]{8}\)",
        run.stderr.strip().splitlines()[-1],
    )
    missing = _batch(env, "--resume", "nope")
    assert missing.returncode == 2 and "no job with id 'nope'" in missing.stderr


def test_ask_compare_answers_with_each_model_side_by_side(env: dict[str, str]) -> None:
    with FaultServer() as stub:
        run = subprocess.run(
            [sys.executable, "-m", "rag.cli", "ask", "How do I add my own documents?",
             "--compare", "small,large", "--json"],
            env={**env, "RAG_LLM_BASE_URL": stub.base_url, "RAG_MIN_RELEVANCE": "0"},
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        asked = sorted(body["model"] for body in stub.bodies)
    assert run.returncode == 0, run.stderr
    answers = json.loads(run.stdout)
    assert list(answers) == ["small", "large"]
    for answer in answers.values():
        assert answer["answer"] and answer["citations"]
    assert asked == ["large", "small"]  # each model asked once, on the same endpoint
    one = subprocess.run(
        [sys.executable, "-m", "rag.cli", "ask", "x", "--compare", "small"],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert one.returncode == 2 and "at least two distinct model names" in one.stderr


def test_a_killed_batch_resumes_without_asking_answered_questions_again(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The embedded (SQLite) queue: kill -9 ``ragchat batch`` midway, then --resume."""
    import signal

    questions = tmp_path / "many.jsonl"
    asked = [f"What does the Stop button do, case {i}?" for i in range(16)]
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in asked))
    out = tmp_path / "answers.jsonl"
    with FaultServer(default=Fault("slow_stream", interval=0.15, tokens=4)) as stub:
        run_env = {**env, "RAG_LLM_BASE_URL": stub.base_url, "RAG_MIN_RELEVANCE": "0"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "batch", str(questions), "-o", str(out),
             "--concurrency", "2"],
            env=run_env, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert proc.stderr is not None
        job = proc.stderr.readline().split()[1].rstrip(":")  # "job ID: 16 batch items"
        deadline = time.monotonic() + 60
        while stub.requests < 6:  # a few answered, two in flight
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = Counter(_question(b) for b in stub.bodies)
        store = SqliteJobStore(Path(env["RAG_DATA_DIR"]) / "jobs.db")
        stored = {row["question"] for row in store.rows(job).values()}  # answered at the kill
        store.close()
        resumed = _batch(run_env, "--resume", job, "-o", str(out))
        after = Counter(_question(b) for b in stub.bodies)
    assert resumed.returncode == 0, resumed.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == asked  # every question once, in order
    assert all(r["answer"] and not r["error"] for r in rows)
    assert stored and len(stored) < len(asked)  # killed midway
    assert all(after[q] == before[q] == 1 for q in stored)  # answered ones never asked again
    # Only questions without a stored answer at the kill (in flight then) are asked twice.
    assert {q for q in after if after[q] > 1} <= set(asked) - stored
    assert set(after) == set(asked)
