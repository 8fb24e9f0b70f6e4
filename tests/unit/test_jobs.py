"""Batch jobs on the embedded SQLite queue with in-process worker threads."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from huey import SqliteHuey

from rag.access.principal import LOCAL
from rag.errors import InvalidInputError, JobNotFoundError
from rag.jobs.queue import JobQueue
from rag.jobs.store import Claim, SqliteJobStore
from rag.service.jobs import JobService, JobState
from tests.unit.test_jobs_support import Model, fake_service, job_service, wait

ROW_KEYS = {"index", "question", "answer", "citations", "abstained", "model", "prompt_version",
            "timings", "error"}  # fmt: skip


@pytest.fixture
def model() -> Model:
    return Model()


def test_batch_answers_every_question_once_in_input_order(tmp_path: Path, model: Model) -> None:
    model.delay_s = 0.02  # answers finish out of order across the 4 threads
    jobs = job_service(tmp_path, model)
    try:
        questions = [{"question": f"when do backups run {i}?"} for i in range(12)]
        info = jobs.submit_batch(questions, concurrency=4, caller=LOCAL)
        assert info.kind == "batch" and info.total == 12
        assert info.state in (JobState.QUEUED, JobState.RUNNING)
        done = wait(jobs, info.id)
        rows = jobs.results(info.id, caller=LOCAL)
    finally:
        jobs.close()
    assert done.state is JobState.DONE and done.done == 12 and done.errors == []
    assert [r["question"] for r in rows] == [q["question"] for q in questions]
    assert [r["index"] for r in rows] == list(range(12))
    assert set(rows[0]) == ROW_KEYS
    assert rows[0]["answer"] == "Backups run nightly [1]."
    assert rows[0]["citations"][0]["source"] == "/docs/ops.md"
    assert rows[0]["model"] == "fake-model" and rows[0]["error"] is None
    assert set(model.asked.values()) == {1} and len(model.asked) == 12
    assert done.started_at and done.finished_at and done.timings["run_s"] >= 0
    assert done.timings["per_question_ms_p50"] > 0
    assert done.to_json()["state"] == "done"


def test_bad_rows_are_reported_by_line_and_the_rest_run(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model)
    try:
        questions = [{"question": "first?"}, {"question": ""}, {"nope": 1}, "text",
                     {"question": "second?", "pages": [0]}, {"question": "third?"}]  # fmt: skip
        info = jobs.submit_batch(questions, caller=LOCAL)  # type: ignore[arg-type]
        done = wait(jobs, info.id)
        rows = jobs.results(info.id, caller=LOCAL)
    finally:
        jobs.close()
    assert done.total == 2 and done.state is JobState.DONE
    assert [(e["line"], e["field"]) for e in done.errors] == [
        (2, "question"), (3, "question"), (4, "row"), (5, "pages")
    ]  # fmt: skip
    # Indices are input positions, so a row can be matched to its input line.
    assert [(r["index"], r["question"]) for r in rows] == [(0, "first?"), (5, "third?")]


def test_a_batch_with_no_usable_row_is_refused(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model, workers=0)
    try:
        with pytest.raises(InvalidInputError) as caught:
            jobs.submit_batch([{"question": " "}, {}], caller=LOCAL)
        assert caught.value.field == "questions" and "line 1" in caught.value.reason
        with pytest.raises(InvalidInputError) as caught:
            jobs.submit_batch("what?", caller=LOCAL)  # type: ignore[arg-type]
        assert caught.value.field == "questions"
        with pytest.raises(InvalidInputError) as caught:
            jobs.submit_batch([{"question": "a"}], concurrency=0, caller=LOCAL)
        assert caught.value.field == "concurrency"
        with pytest.raises(InvalidInputError) as caught:
            jobs.submit_batch([{"question": "a"}], compare=["only-one"], caller=LOCAL)
        assert caught.value.field == "compare"
        assert jobs.list(caller=LOCAL) == []
    finally:
        jobs.close()


def test_batch_files_jsonl_and_csv(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model)
    try:
        jsonl = b'{"question": "one?"}\n\nnot json\n{"question": "two?", "sources": ["ops.pdf"]}\n'
        a = jobs.submit_batch_file("q.jsonl", jsonl, caller=LOCAL)
        csv = (b"question,sources,pages,reference_answer\n"
               b"when?,ops.pdf;other.pdf,3,at two\n"
               b"bad pages,ops.pdf,x,\n"
               b",,,\n"
               b"\"with, comma?\",,,\n")  # fmt: skip
        b = jobs.submit_batch_file("Q.CSV", csv, caller=LOCAL)
        info_a = wait(jobs, a.id)
        rows_a = jobs.results(a.id, caller=LOCAL)
        info_b = wait(jobs, b.id)
        rows_b = jobs.results(b.id, caller=LOCAL)
    finally:
        jobs.close()
    assert [r["question"] for r in rows_a] == ["one?", "two?"]
    (error,) = info_a.errors
    assert (error["line"], error["field"]) == (3, "line") and error["error"].startswith("not JSON")
    assert [r["question"] for r in rows_b] == ["when?", "with, comma?"]
    assert info_b.errors == [{"line": 3, "field": "pages",
                              "error": "must be numbers separated by ';'"}]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("q.txt", b"question\nhi", "use a .jsonl"),
        ("q.csv", b"\xff\xfe\x00bad", "not UTF-8"),
        ("q.csv", b"text,sources\nhi,a.pdf\n", 'no "question" column'),
        ("q.json", b"[{]", "not valid JSON"),
        ("q.json", b'{"question": "a"', "line 1: line not JSON"),
    ],
)
def test_unreadable_batch_files_name_the_file(
    tmp_path: Path, model: Model, name: str, data: bytes, reason: str
) -> None:
    jobs = job_service(tmp_path, model, workers=0)
    try:
        with pytest.raises(InvalidInputError) as caught:
            jobs.submit_batch_file(name, data, caller=LOCAL)
    finally:
        jobs.close()
    assert caught.value.field == "file" and reason in caught.value.reason


def test_concurrency_bounds_the_questions_in_flight(tmp_path: Path, model: Model) -> None:
    model.delay_s = 0.05
    jobs = job_service(tmp_path, model, workers=6)
    try:
        info = jobs.submit_batch(
            [{"question": f"q{i}?"} for i in range(10)], concurrency=2, caller=LOCAL
        )
        assert wait(jobs, info.id).state is JobState.DONE
    finally:
        jobs.close()
    assert model.max_in_flight == 2
    assert sum(model.asked.values()) == 10


def test_a_question_whose_task_runs_twice_is_asked_once(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model, workers=0)
    try:
        info = jobs.submit_batch(
            [{"question": "a?"}, {"question": "twice?"}, {"question": "c?"}], caller=LOCAL
        )
        jobs.queue.answer_task.call_local(info.id, 1)
        jobs.queue.answer_task.call_local(info.id, 1)  # the job is still running
        first = jobs.results(info.id, caller=LOCAL)
        jobs.queue.enqueue_questions(info.id, [1, 1])  # and the queue delivers it again
        jobs.queue.start(3, recover=False)
        wait(jobs, info.id)
        rows = jobs.results(info.id, caller=LOCAL)
    finally:
        jobs.close()
    assert model.asked == {"a?": 1, "twice?": 1, "c?": 1}
    assert rows[1] == first[0] and len(rows) == 3


def test_copies_of_a_task_on_threads_of_one_worker_ask_once(tmp_path: Path, model: Model) -> None:
    # The claim's owner is the worker process: its own threads must not take a question
    # another of them is answering (copies come from recovery and the watchdog).
    model.delay_s = 0.3
    jobs = job_service(tmp_path, model, workers=0)
    try:
        info = jobs.submit_batch([{"question": "copied?"}], concurrency=4, caller=LOCAL)
        jobs.queue.enqueue_questions(info.id, [0, 0, 0])
        jobs.queue.start(4, recover=False)
        wait(jobs, info.id)
    finally:
        jobs.close()
    assert model.asked == {"copied?": 1}


def test_failed_answers_are_rows_with_their_error(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model)
    try:
        info = jobs.submit_batch([{"question": "ok?"}, {"question": "FAIL now"}], caller=LOCAL)
        done = wait(jobs, info.id)
        rows = jobs.results(info.id, caller=LOCAL)
        all_failed = wait(jobs, jobs.submit_batch([{"question": "FAIL too"}], caller=LOCAL).id)
    finally:
        jobs.close()
    assert done.state is JobState.DONE and done.done == 2
    assert rows[1]["answer"] is None and "the model crashed" in rows[1]["error"]
    assert done.errors == [{"index": 1, "error": rows[1]["error"]}]
    assert all_failed.state is JobState.FAILED


def test_cancel_stops_unstarted_questions(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model, workers=0)
    try:
        info = jobs.submit_batch([{"question": f"q{i}?"} for i in range(5)], caller=LOCAL)
        cancelled = jobs.cancel(info.id, caller=LOCAL)
        jobs.queue.start(2)
        time.sleep(0.4)
        again = jobs.cancel(info.id, caller=LOCAL)
        rows = jobs.results(info.id, caller=LOCAL)
    finally:
        jobs.close()
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at
    assert again.state is JobState.CANCELLED
    assert rows == [] and not model.asked


def test_cancelling_a_finished_job_changes_nothing(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model)
    try:
        done = wait(jobs, jobs.submit_batch([{"question": "a?"}], caller=LOCAL).id)
        assert jobs.cancel(done.id, caller=LOCAL).state is JobState.DONE
        with pytest.raises(JobNotFoundError):
            jobs.get("nope", caller=LOCAL)
        with pytest.raises(JobNotFoundError):
            jobs.results("nope", caller=LOCAL)
        with pytest.raises(JobNotFoundError):
            jobs.cancel("nope", caller=LOCAL)
    finally:
        jobs.close()


def test_jobs_are_listed_newest_first(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model, workers=0)
    try:
        first = jobs.submit_batch([{"question": "a?"}], caller=LOCAL)
        time.sleep(0.005)
        second = jobs.submit_batch([{"question": "b?"}], caller=LOCAL)
        assert [j.id for j in jobs.list(caller=LOCAL)] == [second.id, first.id]
        assert all(j.state is JobState.QUEUED for j in jobs.list(caller=LOCAL))
    finally:
        jobs.close()


def test_a_restarted_worker_finishes_a_job_without_asking_twice(
    tmp_path: Path, model: Model
) -> None:
    """A worker died: its popped tasks are gone, its claim lingers; a new one takes over."""
    jobs = job_service(tmp_path, model, workers=0)
    info = jobs.submit_batch(
        [{"question": f"q{i}?"} for i in range(6)], concurrency=3, caller=LOCAL
    )
    store = jobs.store
    # The dead worker had answered questions 0 and 1, was answering 2, and had popped
    # every task from the queue.
    for index in (0, 1):
        jobs.queue.answer_task.call_local(info.id, index)
    assert store.claim(info.id, 2, "dead-worker", 0.5, 3) is Claim.OK
    jobs.queue.huey.flush()
    assert jobs.queue.huey.pending_count() == 0
    jobs.close()
    assert model.asked == {"q0?": 1, "q1?": 1}

    restarted = job_service(tmp_path, model, workers=3, claim_ttl_s=5.0)
    try:
        done = wait(restarted, info.id)
        rows = restarted.results(info.id, caller=LOCAL)
    finally:
        restarted.close()
    assert done.state is JobState.DONE
    assert [r["index"] for r in rows] == list(range(6))
    assert model.asked == {f"q{i}?": 1 for i in range(6)}


def test_the_watchdog_requeues_tasks_lost_while_running(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model, workers=0)
    try:
        info = jobs.submit_batch([{"question": "lost?"}, {"question": "also lost?"}], caller=LOCAL)
        jobs.queue.huey.flush()  # a worker took them and died
        assert jobs.queue.watch() == []  # seen once: maybe between two steps
        assert jobs.queue.watch() == [info.id]  # seen twice: lost
        assert jobs.queue.huey.pending_count() == 2
        jobs.queue.start(2, recover=False)
        assert wait(jobs, info.id).state is JobState.DONE
    finally:
        jobs.close()
    assert model.asked == {"lost?": 1, "also lost?": 1}


def test_resume_queues_only_the_missing_questions(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model, workers=0)
    try:
        info = jobs.submit_batch(
            [{"question": "a?"}, {"question": "b?"}, {"question": "c?"}], caller=LOCAL
        )
        jobs.queue.answer_task.call_local(info.id, 1)
        jobs.queue.huey.flush()
        assert jobs.get(info.id, caller=LOCAL).state is JobState.RUNNING
        assert jobs.queue.resume(info.id) == [0, 2]
        jobs.queue.start(2, recover=False)
        assert wait(jobs, info.id).done == 3
    finally:
        jobs.close()
    assert model.asked == {"a?": 1, "b?": 1, "c?": 1}


def test_labelled_rows_give_the_eval_metrics(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model)
    try:
        info = jobs.submit_batch(
            [
                {"question": "when do backups run?", "sources": ["ops.pdf"], "pages": [3]},
                {"question": "who?", "sources": ["missing.pdf"], "reference_answer": "x"},
                {"question": "unlabelled?"},
            ],
            caller=LOCAL,
        )
        done = wait(jobs, info.id)
        rows = jobs.results(info.id, caller=LOCAL)
        plain = wait(jobs, jobs.submit_batch([{"question": "no labels"}], caller=LOCAL).id)
    finally:
        jobs.close()
    metrics = done.metrics
    assert metrics is not None and metrics["labelled"] == 2
    assert metrics["hit@1"] == 0.5 and metrics["page_accuracy@1"] == 1.0
    assert metrics["abstention_rate"] == 0.0 and "citation_validity" in metrics
    assert metrics["latency_p50_ms"] > 0
    assert all("_eval" not in r for r in rows)
    assert plain.metrics is None


def test_compare_answers_each_question_with_every_model(tmp_path: Path, model: Model) -> None:
    a, b = Model(name="model-a"), Model(name="model-b")
    jobs = job_service(tmp_path, model, models={"a": a, "b": b})
    try:
        info = jobs.submit_batch([{"question": "which?"}], compare=["a", "b"], caller=LOCAL)
        assert info.options == {"concurrency": 4, "compare": ["a", "b"]}
        wait(jobs, info.id)
        (row,) = jobs.results(info.id, caller=LOCAL)
    finally:
        jobs.close()
    assert set(row["answers"]) == {"a", "b"}
    assert row["answers"]["b"]["model"] == "model-b" and row["model"] == "model-a"
    assert a.asked == {"which?": 1} and b.asked == {"which?": 1} and not model.asked


def test_an_ingestion_job_indexes_uploads_with_progress(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model)
    try:
        info = jobs.submit_ingest(
            [
                ("notes.md", b"# Notes\n\nThe lighthouse lens is polished monthly.\n"),
                ("fake.pdf", b"this is no pdf"),
            ],
            caller=LOCAL,
        )
        assert info.kind == "ingest" and info.total == 2
        done = wait(jobs, info.id)
        rows = jobs.results(info.id, caller=LOCAL)
        unchanged = jobs.submit_ingest([("again.md", b"# Notes\n\nThe lighthouse lens is "
                                        b"polished monthly.\n")], caller=LOCAL)  # fmt: skip
        with pytest.raises(InvalidInputError):
            jobs.submit_ingest([], caller=LOCAL)
    finally:
        jobs.close()
    assert done.state is JobState.DONE and done.done == 2
    assert [r["status"] for r in rows] == ["added", "failed"]
    assert done.errors and done.errors[0]["name"] == "fake.pdf"
    assert unchanged.state is JobState.DONE
    assert jobs.results(unchanged.id, caller=LOCAL)[0]["status"] == "unchanged"


def test_a_reindex_job_reads_documents_again_under_their_names(
    tmp_path: Path, model: Model
) -> None:
    jobs = job_service(tmp_path, model)
    try:
        added = wait(
            jobs, jobs.submit_ingest([("Pump Manual.md", b"# Pump\n\nOil it.\n")], caller=LOCAL).id
        )
        assert added.state is JobState.DONE
        service = jobs._service
        assert service is not None
        (doc,) = [d for d in service.documents(caller=LOCAL) if d.name == "Pump Manual.md"]
        again = wait(jobs, jobs.submit_reindex([doc.id], caller=LOCAL).id)
        assert again.state is JobState.DONE and again.stages["parse"] == [1, 1]
        assert jobs.results(again.id, caller=LOCAL) == [
            {"name": "Pump Manual.md", "status": "re-indexed", "reason": ""}
        ]
        Path(doc.sources[0]).unlink()  # its uploaded copy is gone
        with pytest.raises(InvalidInputError, match="gone; delete them instead"):
            jobs.submit_reindex([doc.id], caller=LOCAL)
        with pytest.raises(InvalidInputError):
            jobs.submit_reindex([], caller=LOCAL)
    finally:
        jobs.close()


def test_job_records_survive_a_new_process(tmp_path: Path, model: Model) -> None:
    jobs = job_service(tmp_path, model)
    info = jobs.submit_batch([{"question": "kept?"}], caller=LOCAL)
    wait(jobs, info.id)
    jobs.close()
    other = JobService(
        JobQueue(
            SqliteHuey("ragchat", filename=str(tmp_path / "queue.db"), results=False),
            SqliteJobStore(tmp_path / "jobs.db"),
            lambda: fake_service(tmp_path, model),
        )
    )
    try:
        assert other.get(info.id, caller=LOCAL).state is JobState.DONE
        assert (
            json.loads(json.dumps(other.results(info.id, caller=LOCAL)))[0]["question"] == "kept?"
        )
    finally:
        other.close()


def test_the_store_closes_connections_of_threads_that_ended(tmp_path: Path) -> None:
    """Page reruns and the API's pool read jobs from short-lived threads."""
    store = SqliteJobStore(tmp_path / "jobs.db")
    try:
        for _ in range(50):
            reader = threading.Thread(target=store.records)
            reader.start()
            reader.join()
        store.records()  # this thread opens one more, closing the ended threads' ones
        assert len(store._connections) <= 2
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            reader = threading.Thread(target=store.records)
            reader.start()
            reader.join()
        assert len(os.listdir("/proc/self/fd")) <= fds + 6
    finally:
        store.close()


