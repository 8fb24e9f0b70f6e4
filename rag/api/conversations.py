"""Conversations: create, list, read (with messages) and delete."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Response, status

from rag.api.deps import CallerDep, ServiceDep
from rag.api.schemas import (
    ConversationDetail,
    ConversationModel,
    ConversationsResponse,
    CreateConversationRequest,
)
from rag.memory import Message

router = APIRouter(tags=["conversations"])


def _message_json(message: Message) -> dict[str, Any]:
    data = asdict(message)
    data.pop("feedback", None)
    return data


@router.get(
    "/v1/conversations", response_model=ConversationsResponse, summary="Stored conversations"
)
def list_conversations(service: ServiceDep, caller: CallerDep) -> dict[str, Any]:
    """Stored conversations, newest first."""
    return {"conversations": [asdict(c) for c in service.conversations(caller=caller)]}


@router.post(
    "/v1/conversations",
    response_model=ConversationModel,
    status_code=status.HTTP_201_CREATED,
    summary="Start a conversation",
)
def create_conversation(
    service: ServiceDep, caller: CallerDep, body: CreateConversationRequest | None = None
) -> Any:
    """A new, empty conversation: pass its ``id`` as ``conversation_id`` to ``/v1/ask``."""
    return asdict(service.create_conversation(body.title if body else "", caller=caller))


@router.get(
    "/v1/conversations/{conversation_id}",
    response_model=ConversationDetail,
    summary="A conversation and its messages",
)
def read_conversation(
    conversation_id: str, service: ServiceDep, caller: CallerDep
) -> dict[str, Any]:
    """The conversation's header and its questions and answers, oldest first."""
    conversation = service.conversation(conversation_id, caller=caller)
    messages = service.messages(conversation_id, caller=caller)
    return {**asdict(conversation), "messages": [_message_json(m) for m in messages]}


@router.delete(
    "/v1/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a conversation",
)
def delete_conversation(conversation_id: str, service: ServiceDep, caller: CallerDep) -> Response:
    """Delete a conversation and its messages."""
    service.delete_conversation(conversation_id, caller=caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
