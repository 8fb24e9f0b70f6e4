"""Server-Sent Events, and answer streams driven from one worker thread.

An ``AnswerStream`` is a generator over langchain runnables that keep context variables
for the whole answer, so it must run start to end in one thread: ``pump`` runs it in its own
thread and hands the pieces to the event loop. When the client goes away, the thread stops
the answer at the next piece (a conversation then stores it as stopped).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.chain import Answer, AnswerStream

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: Any, event: str | None = None) -> str:
    """One event: ``data`` as JSON (a string stays a JSON string, so newlines are safe)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


@dataclass(frozen=True)
class Piece:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The answer ended; ``answer`` is None only if the chain produced none."""

    answer: Answer | None


@dataclass(frozen=True)
class Failed:
    """The answer failed with ``error`` (a ``RagError`` or an unexpected exception)."""

    error: BaseException


Event = Piece | Finished | Failed


async def pump(stream: AnswerStream) -> AsyncIterator[Event]:
    """The stream's pieces, then ``Finished`` or ``Failed``; the stream runs in one thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    stop = threading.Event()

    def put(item: Event) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            for piece in stream:
                if stop.is_set():
                    stream.close()
                    return
                put(Piece(piece))
        except Exception as exc:  # noqa: BLE001 - handed to the request, which reports it
            put(Failed(exc))
            return
        put(Finished(stream.result))

    thread = threading.Thread(target=work, name="api-answer", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            yield item
            if not isinstance(item, Piece):
                return
    finally:
        stop.set()
