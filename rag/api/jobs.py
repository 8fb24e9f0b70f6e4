"""Jobs: batches of questions and ingestions, with progress and results.

``POST /v1/jobs`` takes JSON (``{"kind": "batch", "questions": [...]}``) or a multipart
form (``kind=batch`` with a JSONL/CSV ``file``, or ``kind=ingest`` with ``files``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from rag.access.principal import Principal
from rag.api.deps import TERMINAL_STATES, CallerDep, Jobs, JobsDep, ServiceDep
from rag.api.documents import read_uploads
from rag.api.errors import ApiError, location
from rag.api.schemas import BatchJobRequest
from rag.api.streaming import SSE_HEADERS, sse
from rag.errors import InvalidInputError
from rag.service.export import results_csv, results_jsonl

router = APIRouter(tags=["jobs"])

POLL_S = 0.5

_SUBMIT_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": BatchJobRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["batch", "ingest"]},
                        "file": {"type": "string", "format": "binary"},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "concurrency": {"type": "integer"},
                        "compare": {"type": "string", "description": "models, comma-separated"},
                    },
                }
            },
        },
        "required": True,
    }
}


def _json_fields(error: ValidationError) -> ApiError:
    first = error.errors()[0]
    field = location(first["loc"])
    return ApiError(422, "invalid_input", f"{field}: {first['msg']}", field)


async def _submit_json(request: Request, jobs: Jobs, caller: Principal) -> dict[str, Any]:
    try:
        payload = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"malformed JSON: {exc}", "body") from exc
    if isinstance(payload, dict) and payload.get("kind") == "ingest":
        raise InvalidInputError("kind", "an ingestion job takes files: send multipart/form-data")
    try:
        body = BatchJobRequest.model_validate(payload)
    except ValidationError as exc:
        raise _json_fields(exc) from exc
    job = await run_in_threadpool(
        jobs.submit_batch,
        body.questions,
        caller=caller,
        collections=body.collections,
        concurrency=body.concurrency,
        compare=_named_models(body.compare),
    )
    return job.to_json()


def _named_models(compare: list[str] | None) -> list[str] | None:
    """Models to compare, by name on the configured endpoint only.

    ``NAME@URL`` would make this server send requests wherever a client says; the command
    line (``ragchat batch --compare``), run by whoever runs ragchat, accepts it.
    """
    for n, model in enumerate(compare or []):
        if "@" in model:
            raise InvalidInputError(
                f"compare[{n}]", "the API compares models of the configured endpoint by name"
            )
    return compare


def _form_text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(name, "must be a text field, not a file")
    return value.strip() or None


def _concurrency(form: FormData) -> int | None:
    text = _form_text(form, "concurrency")
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise InvalidInputError("concurrency", "must be a whole number from 1 to 64")
    return int(text)


def _collections(form: FormData) -> list[str] | None:
    text = _form_text(form, "collections")
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def _files(form: FormData, name: str) -> list[UploadFile]:
    return [f for f in form.getlist(name) if isinstance(f, UploadFile)]


async def _submit_form(
    request: Request, jobs: Jobs, limit_mb: int, caller: Principal
) -> dict[str, Any]:
    async with request.form(max_files=1000, max_fields=100) as form:
        kind = _form_text(form, "kind")
        if kind == "ingest":
            files = _files(form, "files") or _files(form, "file")
            if not files:
                raise InvalidInputError("files", "an ingestion job needs at least one file")
            uploads = await read_uploads(files, limit_mb)
            job = await run_in_threadpool(
                jobs.submit_ingest,
                uploads,
                caller=caller,
                collection=_form_text(form, "collection"),
            )
            return job.to_json()
        if kind != "batch":
            raise InvalidInputError("kind", "must be 'batch' or 'ingest'")
        found = _files(form, "file")
        if len(found) != 1:
            raise InvalidInputError("file", "a batch job takes one JSONL or CSV file")
        ((name, data),) = await read_uploads(found, limit_mb)
        compare_text = _form_text(form, "compare")
        compare = (
            [m.strip() for m in compare_text.split(",") if m.strip()] if compare_text else None
        )
        job = await run_in_threadpool(
            jobs.submit_batch_file,
            name,
            data,
            caller=caller,
            collections=_collections(form),
            concurrency=_concurrency(form),
            compare=_named_models(compare),
        )
        return job.to_json()


@router.post(
    "/v1/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Submit a batch of questions or an ingestion",
    openapi_extra=_SUBMIT_DOC,
)
async def submit_job(
    request: Request, jobs: JobsDep, service: ServiceDep, caller: CallerDep
) -> dict[str, Any]:
    """Queue a job; answers it (``id``, ``state`` = queued, progress, ``errors``).

    Bad rows of a batch are listed in the job's ``errors`` (by ``line``) and skipped; the
    rest run. A batch with no usable row is a 422.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return await _submit_json(request, jobs, caller)
    if content_type in {"multipart/form-data", "application/x-www-form-urlencoded"}:
        return await _submit_form(request, jobs, service.settings.upload_max_mb, caller)
    raise ApiError(
        415,
        "unsupported_media_type",
        "send application/json (a batch) or multipart/form-data (a batch file, or files)",
    )


@router.get("/v1/jobs", summary="Jobs, newest first")
def list_jobs(jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    """Your jobs, newest first."""
    return {"jobs": [job.to_json() for job in jobs.list(caller=caller)]}


@router.get("/v1/jobs/{job_id}", summary="A job's state and progress")
def read_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    """State, progress (``done``/``total``), errors, timings and (batches) metrics."""
    return jobs.get(job_id, caller=caller).to_json()


@router.post("/v1/jobs/{job_id}/cancel", summary="Cancel a job")
def cancel_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    """Cancel a queued or running job (questions not yet started never run)."""
    return jobs.cancel(job_id, caller=caller).to_json()


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="A job's progress as Server-Sent Events",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: str, jobs: JobsDep, request: Request, caller: CallerDep
) -> StreamingResponse:
    """``event: job`` with the job's JSON each time it changes; ends at a finished state."""
    # An unknown id (or another user's) is a 404, not a stream.
    first = await run_in_threadpool(lambda: jobs.get(job_id, caller=caller))
    return StreamingResponse(
        _job_events(jobs, job_id, first.to_json(), request, caller),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _job_events(
    jobs: Jobs, job_id: str, current: dict[str, Any], request: Request, caller: Principal
) -> AsyncIterator[str]:
    yield sse(current, "job")
    while str(current["state"]) not in TERMINAL_STATES:
        await asyncio.sleep(POLL_S)
        if await request.is_disconnected():
            return
        latest = (await run_in_threadpool(lambda: jobs.get(job_id, caller=caller))).to_json()
        if latest != current:
            current = latest
            yield sse(current, "job")


@router.get(
    "/v1/jobs/{job_id}/results",
    summary="A job's results (JSONL, or CSV)",
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
)
def job_results(
    job_id: str, jobs: JobsDep, caller: CallerDep, format: Literal["jsonl", "csv"] = "jsonl"
) -> Response:
    """The finished rows in input order: one JSON object a line, or CSV (``?format=csv``).

    A batch row has ``index``, ``question``, ``answer``, ``citations``, ``abstained``,
    ``model``, ``prompt_version``, ``timings`` and ``error``; in CSV, citations and other
    nested values are JSON strings.
    """
    rows = jobs.results(job_id, caller=caller)
    if format == "csv":
        return Response(
            results_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'},
        )
    return Response(
        results_jsonl(rows),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.jsonl"'},
    )
