"""``GET /metrics``: the Prometheus scrape (admins; any caller with RAG_AUTH=none)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from rag.api.deps import CallerDep, ServiceDep
from rag.errors import PermissionDeniedError
from rag.observe.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "The text format."}},
)
def metrics(service: ServiceDep, caller: CallerDep) -> Response:
    """Counters, histograms and gauges of this installation, in the Prometheus text format.

    Scrape it with an admin's API key (``Authorization: Bearer rck_...``).
    """
    if not caller.is_admin:
        raise PermissionDeniedError("read the metrics", "only admins may")
    return Response(service.metrics.scrape(), media_type=CONTENT_TYPE)
