"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from rag.api.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    """The server is up (no I/O: it answers while the model or the index is busy)."""
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness",
    responses={503: {"description": "Not ready; ``checks`` says why."}},
)
def ready(service: ServiceDep) -> Any:
    """Whether the index can be read and the model endpoint answers (503 with reasons)."""
    checks = service.ready()
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks},
        status_code=200 if ok else 503,
    )
