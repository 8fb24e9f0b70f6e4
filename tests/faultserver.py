"""An OpenAI-compatible stub endpoint on 127.0.0.1 whose answers fail on demand.

Each chat completion request takes the next fault from the server's queue (then
``default``): answer normally, hang, trickle headers, answer with an HTTP status (and
``Retry-After``), stream slowly, drop the connection after some tokens, send a malformed
event, truncated or invalid JSON, or an empty completion. ``requests`` counts the chat
completion requests received. ``refused_url()`` gives an endpoint nobody listens on.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = ["Backups ", "run ", "nightly ", "at ", "two ", "[1]", "."]


@dataclass(frozen=True)
class Fault:
    """What the stub does with one request.

    kind: ok, hang, slow_headers, status, slow_stream, drop, malformed_sse,
    truncated_json, invalid_json, json_body, truncated_json_body, empty, error_event, loop
    (the same sentence over and over, ``tokens`` words, ignoring any cap), echo (repeats
    every ``<KIND_n>`` placeholder of the request, each split over two pieces).
    """

    kind: str = "ok"
    status: int = 200
    retry_after: str | None = None
    after: int = 0  # tokens sent before drop / malformed / error_event
    interval: float = 1.0  # seconds between tokens of slow_stream
    tokens: int = 60  # tokens of slow_stream
    usage: bool = True
    model: str | None = "stub-model"
    message: str | None = None  # the error message of a status fault


OK = Fault()


def ok(usage: bool = True, model: str | None = "stub-model") -> Fault:
    return Fault("ok", usage=usage, model=model)


def status(code: int, retry_after: str | None = None, message: str | None = None) -> Fault:
    return Fault("status", status=code, retry_after=retry_after, message=message)


def refused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})
        self._send(200, body.encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        owner = self.server.owner
        fault = owner.take(request)
        with owner._lock:
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        self._answering = True
        try:
            self._answer(fault, request)
        finally:
            self._answered()

    def _answered(self) -> None:
        """This request no longer counts as in flight (once).

        Called before the finishing event is written: a client frees its slot when it
        reads that event, so its next request must not meet this one still counted.
        """
        if getattr(self, "_answering", False):
            self._answering = False
            with self.server.owner._lock:
                self.server.owner.in_flight -= 1

    def _answer(self, fault: Fault, request: dict[str, Any]) -> None:
        stop = self.server.owner.stopping
        if fault.kind == "hang":
            stop.wait()
            return
        if fault.kind == "slow_headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.3):
                self.wfile.write(b"X-Slow: 1\r\n")
                self.wfile.flush()
            return
        if fault.kind == "status":
            text = fault.message or f"stub status {fault.status}"
            body = json.dumps({"error": {"message": text}}).encode()
            extra = {"retry-after": fault.retry_after} if fault.retry_after else {}
            self._send(fault.status, body, extra)
            return
        if fault.kind in ("json_body", "truncated_json_body"):
            body = json.dumps(self._completion(fault, "".join(ANSWER))).encode()
            if fault.kind == "truncated_json_body":
                body = body[: len(body) // 2]
            self._send(200, body)
            return
        self._stream(fault, stop, request)

    def _completion(self, fault: Fault, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": "stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        if fault.model:
            body["model"] = fault.model
        if fault.usage:
            body["usage"] = {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57}
        return body

    def _chunk_event(self, fault: Fault, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": "stub",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if fault.model:
            chunk["model"] = fault.model
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _stream(self, fault: Fault, stop: threading.Event, request: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._chunk(self._chunk_event(fault, {"role": "assistant", "content": ""}))
        if fault.kind == "empty":
            self._finish(fault)
            return
        pieces = ANSWER
        if fault.kind == "slow_stream":
            pieces = [f"word{i} " for i in range(fault.tokens)]
        if fault.kind == "loop":
            words = "The lens is polished with rouge every month. ".split(" ")[:-1]
            pieces = [f"{words[i % len(words)]} " for i in range(fault.tokens)]
        if fault.kind == "echo":
            prompt = json.dumps(request.get("messages", []))
            found = dict.fromkeys(re.findall(r"<[A-Z_]+_\d+>", prompt))
            pieces = ["Found:"]
            for placeholder in found:  # one per clause, as a model lists values
                pieces += [" ", placeholder[:5], placeholder[5:] + ";"]
            pieces.append(" [1].")
        if fault.kind in ("drop", "malformed_sse", "truncated_json", "invalid_json", "error_event"):
            pieces = (ANSWER * 10)[: fault.after]
        for piece in pieces:
            if fault.kind == "slow_stream" and stop.wait(fault.interval):
                return
            if fault.kind == "loop" and stop.is_set():
                return
            self._chunk(self._chunk_event(fault, {"content": piece}))
        if fault.kind == "drop":
            # Close without the terminating chunk: the body is cut mid-transfer.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if fault.kind == "malformed_sse":
            self._chunk(b"this is not an event stream\n\n")
        elif fault.kind == "truncated_json":
            whole = self._chunk_event(fault, {"content": "more"})
            self._chunk(whole[: len(whole) // 2] + b"\n\n")
        elif fault.kind == "invalid_json":
            self._chunk(b"data: <html>Bad Gateway</html>\n\n")
        elif fault.kind == "error_event":
            self._chunk(b'data: {"error": {"message": "stub model crashed"}}\n\n')
        self._finish(fault)

    def _finish(self, fault: Fault) -> None:
        self._answered()
        self._chunk(self._chunk_event(fault, {}, finish="stop"))
        if fault.usage:
            usage = {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57}
            self._chunk(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultServer

    def handle_error(self, request: object, client_address: object) -> None:
        return  # clients hang up on purpose here (timeouts, cancelled streams)


class FaultServer:
    """The stub, serving in a background thread; use it as a context manager."""

    def __init__(self, faults: Sequence[Fault] = (), default: Fault = OK) -> None:
        self.faults = list(faults)
        self.default = default
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0  # most requests being answered at once
        self.bodies: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def take(self, request: dict[str, Any]) -> Fault:
        with self._lock:
            self.requests += 1
            self.bodies.append(request)
            return self.faults.pop(0) if self.faults else self.default

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
