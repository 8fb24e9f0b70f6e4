"""Answers: ``POST /v1/ask`` (JSON or Server-Sent Events) and the OpenAI-compatible route.

``POST /v1/chat/completions`` lets any OpenAI client use ragchat as a model. The last user
message is the question and earlier user and assistant messages are the history; the
answer keeps its ``[n]`` citation markers, and the response (or, streamed, the final
chunk) carries an extra ``citations`` field: the passages those markers point at.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from rag.api.deps import CallerDep, ServiceDep
from rag.api.errors import INTERNAL_MESSAGE, error_body, rag_error_json
from rag.api.schemas import AskRequest, AskResponse, ChatCompletionRequest
from rag.api.streaming import SSE_HEADERS, Failed, Finished, Piece, pump, sse
from rag.chain import Answer, AnswerStream
from rag.context import Turn
from rag.errors import InvalidInputError, RagError, error_id

logger = logging.getLogger(__name__)

router = APIRouter(tags=["answers"])

MODEL_ID = "ragchat"


def answer_json(answer: Answer, conversation_id: str | None = None) -> dict[str, Any]:
    """An answer as the API returns it."""
    return {
        **answer.to_json(),
        "conversation_id": conversation_id,
        "message_id": answer.message_id,
    }


def _failure(error: BaseException) -> tuple[int, dict[str, Any]]:
    """Status and body for an error inside a stream (logged when unexpected)."""
    if isinstance(error, RagError):
        return rag_error_json(error)
    logger.error("error %s: unexpected, while streaming an answer", error_id(error), exc_info=error)
    return 500, error_body("internal", INTERNAL_MESSAGE, id_=error_id(error))


def _finish(stream: AnswerStream) -> Answer:
    """Read a buffered answer to its end."""
    for _ in stream:
        pass
    if stream.result is None:
        raise RagError("the answer ended without a result")
    return stream.result


@router.post(
    "/v1/ask",
    response_model=AskResponse,
    summary="Answer a question with citations",
    responses={200: {"content": {"text/event-stream": {}}}},
)
def ask(body: AskRequest, service: ServiceDep, caller: CallerDep) -> Any:
    """The answer with its verified citations, prompt version, model, timings and tokens.

    With ``"stream": true`` the answer comes as Server-Sent Events: ``event: token`` with
    each piece of text (a JSON string), then one ``event: done`` carrying the whole answer
    as the JSON route returns it, or ``event: error`` with the error body. Errors found
    before the first event (an unknown conversation) are plain JSON errors.
    """
    stream = service.ask(
        body.question,
        caller=caller,
        collections=body.collections,
        conversation_id=body.conversation_id,
        mode=body.mode,
        k=body.k,
        buffered=not body.stream,
    )
    if not body.stream:
        return answer_json(_finish(stream), body.conversation_id)
    return StreamingResponse(
        _ask_events(stream, body.conversation_id),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _ask_events(stream: AnswerStream, conversation_id: str | None) -> AsyncIterator[str]:
    async for event in pump(stream):
        if isinstance(event, Piece):
            yield sse(event.text, "token")
        elif isinstance(event, Finished) and event.answer is not None:
            yield sse(answer_json(event.answer, conversation_id), "done")
        else:
            error = event.error if isinstance(event, Failed) else RagError("no answer")
            yield sse(_failure(error)[1], "error")


# OpenAI-compatible ------------------------------------------------------------------


@router.get("/v1/models", summary="The models this API offers (OpenAI-compatible)")
def models(caller: CallerDep) -> dict[str, Any]:
    """One model, ``ragchat``: answers from the indexed documents."""
    return {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "ragchat"}],
    }


def _question_and_history(body: ChatCompletionRequest) -> tuple[str, list[Turn]]:
    """The last user message, and the user and assistant turns before it."""
    last = len(body.messages) - 1
    if body.messages[last].role != "user":
        raise InvalidInputError(f"messages[{last}]", "the last message must be a user message")
    question = body.messages[last].text().strip()
    if not question:
        raise InvalidInputError(f"messages[{last}].content", "the question is empty")
    history = [
        Turn(m.role, m.text())
        for m in body.messages[:last]
        if m.role in {"user", "assistant"} and m.text().strip()
    ]
    return question, history


def _usage(answer: Answer) -> dict[str, int]:
    prompt = int(answer.tokens.get("prompt", 0))
    completion = int(answer.tokens.get("completion", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _extras(answer: Answer) -> dict[str, Any]:
    """Ragchat's extra fields: the citations, and how the answer was made."""
    return {
        "citations": [c.to_json() for c in answer.citations],
        "ragchat": {
            "model": answer.model,
            "prompt_version": answer.prompt_version,
            "timings": {k: round(v, 1) for k, v in answer.timings.items()},
            "abstained": answer.abstained,
            "cut": answer.cut,
            "cached": answer.served_from == "cache",
        },
    }


def _finish_reason(answer: Answer) -> str:
    return "length" if answer.cut else "stop"


@router.post(
    "/v1/chat/completions",
    summary="OpenAI-compatible chat completion, with citations",
    responses={200: {"content": {"text/event-stream": {}}}},
)
def chat_completions(body: ChatCompletionRequest, service: ServiceDep, caller: CallerDep) -> Any:
    """Answer the last user message from the documents, in OpenAI's format.

    Citations survive: the text keeps its ``[n]`` markers, and the response object (or,
    streamed, the final chunk, the one with ``finish_reason``) has an extra field
    ``citations``: ``[{n, source, title, page, chunk_id, text, support, inferred}]``, plus
    ``ragchat`` (answering model, prompt version, timings, abstained, cut, cached). Sampling
    options (temperature, max_tokens, ...) are accepted and ignored; ``k`` and ``mode``
    choose the retrieval.
    """
    question, history = _question_and_history(body)
    stream = service.ask(
        question,
        caller=caller,
        collections=body.collections,
        history=history,
        mode=body.mode,
        k=body.k,
        buffered=not body.stream,
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        answer = _finish(stream)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.text},
                        "finish_reason": _finish_reason(answer),
                    }
                ],
                "usage": _usage(answer),
                **_extras(answer),
            }
        )
    return StreamingResponse(
        _chunks(stream, completion_id, created, body.model),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _chunks(
    stream: AnswerStream, completion_id: str, created: int, model: str
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    async for event in pump(stream):
        if isinstance(event, Piece):
            yield chunk({"content": event.text})
        elif isinstance(event, Finished) and event.answer is not None:
            answer = event.answer
            yield chunk({}, _finish_reason(answer), usage=_usage(answer), **_extras(answer))
            yield "data: [DONE]\n\n"
        else:
            error = event.error if isinstance(event, Failed) else RagError("no answer")
            status, body = _failure(error)
            body["error"]["code"] = status
            yield sse(body)
