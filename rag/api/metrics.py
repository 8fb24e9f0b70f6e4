"""``GET /metrics`` (the Prometheus scrape) and ``GET /v1/usage`` (the usage report).

Both for admins (any caller with RAG_AUTH=none).
"""

from __future__ import annotations

from typing import Any

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


@router.get("/v1/usage", tags=["metrics"], summary="Usage report (admins)")
def usage(
    service: ServiceDep, caller: CallerDep, days: int = 30, by_model: bool = False, top: int = 20
) -> dict[str, Any]:
    """The Metrics page's report over the last ``days`` UTC days, today included.

    ``total``, ``days`` (every day, oldest first) and ``models``: questions, p50/p95
    answer latency and time to first token (ms), prompt and completion tokens, estimated
    cost (dollars, null without RAG_MODEL_PRICES), cache hits and rate, feedback up/down
    and ratio, abstentions; ``days_by_model`` with ``by_model=true``;
    ``abstained_questions``: the ``top`` most frequent questions the documents did not
    answer (the gaps in the documents).
    """
    return service.usage_report(caller, days, by_model=by_model, top=top).to_json()
