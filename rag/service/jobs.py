"""``JobService``: batch question runs, model comparisons and ingestion as queued jobs.

Every adapter (the HTTP API, ``ragchat batch``, the Batch page) submits and reads jobs
here; the tasks, the queue and the results store live in ``rag.jobs``. A job's state and
progress are derived from the store each time they are read, so they survive a restart
of the app or of any worker.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.access.principal import LOCAL_USER, principal_json
from rag.errors import InvalidInputError, JobNotFoundError, RagError
from rag.evaluation import percentile
from rag.jobs.answering import parse_models
from rag.jobs.inputs import ParsedRows, check_rows, parse_file
from rag.jobs.queue import JobQueue, build_huey, build_job_store, queue_url
from rag.jobs.store import JobRecord, now_iso
from rag.text import safe_label

if TYPE_CHECKING:
    from rag.access.principal import Principal
    from rag.service.core import RagService
    from rag.settings import Settings

logger = logging.getLogger(__name__)

MAX_CONCURRENCY = 64


class JobState(StrEnum):
    """Where a job is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class JobInfo:
    """A job as adapters show it: state, progress, problems, timings, metrics."""

    id: str
    kind: str  # "batch" | "ingest"
    state: JobState
    done: int  # questions (or files) finished, errors included
    total: int
    errors: list[dict[str, Any]]  # input problems {"line", "field", "error"}; {"index", "error"}
    created_at: str  # ISO 8601 UTC
    started_at: str | None
    finished_at: str | None
    timings: dict[str, float]
    options: dict[str, Any]  # as submitted; who submitted it is kept out
    metrics: dict[str, Any] | None
    # Ingest jobs: the pipeline's latest [done, total] per stage (parse, read, embed,
    # publish; wait: seconds waited for another ingestion).
    stages: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Exactly the fields above, the state as its string."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": str(self.state),
            "done": self.done,
            "total": self.total,
            "errors": self.errors,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "timings": self.timings,
            "options": self.options,
            "metrics": self.metrics,
            "stages": self.stages,
        }


def _seconds(start: str | None, end: str | None) -> float | None:
    if start is None:
        return None
    finish = datetime.fromisoformat(end) if end else datetime.now(UTC)
    return round((finish - datetime.fromisoformat(start)).total_seconds(), 3)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


