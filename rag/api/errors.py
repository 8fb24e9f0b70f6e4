"""One JSON error shape for every failure: ``{"error": {"type", "message", "id", "field"?}}``.

``id`` is the error's short id (``rag.errors.error_id``); the server's log line about the
error carries the same id, so a user's report leads to it.

``RagError`` subclasses map to 4xx/5xx by what they mean; FastAPI's validation errors are
reshaped to name the field; anything unexpected is logged with its traceback and answered
with a bare 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import (
    AuthenticationError,
    ConfigError,
    ContentRefusedError,
    DocumentNotFoundError,
    EndpointFault,
    IndexLockedError,
    IndexNotFoundError,
    IngestError,
    InvalidInputError,
    JobNotFoundError,
    NotFoundError,
    ParseLimitError,
    PermissionDeniedError,
    PiiBlockedError,
    ProviderError,
    RagError,
    RateLimitedError,
    UnsupportedFileError,
    error_id,
    retry_policy,
)
from rag.memory import ConversationNotFoundError, MessageNotFoundError

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; see the server log"


class ApiError(Exception):
    """An error the API answers itself (no service error behind it)."""

    def __init__(self, status: int, type_: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.type = type_
        self.message = message
        self.field = field
        super().__init__(message)


def error_body(
    type_: str, message: str, field: str | None = None, id_: str | None = None
) -> dict[str, Any]:
    """The JSON error body every route answers with (``id_``: the error's id, if any)."""
    error: dict[str, Any] = {"type": type_, "message": message}
    if id_ is not None:
        error["id"] = id_
    if field is not None:
        error["field"] = field
    return {"error": error}


def error_response(status: int, type_: str, message: str, field: str | None = None) -> JSONResponse:
    """A JSON error response."""
    return JSONResponse(error_body(type_, message, field), status_code=status)


def describe(exc: RagError) -> tuple[int, str, str | None]:
    """The HTTP status, error type and field of a ragchat error."""
    if isinstance(exc, InvalidInputError):
        return 422, "invalid_input", exc.field
    if isinstance(exc, AuthenticationError):
        return 401, "unauthenticated", None
    if isinstance(exc, PermissionDeniedError):
        return 403, "forbidden", None
    if isinstance(exc, NotFoundError):
        return 404, "not_found", None
    if isinstance(exc, RateLimitedError):
        return 429, "rate_limited", None
    if isinstance(exc, DocumentNotFoundError | ConversationNotFoundError | MessageNotFoundError):
        return 404, "not_found", None
    if isinstance(exc, JobNotFoundError):
        return 404, "not_found", None
    # Refusals by a guardrail: the request is understood, and will not be answered.
    if isinstance(exc, ContentRefusedError):
        return 422, "content_refused", exc.stage
    if isinstance(exc, PiiBlockedError):
        return 422, "pii_blocked", None
    if isinstance(exc, ProviderError):
        if exc.fault == EndpointFault.TIMEOUT:
            return 504, "model_timeout", None
        return 502, "model_error", None
    if isinstance(exc, IndexLockedError):
        return 503, "index_busy", None
    if isinstance(exc, IndexNotFoundError):
        return 503, "index_missing", None
    if isinstance(exc, UnsupportedFileError):
        return 415, "unsupported_file", None
    if isinstance(exc, ParseLimitError):
        return 413, "too_large", None
    if isinstance(exc, IngestError):
        return 422, "ingest_error", None
    if isinstance(exc, ConfigError):
        return 500, "config_error", exc.setting
    return 500, "error", None


def rag_error_json(exc: RagError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for a ragchat error (also used inside event streams)."""
    status, type_, field = describe(exc)
    message = exc.reason if isinstance(exc, InvalidInputError) else str(exc)
    return status, error_body(type_, message, field, error_id(exc))


def location(loc: Sequence[int | str]) -> str:
    """``("body", "questions", 3, "question")`` as ``questions[3].question``."""
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header", "form", "file"}:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_error(errors: Sequence[Any], id_: str | None = None) -> JSONResponse:
    """A 422 naming the first faulty field (all of them listed under ``details``)."""
    items: list[dict[str, Any]] = [dict(e) for e in errors]
    first: dict[str, Any] = items[0] if items else {"loc": ("body",), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        message = f"malformed JSON: {first.get('ctx', {}).get('error', 'cannot be parsed')}"
        return JSONResponse(error_body("malformed_json", message, "body", id_), status_code=400)
    field = location(first.get("loc", ()))
    body = error_body("invalid_input", f"{field}: {first.get('msg', 'invalid')}", field, id_)
    body["error"]["details"] = [
        {"field": location(e.get("loc", ())), "message": e.get("msg", "")} for e in items
    ]
    return JSONResponse(body, status_code=422)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    counted = InvalidInputError("body", "the request body is not valid")
    _count(request, counted)
    return validation_error(exc.errors(), error_id(counted))


def error_headers(exc: RagError) -> dict[str, str]:
    """Headers that go with an error: when to retry, how to authenticate (401).

    A 429 says when its limit resets; a 5xx, when its category's retry policy
    (``rag.errors.RETRY_POLICIES``) says a later try may succeed.
    """
    if isinstance(exc, RateLimitedError):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": 'Bearer realm="ragchat"'}
    after = retry_policy(exc).client_retry_after_s
    if after is not None and describe(exc)[0] >= 500:
        return {"Retry-After": str(after)}
    return {}


def _count(request: Request, exc: Exception) -> None:
    """Count an error answered to a client in the service's metrics."""
    get_service = getattr(request.app.state, "get_service", None)
    if get_service is not None:
        try:
            get_service().record_error(exc)
        except Exception as problem:  # counting never turns into a second error response
            logger.warning(
                "could not count a %s in the metrics: %r", type(exc).__name__, problem,
                exc_info=True,
            )  # fmt: skip


async def _on_rag_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagError)
    _count(request, exc)
    status, body = rag_error_json(exc)
    return JSONResponse(body, status_code=status, headers=error_headers(exc))


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    logger.info("error %s (%s): %s", error_id(exc), exc.type, exc.message)
    body = error_body(exc.type, exc.message, exc.field, error_id(exc))
    return JSONResponse(body, status_code=exc.status)


_HTTP_TYPES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    logger.info("error %s (%s): %s", error_id(exc), type_, message)
    return JSONResponse(
        error_body(type_, message, id_=error_id(exc)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "error %s: unexpected, in %s %s",
        error_id(exc),
        request.method,
        request.url.path,
        exc_info=exc,
    )
    _count(request, exc)
    return JSONResponse(
        error_body("internal", INTERNAL_MESSAGE, id_=error_id(exc)), status_code=500
    )


def install_error_handlers(api: FastAPI) -> None:
    """Answer every failure of ``api`` with the JSON error body."""
    api.add_exception_handler(RequestValidationError, _on_validation)
    api.add_exception_handler(RagError, _on_rag_error)
    api.add_exception_handler(ApiError, _on_api_error)
    api.add_exception_handler(StarletteHTTPException, _on_http_error)
    api.add_exception_handler(Exception, _on_unexpected)
