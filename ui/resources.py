"""Shared heavy objects, built once per server process and shared by all sessions."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from ingest.pipeline import IngestPipeline, Progress
from rag.chain import ChatEngine
from rag.errors import RagError
from rag.memory import ConversationStore
from rag.service.components import shared_jobs, shared_service
from rag.service.core import RagService
from rag.settings import Settings
from rag.store.faiss import FaissStore

logger = logging.getLogger(__name__)


class IngestJob:
    """One ingestion running in the background: its progress, then its result.

    ``progress`` is the pipeline's progress callback; it only records numbers (it runs in
    the worker thread, which must not touch Streamlit), and the page reads them.
    """

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._stages: dict[str, tuple[int, int]] = {}
        self.future: Future[Any] | None = None
        self.finished_at: float | None = None  # by the runner's clock, once it has ended

    def progress(self, stage: str, done: int, total: int) -> None:
        """Record the latest (done, total) of a stage (see ``ingest.pipeline.Progress``)."""
        with self._lock:
            self._stages[stage] = (done, total)
            if stage != "wait":
                self._stages.pop("wait", None)  # the wait is over once anything else moves

    def stage(self, name: str) -> tuple[int, int] | None:
        """The latest (done, total) of a stage, None before it started."""
        with self._lock:
            return self._stages.get(name)

    def done(self) -> bool:
        """Whether the job has finished (with a result or an error)."""
        return self.future is not None and self.future.done()

    def started(self) -> bool:
        """Whether the worker has begun this job (jobs ahead of it run first)."""
        return self.future is not None and (self.future.running() or self.future.done())


@dataclass
class IngestRunner:
    """Runs ingestions one at a time in one background thread, for the whole server.

    Pages submit work and poll the job, so a slow parse or a wait for the index lock never
    blocks a page, and other users keep reading and asking meanwhile. A finished job that
    no session collects (its browser tab was closed) is forgotten ``keep_finished_s`` after
    it ended.
    """

    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
    )
    _jobs: dict[str, IngestJob] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    keep_finished_s: float = 3600.0
    clock: Callable[[], float] = time.monotonic

    def submit(self, job: IngestJob, work: Callable[[], Any]) -> str:
        """Queue ``work`` (which reports through ``job.progress``); returns the job's id."""

        def run() -> Any:
            try:
                return work()
            finally:
                job.finished_at = self.clock()  # before the future says it is done

        with self._lock:
            self._forget_old()
            self._jobs[job.id] = job
            job.future = self._executor.submit(run)
        return job.id

    def get(self, job_id: str) -> IngestJob | None:
        """A job by id, None once collected, forgotten (or after a server restart)."""
        with self._lock:
            self._forget_old()
            return self._jobs.get(job_id)

    def _forget_old(self) -> None:
        """Drop finished jobs nobody collected within ``keep_finished_s`` (under the lock)."""
        now = self.clock()
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > self.keep_finished_s:
                logger.info("forgetting ingestion job %s: its results were never collected", job_id)
                del self._jobs[job_id]

    def collect(self, job_id: str) -> Any:
        """The finished job's result (re-raising its error); forgets the job.

        Raises:
            ValueError: the job is unknown or still running.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.future is None or not job.future.done():
                raise ValueError(f"job {job_id} is not finished")
            del self._jobs[job_id]
        return job.future.result()

    def shutdown(self) -> None:
        """Let the running job finish; start no more."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Resources:
    """What the pages need; tests build one from fakes."""

    settings: Settings
    store: FaissStore
    memory: ConversationStore
    engine: Callable[[], ChatEngine]
    pipeline: Callable[[Progress], IngestPipeline]
    ingest_runner: IngestRunner = field(default_factory=IngestRunner)
    # The server's job service (rag.service.jobs.JobService); None where there is none.
    jobs: Callable[[], Any] | None = None

    @property
    def uploads_dir(self) -> Path:
        """Where uploads are kept."""
        return self.settings.uploads_dir


def _service() -> RagService:
    """The server process's one service, shared with the HTTP API (built on first use)."""
    return shared_service()


def _warm_up() -> None:
    """Start and warm the bundled model and the embedding model (in a background thread)."""
    try:
        _service().warm()
    except RagError as exc:  # the first question shows it again, to the user
        logger.warning("warm-up failed: %s", exc)


@st.cache_resource(show_spinner=False)
def _warm_start() -> threading.Thread:
    """Once per server process, when the app starts: the models warm up behind the page.

    The first question then finds them loaded; one asked sooner waits for them under the
    "Loading the models…" spinner (the service's model start-up is shared).
    """
    thread = threading.Thread(target=_warm_up, name="ragchat-warm-up", daemon=True)
    thread.start()
    return thread


@st.cache_resource(show_spinner=False)
def _ingest_runner() -> IngestRunner:
    runner = IngestRunner()
    atexit.register(runner.shutdown)
    return runner


def _engine() -> ChatEngine:
    with st.spinner("Loading the models…"):
        return _service().engine(conversations=True)


def resources() -> Resources:
    """The real resources: the shared service's parts."""
    _warm_start()
    service = _service()
    return Resources(
        settings=service.settings,
        store=service.store,
        memory=service.memory,
        engine=_engine,
        pipeline=service.pipeline,
        ingest_runner=_ingest_runner(),
        jobs=shared_jobs,
    )