class JobService:
    """Submit, follow, cancel and read jobs on a ``JobQueue``.

    ``service`` saves uploads for ingestion jobs (``None``: this process submits batches
    only). ``default_concurrency``: questions of one job in flight at once when a batch
    does not say.
    """

    def __init__(
        self,
        queue: JobQueue,
        service: RagService | None = None,
        *,
        default_concurrency: int = 4,
    ) -> None:
        if not 1 <= default_concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"default_concurrency must be 1..{MAX_CONCURRENCY}")
        self.queue = queue
        self.store = queue.store
        self._service = service
        self._default_concurrency = default_concurrency

    # Submitting -----------------------------------------------------------------------

    def submit_batch(
        self,
        questions: list[dict[str, Any]],
        *,
        caller: Principal,
        collections: list[str] | None = None,
        concurrency: int | None = None,
        compare: list[str] | None = None,
    ) -> JobInfo:
        """Queue one task per usable row; bad rows are listed in the job's errors.

        Raises:
            InvalidInputError: ``questions`` is no list or has no usable row, or
                ``concurrency``/``compare`` are out of range.
        """
        if not isinstance(questions, list):
            raise InvalidInputError("questions", "must be a list of {question, ...} objects")
        options = self._options(concurrency, compare, caller, collections)
        return self._submit(check_rows(questions), "questions", options)

    def submit_batch_file(
        self,
        name: str,
        data: bytes,
        *,
        caller: Principal,
        collections: list[str] | None = None,
        concurrency: int | None = None,
        compare: list[str] | None = None,
    ) -> JobInfo:
        """``submit_batch`` for a ``.jsonl``/``.json`` or ``.csv`` file.

        Raises:
            InvalidInputError: ``file`` of unknown format or undecodable, or no usable row.
        """
        options = self._options(concurrency, compare, caller, collections)
        return self._submit(parse_file(name, data), "file", options)

    def _options(
        self,
        concurrency: int | None,
        compare: list[str] | None,
        caller: Principal,
        collections: list[str] | None,
    ) -> dict[str, Any]:
        if concurrency is None:
            concurrency = self._default_concurrency
        if (
            not isinstance(concurrency, int)
            or isinstance(concurrency, bool)
            or not 1 <= concurrency <= MAX_CONCURRENCY
        ):
            raise InvalidInputError("concurrency", f"must be a whole number 1..{MAX_CONCURRENCY}")
        if self._service is not None:  # a collection the caller may not read: 404 now
            self._service.scope(caller, collections)
        options: dict[str, Any] = {"concurrency": concurrency, **_owned_by(caller)}
        if collections is not None:
            options["collections"] = list(collections)
        if compare is not None:
            try:
                options["compare"] = parse_models(compare)
            except RagError as exc:
                raise InvalidInputError("compare", str(exc)) from exc
        return options

    def _submit(self, parsed: ParsedRows, what: str, options: dict[str, Any]) -> JobInfo:
        if not parsed.rows:
            first = parsed.errors[0] if parsed.errors else None
            detail = f"; line {first['line']}: {first['field']} {first['error']}" if first else ""
            raise InvalidInputError(what, f"no usable question{detail}")
        record = JobRecord(
            id=uuid.uuid4().hex,
            kind="batch",
            created_at=now_iso(),
            total=len(parsed.rows),
            options=options,
            errors=parsed.errors,
        )
        self.store.create(record, parsed.rows)
        self.queue.enqueue_questions(record.id, list(parsed.rows))
        logger.info("batch job %s: %d questions queued", record.id, record.total)
        return self._info(record)

    def submit_ingest(
        self, files: list[tuple[str, bytes]], *, caller: Principal, collection: str | None = None
    ) -> JobInfo:
        """Save uploads now (fast) and index them in a task; one result row per file.

        Raises:
            InvalidInputError: ``files`` is empty.
            RagError: this job service has no ``RagService`` to save uploads with.
        """
        if not files:
            raise InvalidInputError("files", "no file uploaded")
        if self._service is None:
            raise RagError("this process cannot take uploads (no service)")
        prepared = self._service.prepare_uploads(files, caller=caller, collection=collection)
        results = list(prepared.results.values())
        record = JobRecord(
            id=uuid.uuid4().hex,
            kind="ingest",
            created_at=now_iso(),
            total=len(results),
            options={"files": len(files), "collection": prepared.collection, **_owned_by(caller)},
            progress=len(results) - len(prepared.saved),
        )
        payload = {
            "results": [r.to_json() for r in results],
            "saved": [[str(path), name] for path, name in prepared.saved.items()],
            "collection": prepared.collection,
        }
        self.store.create(record, {0: payload})
        if prepared.saved:
            self.queue.enqueue_ingest(record.id)
        else:  # nothing to index: every file is already final (unchanged, too large, ...)
            for n, result in enumerate(results):
                self.store.put_row(record.id, n, result.to_json())
            at = now_iso()
            self.store.mark(record.id, "started_at", at)
            self.store.mark(record.id, "finished_at", at)
        return self._info(self.store.record(record.id))

    def submit_reindex(self, doc_ids: builtins.list[str], *, caller: Principal) -> JobInfo:
        """Read and embed documents again (after changing the chunking, say), as a job.

        Each document's files keep their display names; one result row per file.

        Raises:
            InvalidInputError: no document id given, or none of their files is left.
            DocumentNotFoundError: an id matches no indexed document.
            RagError: this job service has no ``RagService``.
        """
        if not doc_ids:
            raise InvalidInputError("documents", "no document to re-index")
        if self._service is None:
            raise RagError("this process cannot re-index (no service)")
        files: dict[str, tuple[str, str]] = {}
        for key in doc_ids:
            doc = self._service.document(key, caller=caller)
            self._service.access.writable(caller, doc.collection)
            titles = [*doc.titles, *[""] * (len(doc.sources) - len(doc.titles))]
            for source, title in zip(doc.sources, titles, strict=False):
                if Path(source).is_file():
                    files[source] = (safe_label(title or doc.name), doc.collection)
        if not files:
            raise InvalidInputError(
                "documents", "the files of these documents are gone; delete them instead"
            )
        record = JobRecord(
            id=uuid.uuid4().hex,
            kind="ingest",
            created_at=now_iso(),
            total=len(files),
            options={"reindex": len(doc_ids), **_owned_by(caller)},
        )
        rows = [[p, n, c] for p, (n, c) in files.items()]
        self.store.create(record, {0: {"reindex": rows}})
        self.queue.enqueue_ingest(record.id)
        self._service.access.record(caller, "re-index queued", record.id, {"documents": doc_ids})
        return self._info(record)

    # Reading --------------------------------------------------------------------------

    def _record(self, job_id: str, caller: Principal) -> JobRecord:
        """A job of the caller's (another user's answers ``JobNotFoundError`` too)."""
        record = self.store.record(job_id)
        if record.options.get("_owner", LOCAL_USER) != caller.user_id:
            raise JobNotFoundError(job_id)
        return record

    def get(self, job_id: str, *, caller: Principal) -> JobInfo:
        """A job's state, progress, errors and timings (raises ``JobNotFoundError``)."""
        return self._info(self._record(job_id, caller))

    def list(self, *, caller: Principal) -> list[JobInfo]:
        """The caller's jobs, newest first."""
        return [
            self._info(r)
            for r in self.store.records()
            if r.options.get("_owner", LOCAL_USER) == caller.user_id
        ]

    def results(self, job_id: str, *, caller: Principal) -> builtins.list[dict[str, Any]]:
        """Finished rows in input order (raises ``JobNotFoundError``)."""
        self._record(job_id, caller)
        return [_public(row) for _, row in sorted(self.store.rows(job_id).items())]

    def cancel(self, job_id: str, *, caller: Principal) -> JobInfo:
        """Cancel a queued or running job: its unstarted questions never run.

        Questions being answered at that moment finish and keep their rows; a finished
        job is returned unchanged.
        """
        self._record(job_id, caller)
        if self.store.cancel(job_id, now_iso()):
            logger.info("job %s cancelled", job_id)
        return self.get(job_id, caller=caller)

    def resume(self, job_id: str, *, caller: Principal) -> JobInfo:
        """Queue again the questions of an unfinished job that have no row (idempotent)."""
        self._record(job_id, caller)
        self.queue.resume(job_id)
        return self.get(job_id, caller=caller)

    def _info(self, record: JobRecord) -> JobInfo:
        rows = self.store.rows(record.id)
        errors = list(record.errors)
        if record.kind == "ingest":
            done = record.total if record.finished_at else min(record.progress, record.total)
            errors += [
                {"index": i, "name": r.get("name"), "error": r.get("reason")}
                for i, r in sorted(rows.items())
                if r.get("status") == "failed"
            ]
            if record.failure:
                errors.append({"error": record.failure})
        else:
            done = len(rows)
            errors += [
                {"index": i, "error": r["error"]} for i, r in sorted(rows.items()) if r.get("error")
            ]
        return JobInfo(
            id=record.id,
            kind=record.kind,
            state=self._state(record, rows, done),
            done=done,
            total=record.total,
            errors=errors,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            timings=self._timings(record, rows),
            options={k: v for k, v in record.options.items() if not k.startswith("_")},
            metrics=record.metrics,
            stages=record.stages,
        )

    @staticmethod
    def _state(record: JobRecord, rows: dict[int, dict[str, Any]], done: int) -> JobState:
        if record.cancelled:
            return JobState.CANCELLED
        if record.kind == "ingest" and record.failure:
            return JobState.FAILED
        if record.finished_at is not None or (record.kind == "batch" and done >= record.total):
            if record.kind == "batch" and rows and all(r.get("error") for r in rows.values()):
                return JobState.FAILED
            return JobState.DONE
        return JobState.RUNNING if record.started_at else JobState.QUEUED

    @staticmethod
    def _timings(record: JobRecord, rows: dict[int, dict[str, Any]]) -> dict[str, float]:
        timings: dict[str, float] = {}
        queued = _seconds(record.created_at, record.started_at)
        if queued is not None and record.started_at is not None:
            timings["queued_s"] = queued
        run = _seconds(record.started_at, record.finished_at)
        if run is not None:
            timings["run_s"] = run
        totals = [
            r["timings"]["total_ms"]
            for r in rows.values()
            if "total_ms" in (r.get("timings") or {})
        ]
        if totals:
            timings["per_question_ms_p50"] = round(percentile(totals, 50), 1)
            timings["per_question_ms_p95"] = round(percentile(totals, 95), 1)
        return timings

    def close(self) -> None:
        """Stop this process's worker threads (after their current question) and the store."""
        self.queue.stop()
        self.store.close()


