"""Documents: list, delete, and upload (an ingestion job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile, status
from starlette.datastructures import UploadFile as StarletteUpload

from rag.api.deps import CallerDep, JobsDep, ServiceDep
from rag.api.errors import ApiError
from rag.api.schemas import DocumentModel, DocumentsResponse
from rag.store.faiss import DocumentInfo

router = APIRouter(tags=["documents"])


def document_json(doc: DocumentInfo) -> dict[str, Any]:
    """A document as the API returns it."""
    return {**doc.to_json(), "title": doc.name, "kind": doc.kind}


@router.get("/v1/documents", response_model=DocumentsResponse, summary="Indexed documents")
def list_documents(
    service: ServiceDep, caller: CallerDep, collection: str | None = None
) -> dict[str, Any]:
    """The documents you may read (of one ``collection`` when given).

    ``complete`` is false while an ingestion of a document is unfinished.
    """
    collections = None if collection is None else [collection]
    docs = service.documents(caller=caller, collections=collections)
    return {"documents": [document_json(d) for d in docs]}


@router.delete("/v1/documents/{doc_id}", response_model=DocumentModel, summary="Delete a document")
def delete_document(doc_id: str, service: ServiceDep, caller: CallerDep) -> dict[str, Any]:
    """Delete a document (by id, or a unique id prefix of 6+ characters) and its chunks."""
    return document_json(service.delete_document(doc_id, caller=caller))


async def read_uploads(files: Sequence[StarletteUpload], limit_mb: int) -> list[tuple[str, bytes]]:
    """``(browser name, content)`` pairs; a file over ``limit_mb`` is a 413 naming it."""
    limit = limit_mb * 1024 * 1024
    out: list[tuple[str, bytes]] = []
    for i, upload in enumerate(files):
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ApiError(
                413,
                "too_large",
                f"{upload.filename or 'file'} is larger than the {limit_mb} MB upload limit",
                f"files[{i}]",
            )
        out.append((upload.filename or f"upload-{i}", data))
    return out


@router.post(
    "/v1/documents",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload documents (an ingestion job)",
)
async def upload_documents(
    files: Annotated[list[UploadFile], File(description="The files to index.")],
    service: ServiceDep,
    jobs: JobsDep,
    caller: CallerDep,
    collection: str | None = None,
) -> dict[str, Any]:
    """Queue the uploaded files for indexing; answers the job (``id``, ``state``, ...).

    ``collection`` (a query parameter): where they go, a collection you may change; by
    default your only one, or the default collection. Follow the job at
    ``GET /v1/jobs/{id}`` or ``/v1/jobs/{id}/events``; its results list each file: added,
    updated, unchanged or failed with the reason.
    """
    service.access.writable(caller, collection)  # 404/403 before reading the bodies
    uploads = await read_uploads(files, service.settings.upload_max_mb)
    return jobs.submit_ingest(uploads, caller=caller, collection=collection).to_json()
