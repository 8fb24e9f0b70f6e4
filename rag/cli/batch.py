"""``ragchat batch`` (a file of questions as one job) and ``ragchat worker`` (Redis mode)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rag.cli.caller import cli_caller
from rag.errors import RagError
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.access.principal import Principal
    from rag.service.jobs import JobInfo, JobService

logger = logging.getLogger(__name__)

BATCH_HELP = """\
Answer every question of a file as one job, in parallel, and write one JSON line per
question in input order: question, answer, citations, abstained, model, prompt_version,
timings, error.

The file is JSON Lines ({"question": ..., "sources"?: [...], "pages"?: [...],
"reference_answer"?: ...}) or CSV (a "question" column; optional "sources" and "pages"
separated by ';', "reference_answer"). Bad lines are reported and skipped. Rows with
"sources" make the job report the `ragchat eval` metrics (hit rate, recall, MRR, nDCG,
page accuracy, citation validity, abstention, latency).

Without RAG_QUEUE_URL the job runs here, on the SQLite queue under RAG_DATA_DIR; with it,
`ragchat worker` processes answer and this command follows the job. An interrupted run
keeps its answers: --resume JOB_ID finishes it without asking those questions again (and
writes the results of a finished job)."""


def add_commands(
    sub: Any,
    settings_of: Callable[[argparse.Namespace], Settings],
    add_index_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``batch`` and ``worker``."""
    p = sub.add_parser(
        "batch",
        help="answer a file of questions as one job (JSONL/CSV in, JSONL out)",
        description=BATCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("questions", type=Path, nargs="?", metavar="QUESTIONS.(jsonl|csv)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the answers here")
    p.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="answer from this collection only (repeatable; default: all you may read)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="questions answered at once (overrides RAG_BATCH_CONCURRENCY; default 4)",
    )
    p.add_argument("--resume", metavar="JOB_ID", help="finish (or output) an earlier job")
    p.add_argument(
        "--compare",
        metavar="A,B",
        help="ask every question to each model (a name on the configured endpoint, or "
        "NAME@URL) and put the answers side by side",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary of the job")
    p.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint")
    p.add_argument("--model", metavar="NAME", help="model name (overrides RAG_LLM_MODEL)")
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_batch(a, settings_of(a)))

    p = sub.add_parser(
        "worker",
        help="answer queued jobs from RAG_QUEUE_URL (Redis) until stopped",
        description="Run job workers for the Redis queue named by RAG_QUEUE_URL. SIGTERM "
        "stops after the questions being answered; Ctrl-C stops at once (their questions "
        "are taken over by another worker).",
    )
    p.add_argument(
        "--workers", type=int, metavar="N", help="worker threads (default RAG_QUEUE_WORKERS, 4)"
    )
    p.add_argument(
        "--claim-ttl",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds after which a dead worker's questions are taken over (default 30)",
    )
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_worker(a, settings_of(a)))


def _wait(jobs: JobService, job_id: str, show: bool, caller: Principal) -> JobInfo:
    from tqdm import tqdm

    from rag.service.jobs import JobState

    final = {JobState.DONE, JobState.FAILED, JobState.CANCELLED}
    info = jobs.get(job_id, caller=caller)
    unit = "question" if info.kind == "batch" else "file"
    with tqdm(total=info.total, unit=unit, disable=not show, file=sys.stderr) as bar:
        while True:
            bar.n = info.done
            bar.refresh()
            if info.state in final:
                return info
            time.sleep(0.1)
            info = jobs.get(job_id, caller=caller)


def _write_rows(rows: list[dict[str, Any]], out: IO[str]) -> None:
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def cmd_batch(args: argparse.Namespace, settings: Settings) -> int:
    """Submit (or resume) a batch job, follow it, write its rows in input order."""
    from rag.jobs.answering import parse_models
    from rag.jobs.queue import queue_url
    from rag.service.components import open_service
    from rag.service.jobs import JobState, build_job_service

    if args.questions is None and args.resume is None:
        raise RagError("give a QUESTIONS file, or --resume JOB_ID")
    compare = parse_models(args.compare) if args.compare else None
    embedded = queue_url(settings) is None
    with open_service(settings, one_shot=True) as service:
        if embedded:
            service.store.snapshot()  # no index: fail here, before a model starts
        jobs = build_job_service(settings, service, workers=0)
        caller = cli_caller(service, args)
        try:
            if args.resume:
                info = jobs.get(args.resume, caller=caller)
            else:
                try:
                    data = args.questions.read_bytes()
                except OSError as exc:
                    raise RagError(f"cannot read {args.questions}: {exc.strerror}") from exc
                info = jobs.submit_batch_file(
                    args.questions.name,
                    data,
                    caller=caller,
                    collections=getattr(args, "collection", None) or None,
                    concurrency=args.concurrency,
                    compare=compare,
                )
                for error in info.errors:
                    print(
                        f"skipped line {error['line']}: {error['field']} {error['error']}",
                        file=sys.stderr,
                    )
            if embedded and info.state in (JobState.QUEUED, JobState.RUNNING):
                service.warm()
                jobs.queue.start(int(info.options.get("concurrency", 1)), recover=False)
            if args.resume:
                jobs.resume(info.id, caller=caller)
            print(f"job {info.id}: {info.total} {info.kind} items", file=sys.stderr)
            try:
                info = _wait(jobs, info.id, sys.stderr.isatty() and not args.json, caller)
            except KeyboardInterrupt:
                print(
                    f"interrupted; answers so far are kept: ragchat batch --resume {info.id}",
                    file=sys.stderr,
                )
                jobs.queue.stop(graceful=False)
                return 130
            rows = jobs.results(info.id, caller=caller)
        finally:
            jobs.close()
    if args.output:
        with args.output.open("w", encoding="utf-8") as out:
            _write_rows(rows, out)
    elif not args.json:
        _write_rows(rows, sys.stdout)
    if args.json:
        summary = {**info.to_json(), "output": str(args.output) if args.output else None}
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        failed = sum(1 for r in rows if r.get("error"))
        print(
            f"job {info.id} {info.state}: {info.done}/{info.total} answered"
            + (f", {failed} failed" if failed else "")
            + (f", {len(info.errors) - failed} input lines skipped" if info.errors else ""),
            file=sys.stderr,
        )
        if info.metrics:
            cells = ", ".join(f"{k} {v}" for k, v in info.metrics.items())
            print(f"metrics: {cells}", file=sys.stderr)
    return 0 if info.state is JobState.DONE and not info.errors else 1


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Answer tasks from the Redis queue until SIGTERM (graceful) or Ctrl-C."""
    from rag.jobs.queue import JobQueue, build_huey, build_job_store, queue_url
    from rag.service.components import open_service

    url = queue_url(settings)
    if url is None:
        raise RagError(
            "RAG_QUEUE_URL is not set: without Redis, ragchat batch and the web app run "
            "their own workers"
        )
    workers = args.workers or settings.queue_workers
    if workers < 1:
        raise RagError("--workers must be at least 1")
    with open_service(settings) as service:
        queue = JobQueue(
            build_huey(settings),
            build_job_store(settings),
            lambda: service,
            claim_ttl_s=args.claim_ttl,
        )
        recovered = queue.recover()
        queue.start_keeper()
        print(
            f"ragchat worker: {workers} threads on {url.rsplit('@', 1)[-1]} "
            f"({recovered} tasks re-enqueued)",
            file=sys.stderr,
            flush=True,
        )
        try:
            queue.consumer(workers, hosted=False).run()
        finally:
            queue.stop()
            queue.store.close()
    return 0