def _owned_by(caller: Principal) -> dict[str, Any]:
    """Job options naming who submitted it (kept out of the job's JSON: ``_`` keys)."""
    return {"_owner": caller.user_id, "_caller": principal_json(caller)}


def build_job_service(
    settings: Settings,
    service: RagService | None,
    *,
    workers: int | None = None,
    claim_ttl_s: float = 30.0,
) -> JobService:
    """The job service the settings describe, its worker threads started when wanted.

    Without ``RAG_QUEUE_URL`` the queue is SQLite under the data directory and this
    process runs ``workers`` worker threads (default ``RAG_QUEUE_WORKERS``), answering
    with ``service``. With it, ``ragchat worker`` processes answer, and ``workers`` here
    is 0 unless asked for.
    """
    from rag.service.components import shared_service

    if workers is None:
        workers = 0 if queue_url(settings) else settings.queue_workers
    queue = JobQueue(
        build_huey(settings),
        build_job_store(settings),
        (lambda: service) if service is not None else shared_service,
        claim_ttl_s=claim_ttl_s,
    )
    if workers:
        queue.start(workers)
    if service is not None:
        service.metrics.gauge(
            "ragchat_job_queue_depth", "Tasks waiting in the job queue.", queue.depth
        )
    return JobService(queue, service, default_concurrency=settings.batch_concurrency)
