"""The Huey queue, its tasks, its worker threads, and recovery after a crash.

A batch job fans out as one ``answer_question(job_id, index)`` task per question; an
ingestion job is one ``ingest_uploads(job_id)`` task. The tasks are idempotent, so the
queue may deliver a task twice and recovery may enqueue one again:

1. a question that has its row is done: the task returns without asking anything;
2. otherwise the task claims the question in the store (at most ``concurrency``
   questions of a job are claimed at once; a question claimed by another live worker is
   left to it) and, if it cannot, goes back to the end of the queue after a short wait;
3. the answer is written with insert-or-ignore, then the claim is released.

A worker refreshes its claims while it answers; a killed worker's claims lapse after
``claim_ttl_s``. A task that a killed worker had taken from the queue is gone from the
queue (Huey deletes a task when it is dequeued), so every worker re-enqueues the missing
questions of unfinished jobs when it starts, and again whenever it sees an unfinished job
with no live claims while the queue is empty (the tasks must have been lost).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer
from huey.exceptions import RetryTask
from redis.exceptions import RedisError

from rag.errors import JobNotFoundError, RagError
from rag.jobs.answering import EngineFor, answer_row, failed_row, model_engines
from rag.jobs.metrics import batch_metrics
from rag.jobs.store import Claim, JobRecord, JobStore, SqliteJobStore, now_iso

if TYPE_CHECKING:
    from rag.service.core import RagService
    from rag.settings import Settings

logger = logging.getLogger(__name__)

QUEUE_NAME = "ragchat"

# What a job store raises when its database is unreachable or busy: the SQLite store, the
# Redis store (redis-py's errors are not OSErrors), and our own wrapping.
_STORE_ERRORS: tuple[type[BaseException], ...] = (
    RagError,
    OSError,
    sqlite3.Error,
    RedisError,
)


def queue_url(settings: Settings) -> str | None:
    """``RAG_QUEUE_URL`` (a ``redis://`` URL), or None for the embedded SQLite queue."""
    url: str | None = settings.queue_url
    return url or None


def build_huey(settings: Settings) -> Huey:
    """``RedisHuey`` for ``RAG_QUEUE_URL``, else ``SqliteHuey`` in ``queue.db``.

    Raises:
        RagError: the URL is not a Redis URL, or the data directory cannot be written.
    """
    url = queue_url(settings)
    if url:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise RagError(f"RAG_QUEUE_URL {url!r}: use a redis:// URL")
        return RedisHuey(QUEUE_NAME, url=url, results=False)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RagError(f"cannot create the data folder {settings.data_dir}: {exc}") from exc
    return SqliteHuey(QUEUE_NAME, filename=str(settings.data_dir / "queue.db"), results=False)


def build_job_store(settings: Settings) -> JobStore:
    """Redis for ``RAG_QUEUE_URL`` (shared by every machine), else ``jobs.db``."""
    url = queue_url(settings)
    if url:
        from rag.jobs.redis_store import RedisJobStore

        return RedisJobStore(url)
    return SqliteJobStore(settings.data_dir / "jobs.db")


class _HostedConsumer(Consumer):
    """A consumer whose threads run inside another program: it leaves signals alone."""

    def _set_signal_handlers(self) -> None:
        return


class JobQueue:
    """The queue with its tasks registered, the store they write to, and the workers.

    ``service`` gives the ``RagService`` tasks answer with (called in the worker, at the
    first task: the web app passes its own, a ``ragchat worker`` builds one from the
    environment). ``engine_for`` builds engines for compared models (default: over the
    service's index and endpoint).
    """

    def __init__(
        self,
        huey: Huey,
        store: JobStore,
        service: Callable[[], RagService],
        *,
        engine_for: EngineFor | None = None,
        claim_ttl_s: float = 30.0,
        retry_wait_s: float = 0.05,
        question_retry_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if claim_ttl_s <= 0:
            raise ValueError("claim_ttl_s must be positive")
        self.huey = huey
        self.store = store
        self._service = service
        self._engine_for = engine_for
        self.claim_ttl_s = claim_ttl_s
        self.retry_wait_s = retry_wait_s
        # How a failed question waits before it is asked again (rag.errors.RETRY_POLICIES).
        self.question_retry_sleep = question_retry_sleep
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._stalled: set[str] = set()
        self.answered = 0  # questions this process sent to a model
        self.answer_task = huey.task(name="answer_question")(self._answer_question)
        self.ingest_task = huey.task(name="ingest_uploads")(self._ingest_uploads)

    def depth(self) -> int:
        """Tasks waiting in the queue (not yet taken by a worker)."""
        return int(self.huey.pending_count())

    # Submitting -----------------------------------------------------------------------

    def enqueue_questions(self, job_id: str, indices: list[int]) -> None:
        """One task per question (fan-out)."""
        for index in indices:
            self.answer_task(job_id, index)

    def enqueue_ingest(self, job_id: str) -> None:
        """The task that indexes a job's saved uploads."""
        self.ingest_task(job_id)

    def missing(self, job_id: str) -> list[int]:
        """Indices of a job's questions that have no row yet."""
        rows = self.store.rows(job_id)
        return [i for i in self.store.items(job_id) if i not in rows]

    def resume(self, job_id: str) -> list[int]:
        """Enqueue a job's questions that have no row (idempotent); returns them."""
        record = self.store.record(job_id)
        if record.cancelled or record.finished_at is not None:
            return []
        if record.kind == "ingest":
            if self.store.row_count(job_id) == 0:
                self.enqueue_ingest(job_id)
                return [0]
            return []
        todo = self.missing(job_id)
        self.enqueue_questions(job_id, todo)
        return todo

    def recover(self) -> int:
        """Re-enqueue the unanswered questions of every unfinished job; how many."""
        count = 0
        for job_id in self.store.unfinished():
            count += len(self.resume(job_id))
        if count:
            logger.info("re-enqueued %d unfinished tasks", count)
        return count

    # Workers --------------------------------------------------------------------------

    def start(self, workers: int, *, recover: bool = True) -> None:
        """Run ``workers`` worker threads in this process (and the claim keeper)."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if recover:
            self.recover()
        self._stop.clear()
        self._consumer = self.consumer(workers, hosted=True)
        self._consumer.start()
        self.start_keeper()

    def consumer(self, workers: int, *, hosted: bool) -> Consumer:
        """A thread consumer; ``hosted``: inside another program (no signal handlers)."""
        kind = _HostedConsumer if hosted else Consumer
        consumer: Consumer = kind(
            self.huey,
            workers=workers,
            worker_type="thread",
            periodic=False,
            initial_delay=0.02,
            backoff=1.5,
            max_delay=0.5,
            graceful_signal="TERM",
        )
        return consumer

    def start_keeper(self) -> None:
        """Refresh this process's claims and watch for lost tasks, in a daemon thread."""
        self._keeper = threading.Thread(target=self._keep, name="job-claims", daemon=True)
        self._keeper.start()

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the worker threads (``graceful``: after the questions they are answering)."""
        if self._consumer is not None:
            self._consumer.stop(graceful=graceful)
            self._consumer = None
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
            self._keeper = None

    def _keep(self) -> None:
        interval = max(self.claim_ttl_s / 3, 0.05)
        last_watch = time.monotonic()
        while not self._stop.wait(interval):
            with self._lock:
                held = list(self._held)
            try:
                self.store.refresh(self.owner, held, self.claim_ttl_s)
                if time.monotonic() - last_watch >= self.claim_ttl_s:
                    last_watch = time.monotonic()
                    self.watch()
            except _STORE_ERRORS as exc:
                # The keeper must outlive a store outage (a Redis error is no OSError):
                # a dead keeper lets claims lapse while their questions are being
                # answered, and another worker asks them again.
                logger.warning(
                    "cannot refresh job claims (%s: %s); trying again in %.1f s",
                    type(exc).__name__,
                    exc,
                    interval,
                )

    def watch(self) -> list[str]:
        """Re-enqueue jobs whose tasks were lost; the ids of those jobs.

        A job is stalled when it is unfinished, has questions without rows, none is
        claimed, and the queue is empty; seen so twice in a row, its tasks are gone.
        """
        if self.huey.pending_count() > 0:
            self._stalled.clear()
            return []
        stalled = set()
        for job_id in self.store.unfinished():
            if self.missing(job_id) and not self._claimed(job_id):
                stalled.add(job_id)
        lost = sorted(stalled & self._stalled)
        self._stalled = stalled - set(lost)
        for job_id in lost:
            logger.warning("job %s had lost tasks; enqueued them again", job_id)
            self.resume(job_id)
        return lost

    def _claimed(self, job_id: str) -> bool:
        return self.store.live_claims(job_id) > 0

    # Tasks ----------------------------------------------------------------------------

    def _claim_or_retry(self, job_id: str, index: int, limit: int) -> None:
        key = (job_id, index)
        with self._lock:
            # The store's claim belongs to this process, so it lets all of its threads
            # in: a copy of a task (from recovery or the watchdog) on a second thread
            # would ask the question again. This set keeps the claim to one thread.
            mine = key in self._held
            self._held.add(key)
        claim = Claim.TAKEN
        if not mine:
            try:
                claim = self.store.claim(job_id, index, self.owner, self.claim_ttl_s, limit)
            finally:
                if claim is not Claim.OK:  # not claimed, or the store failed
                    with self._lock:
                        self._held.discard(key)
        if claim is not Claim.OK:
            # The job has its share in flight, or another thread or worker answers this
            # question: back to the end of the queue (it returns at once when that one is
            # done).
            time.sleep(self.retry_wait_s)
            raise RetryTask()

    def _release(self, job_id: str, index: int) -> None:
        with self._lock:
            self._held.discard((job_id, index))
        self.store.release(job_id, index, self.owner)

    def _answer_question(self, job_id: str, index: int) -> None:
        """Answer one question of a batch, exactly once (see the module docstring)."""
        if self.store.has_row(job_id, index):
            return
        try:
            record = self.store.record(job_id)
        except JobNotFoundError:
            logger.warning("task for unknown job %s dropped", job_id)
            return
        if record.cancelled or record.finished_at is not None:
            return
        self._claim_or_retry(job_id, index, int(record.options.get("concurrency", 1)))
        try:
            if self.store.has_row(job_id, index):  # answered while this task waited
                return
            if record.started_at is None:
                self.store.mark(job_id, "started_at", now_iso())
            item = self.store.item(job_id, index)
            compare = record.options.get("compare") or None
            try:
                service = self._service()
                caller = service.access.revive(record.options.get("_caller"))
                row = answer_row(
                    service,
                    index,
                    item,
                    caller=caller,
                    collections=record.options.get("collections"),
                    compare=compare,
                    engine_for=self._engines(service),
                    sleep=self.question_retry_sleep,
                )
            except RagError as exc:  # no service (a bad setting): this question fails
                row = failed_row(index, item, exc)
            except Exception as exc:
                # A bug, not a model failure: the row says so, and the worker logs it.
                self.store.put_row(job_id, index, _internal_error(index, item, exc))
                raise
            finally:
                with self._lock:
                    self.answered += 1
            row["_worker"] = self.owner  # kept in the store for audits, not in results
            self.store.put_row(job_id, index, row)
        finally:
            self._release(job_id, index)
            self._finish_if_complete(record)  # also after a bug wrote its error row

    def _engines(self, service: RagService) -> EngineFor:
        with self._lock:
            if self._engine_for is None:
                self._engine_for = model_engines(service)
            return self._engine_for

    def _finish_if_complete(self, record: JobRecord) -> None:
        if self.store.row_count(record.id) < record.total:
            return
        rows = self.store.rows(record.id)
        if any("_eval" in r for r in rows.values()):
            metrics = batch_metrics(self.store.items(record.id), rows)
            self.store.update(record.id, metrics=metrics)
        self.store.mark(record.id, "finished_at", now_iso())

    def _ingest_uploads(self, job_id: str) -> None:
        """Index a job's saved uploads (or re-index its files); one row per file."""
        from rag.service.documents import PreparedUploads, UploadResult, reindex
        from rag.store.collections import DEFAULT_COLLECTION

        if self.store.row_count(job_id):
            return
        try:
            record = self.store.record(job_id)
        except JobNotFoundError:
            logger.warning("task for unknown job %s dropped", job_id)
            return
        if record.cancelled or record.finished_at is not None:
            return
        self._claim_or_retry(job_id, 0, 1)
        try:
            self.store.mark(job_id, "started_at", now_iso())
            payload = self.store.item(job_id, 0)
            stages: dict[str, list[int]] = {}

            def progress(stage: str, done: int, total: int) -> None:
                stages[stage] = [done, total]
                if stage != "wait":
                    stages.pop("wait", None)  # the wait is over once anything else moves
                fields: dict[str, Any] = {"stages": dict(stages)}
                if stage == "parse" and total:
                    fields["progress"] = done
                self.store.update(job_id, **fields)

            try:
                service = self._service()
                if "reindex" in payload:
                    # [path, name, collection] (older jobs: [path, name], the default).
                    groups: dict[str, dict[Path, str]] = {}
                    for path, name, *rest in payload["reindex"]:
                        groups.setdefault(rest[0] if rest else DEFAULT_COLLECTION, {})[
                            Path(path)
                        ] = name
                    results = []
                    for collection, names in groups.items():
                        results += reindex(
                            service.pipeline(progress), list(names), names, collection
                        )
                else:
                    prepared = PreparedUploads(
                        results={r["name"]: UploadResult(**r) for r in payload["results"]},
                        saved={Path(p): name for p, name in payload["saved"]},
                        collection=payload.get("collection", DEFAULT_COLLECTION),
                    )
                    results = service.index_uploads(prepared, progress)
            except RagError as exc:
                self.store.update(job_id, failure=str(exc))
                results = []
            except Exception as exc:
                # A bug: the job fails (rather than staying "running" and being run again
                # by the watchdog), and the worker logs it.
                self.store.update(
                    job_id, failure=f"internal error ({type(exc).__name__}); see the worker's log"
                )
                self.store.mark(job_id, "finished_at", now_iso())
                raise
            for n, result in enumerate(results):
                self.store.put_row(job_id, n, result.to_json())
            self.store.update(job_id, progress=record.total)
            self.store.mark(job_id, "finished_at", now_iso())
        finally:
            self._release(job_id, 0)


def _internal_error(index: int, item: dict[str, Any], exc: Exception) -> dict[str, Any]:
    return failed_row(index, item, f"internal error ({type(exc).__name__}); see the worker's log")
