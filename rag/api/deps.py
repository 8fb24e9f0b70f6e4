"""What routes get from the application: the service and the job service."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from rag.access.principal import Principal
from rag.access.sessions import COOKIE_NAME
from rag.api.errors import ApiError
from rag.service.core import RagService


class JobInfoLike(Protocol):
    """What the API reads of a job (``rag.service.jobs.JobInfo``)."""

    id: str

    @property
    def state(self) -> Any:
        """queued, running, done, failed or cancelled (a ``StrEnum``)."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The job as JSON."""
        ...


class Jobs(Protocol):
    """The job service the API calls (``rag.service.jobs.JobService``)."""

    def submit_batch(
        self,
        questions: list[dict[str, Any]],
        *,
        caller: Principal,
        collections: list[str] | None = None,
        concurrency: int | None = None,
        compare: list[str] | None = None,
    ) -> JobInfoLike:
        """Queue a batch of questions."""
        ...

    def submit_batch_file(
        self,
        name: str,
        data: bytes,
        *,
        caller: Principal,
        collections: list[str] | None = None,
        concurrency: int | None = None,
        compare: list[str] | None = None,
    ) -> JobInfoLike:
        """Queue the questions of a JSONL or CSV file."""
        ...

    def submit_ingest(
        self, files: list[tuple[str, bytes]], *, caller: Principal, collection: str | None = None
    ) -> JobInfoLike:
        """Queue an ingestion of uploaded files."""
        ...

    def get(self, job_id: str, *, caller: Principal) -> JobInfoLike:
        """One of the caller's jobs (raises ``JobNotFoundError``)."""
        ...

    def list(self, *, caller: Principal) -> builtins.list[JobInfoLike]:
        """The caller's jobs, newest first."""
        ...

    def cancel(self, job_id: str, *, caller: Principal) -> JobInfoLike:
        """Cancel a queued or running job."""
        ...

    def results(self, job_id: str, *, caller: Principal) -> builtins.list[dict[str, Any]]:
        """The finished rows, in input order."""
        ...


ServiceFactory = Callable[[], RagService]
JobsFactory = Callable[[], Jobs | None]

TERMINAL_STATES = frozenset({"done", "failed", "cancelled"})


def get_service(request: Request) -> RagService:
    """The service of this application."""
    factory: ServiceFactory = request.app.state.get_service
    return factory()


def get_jobs(request: Request) -> Jobs:
    """The job service, or a 503 saying jobs are not running in this server."""
    factory: JobsFactory = request.app.state.get_jobs
    jobs = factory()
    if jobs is None:
        raise ApiError(
            503,
            "unavailable",
            "jobs are not available in this server (the job workers are not running)",
        )
    return jobs


ServiceDep = Annotated[RagService, Depends(get_service)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]


def get_caller(request: Request, service: ServiceDep) -> Principal:
    """Who is calling, counted against the caller's rate limits.

    The API key (``Authorization: Bearer``), the session cookie, or the trusted proxy's
    header; with RAG_AUTH=none, the local user.

    Raises:
        AuthenticationError: no valid key or session (401).
        RateLimitedError: over a limit (429, with Retry-After).
    """
    access = service.access
    address = request.client.host if request.client else ""
    if access.mode == "none":
        caller = access.local()
    else:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            caller = access.api_key(token.strip())
        else:
            caller = access.from_proxy(request.headers, address) or access.session(
                request.cookies.get(COOKIE_NAME)
            )
    access.count_request(caller)
    return caller


CallerDep = Annotated[Principal, Depends(get_caller)]
