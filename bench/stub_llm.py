"""A local OpenAI-compatible chat endpoint for benchmarks: answers at once with what an
answer function makes of the request's messages (by default a fixed cited sentence).

``bench/obedient_llm.py`` is the same server with an answer function that obeys the
instructions in its prompt.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "The answer is in the manual [1]."
USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}

# The request's message texts -> the answer.
Answerer = Callable[[list[str]], str]


def instant(_: list[str]) -> str:
    """The default answer: one cited sentence, whatever was asked."""
    return ANSWER


def message_texts(request: dict[str, Any]) -> list[str]:
    """The text of each message of a chat completion request (content parts joined)."""
    out = []
    for message in request.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if isinstance(content, str):
            out.append(content)
    return out


class StubServer(ThreadingHTTPServer):
    """The HTTP server: the answer function, the model name, and the prompts received."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        answer: Answerer = instant,
        model: str = "stub",
    ) -> None:
        super().__init__(address, handler)
        self.answer = answer
        self.model = model
        self.lock = threading.Lock()
        self.prompts: list[list[str]] = []

    def handle_error(self, request: object, client_address: object) -> None:
        return  # clients hang up after [DONE]; that is not an error here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Small chunked writes otherwise wait ~40 ms for the client's delayed ACK, which would
    # be counted as ragchat's own time.
    disable_nagle_algorithm = True
    server: StubServer

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        model = self.server.model
        body = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]})
        self._send(200, body.encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        texts = message_texts(request)
        with self.server.lock:
            self.server.prompts.append(texts)
        answer = self.server.answer(texts)
        model = self.server.model
        base = {"id": model, "created": int(time.time()), "model": model}
        if not request.get("stream"):
            body = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": USAGE,
            }
            self._send(200, json.dumps(body).encode())
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        deltas: list[dict[str, str]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in re.findall(r"\S+\s*|\s+", answer)]
        for delta in deltas:
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        end = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": USAGE,
        }
        self._chunk(f"data: {json.dumps(end)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StubLLM:
    """Serves the stub on 127.0.0.1 in a background thread; ``prompts`` it got."""

    def __init__(self, answer: Answerer = instant, *, port: int = 0, model: str = "stub") -> None:
        self.server = StubServer(("127.0.0.1", port), _Handler, answer, model)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def prompts(self) -> list[list[str]]:
        """The messages of every chat completion request received so far."""
        with self.server.lock:
            return list(self.server.prompts)

    def __enter__(self) -> StubLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
