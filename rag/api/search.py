"""``POST /v1/search``: a retrieval probe over the index."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rag.api.deps import CallerDep, ServiceDep
from rag.api.schemas import SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


@router.post("/v1/search", response_model=SearchResponse, summary="Search the documents")
def search(body: SearchRequest, service: ServiceDep, caller: CallerDep) -> dict[str, Any]:
    """The top ``k`` chunks for the query, best first, whatever their relevance."""
    hits = service.search(
        body.query, caller=caller, collections=body.collections, k=body.k, mode=body.mode
    )
    return {"hits": [hit.to_json() for hit in hits]}
