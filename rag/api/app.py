"""``create_api``: the FastAPI application, meant to be mounted under ``/api``.

Routes are relative (``/v1/ask``, ``/health``, ``/docs``); mounted with
``starlette.routing.Mount("/api", app=api)`` they answer at ``/api/v1/ask`` and the
OpenAPI docs at ``/api/docs`` (FastAPI reads the mount point from the ASGI ``root_path``).
``serve_api`` does that mount alone, for a server without the web pages and for tests.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import Mount
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from rag.api import ask, conversations, documents, health, jobs, metrics, search
from rag.api.deps import Jobs
from rag.api.errors import error_response, install_error_handlers
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.service.core import RagService

logger = logging.getLogger(__name__)

JSON_LIMIT_BYTES = 1024 * 1024
MULTIPART_SLACK_BYTES = 1024 * 1024  # form boundaries and fields around the files
MOUNT_PATH = "/api"

DESCRIPTION = """
Ask the indexed documents, with verified citations; search, list and delete documents;
conversations; batch question runs and ingestions as jobs. `POST /v1/chat/completions` is
OpenAI-compatible (point any OpenAI client at `.../api/v1`), and keeps the citations.

Errors are `{"error": {"type", "message", "field"?}}`. With `RAG_AUTH` other than `none`,
every route under `/v1` needs an API key (`Authorization: Bearer rck_...`, from
`ragchat keys create`) or a signed-in session, and answers 401 without one; 429 with
`Retry-After` when a rate limit is reached. With `RAG_AUTH=none` (one local user) the API
answers loopback clients only, unless `RAG_ALLOW_REMOTE=true`.
"""


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.removeprefix("::ffff:"))
    except ValueError:
        return host == "localhost"
    return address.is_loopback


class LoopbackOnly:
    """Answers 403 to clients that are not on this machine, unless ``allow_remote()``."""

    def __init__(self, app: ASGIApp, allow_remote: Callable[[], bool]) -> None:
        self.app = app
        self.allow_remote = allow_remote

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the client address, then pass the request on."""
        if scope["type"] in {"http", "websocket"}:
            client = scope.get("client")
            # No client address: a Unix socket, which only this machine can reach.
            if client and not _is_loopback(client[0]) and not self.allow_remote():
                response = error_response(
                    403,
                    "forbidden",
                    "with RAG_AUTH=none the API answers loopback clients only (set RAG_AUTH "
                    "to password, oidc or header to serve other machines, or "
                    "RAG_ALLOW_REMOTE=true to let anyone who reaches the port in as the admin)",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """A 413 with a JSON body for bodies over the limit: JSON 1 MB, uploads the setting.

    The declared ``Content-Length`` is checked first; a body sent without one (chunked)
    is counted as it is read.
    """

    def __init__(self, app: ASGIApp, upload_limit: Callable[[], int]) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse or watch the body, then pass the request on."""
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        if multipart:
            limit = self.upload_limit() * 1024 * 1024 + MULTIPART_SLACK_BYTES
            what = f"uploads are limited to {self.upload_limit()} MB"
        else:
            limit, what = JSON_LIMIT_BYTES, "request bodies are limited to 1 MB"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await error_response(413, "too_large", what, "body")(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, what)
            return message

        await self.app(scope, counted, send)


def create_api(
    get_service: Callable[[], RagService],
    get_jobs: Callable[[], Jobs | None] = lambda: None,
) -> FastAPI:
    """The HTTP API over the service (and the job service, None while jobs are off).

    Both are callables so the application can be built before the service exists; they
    are called per request (return a shared object).
    """
    api = FastAPI(
        title="ragchat API",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.state.get_service = get_service
    api.state.get_jobs = get_jobs
    install_error_handlers(api)
    for module in (ask, search, documents, conversations, jobs, health, metrics):
        api.include_router(module.router)

    def upload_limit() -> int:
        return get_service().settings.upload_max_mb

    # Added last runs first: the address check comes before anything reads the body.
    api.add_middleware(BodyLimit, upload_limit=upload_limit)
    api.add_middleware(LoopbackOnly, allow_remote=remote_allowed(get_service))
    return api


def remote_allowed(get_service: Callable[[], Any]) -> Callable[[], bool]:
    """Whether other machines are served: with sign-in on, or RAG_ALLOW_REMOTE=true."""

    def allowed() -> bool:
        try:
            settings = get_service().settings
        except RagError:  # no service (a bad setting): refuse, as with RAG_AUTH=none
            return False
        return settings.auth != "none" or settings.allow_remote

    return allowed


def mount(api: FastAPI) -> Mount:
    """The route that serves ``api`` under ``/api`` (for ``st.App`` or ``serve_api``)."""
    return Mount(MOUNT_PATH, app=api)


def serve_api(api: FastAPI, lifespan: Lifespan[Starlette] | None = None) -> Starlette:
    """An ASGI app serving only the API, under ``/api`` as in the web app."""
    return Starlette(routes=[mount(api)], lifespan=lifespan)