def test_the_claim_keeper_outlives_a_store_error(
    tmp_path: Path, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    jobs = job_service(tmp_path, model, claim_ttl_s=0.3)
    calls: list[int] = []
    refresh = jobs.store.refresh

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RedisConnectionError("the connection to the store dropped")  # no OSError
        return refresh(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs.store, "refresh", flaky)
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 3:
            assert time.monotonic() < deadline, "the keeper stopped after the error"
            time.sleep(0.05)
    finally:
        jobs.close()


def test_a_job_whose_service_cannot_be_built_fails_with_its_reason(tmp_path: Path) -> None:
    from rag.errors import ConfigError

    def no_service() -> object:
        raise ConfigError("RAG_CHUNK_SIZE", "must be at least 16")

    queue = JobQueue(
        SqliteHuey("ragchat", filename=str(tmp_path / "queue.db"), results=False),
        SqliteJobStore(tmp_path / "jobs.db"),
        no_service,  # type: ignore[arg-type]
        claim_ttl_s=5.0,
        retry_wait_s=0.01,
    )
    queue.start(2)
    jobs = JobService(queue)
    try:
        info = wait(
            jobs, jobs.submit_batch([{"question": "a?"}, {"question": "b?"}], caller=LOCAL).id
        )
        deadline = time.monotonic() + 5
        while info.finished_at is None:  # marked just after the last row is stored
            assert time.monotonic() < deadline, "the job was never marked finished"
            time.sleep(0.02)
            info = jobs.get(info.id, caller=LOCAL)
        rows = jobs.results(info.id, caller=LOCAL)
    finally:
        jobs.close()
    assert info.state is JobState.FAILED
    assert [r["question"] for r in rows] == ["a?", "b?"]
    assert all("RAG_CHUNK_SIZE" in r["error"] for r in rows)


def test_compare_with_another_url_sends_it_nothing_of_the_configured_endpoint(
    tmp_path: Path, model: Model
) -> None:
    from pydantic import SecretStr

    from rag.jobs.answering import model_engines
    from rag.llm.client import Endpoint

    service = fake_service(tmp_path, model)
    configured = Endpoint("http://configured/v1", "main", api_key=SecretStr("sk-secret"))
    service.models.endpoints = lambda: [configured]  # type: ignore[method-assign]
    engines = model_engines(service)
    (outside,) = engines("other@http://elsewhere/v1").endpoints
    assert (outside.base_url, outside.model, outside.api_key) == (
        "http://elsewhere/v1", "other", None,
    )  # fmt: skip
    assert outside.server is None
    (same,) = engines("small").endpoints
    assert (same.base_url, same.model, same.api_key) == (
        "http://configured/v1", "small", configured.api_key,
    )  # fmt: skip
