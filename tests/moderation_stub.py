"""An OpenAI-compatible moderation endpoint on 127.0.0.1 for tests.

``POST /v1/moderations`` flags an input that contains one of ``flag_words`` (category
``harassment``, plus ``violence`` for the word "kill"). ``mode`` makes it fail instead:
``status`` (HTTP ``status``), ``garbage`` (a body that is not JSON), ``shape`` (JSON that is
no moderation result), ``hang`` (no answer until the server stops). ``requests`` records
each request's JSON body and Authorization header.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    body: dict[str, Any]
    authorization: str | None
    path: str


@dataclass
class ModerationStub:
    flag_words: tuple[str, ...] = ("forbidden",)
    mode: str = "ok"
    status: int = 500
    requests: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def verdict(self, text: str) -> dict[str, Any]:
        words = text.lower().split()
        flagged = any(w in words for w in self.flag_words)
        return {
            "id": "modr-stub",
            "model": "stub-moderation",
            "results": [
                {
                    "flagged": flagged,
                    "categories": {
                        "harassment": flagged,
                        "violence": flagged and "kill" in words,
                        "self-harm": False,
                    },
                    "category_scores": {"harassment": 0.9 if flagged else 0.01},
                }
            ],
        }

    def __enter__(self) -> ModerationStub:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                owner.requests.append(Seen(body, self.headers.get("authorization"), self.path))
                if not self.path.endswith("/moderations"):
                    self._send(404, b'{"error": {"message": "no such route"}}')
                elif owner.mode == "status":
                    self._send(owner.status, b'{"error": {"message": "stub failure"}}')
                elif owner.mode == "garbage":
                    self._send(200, b"<html>not json</html>")
                elif owner.mode == "shape":
                    self._send(200, json.dumps({"results": "nope"}).encode())
                elif owner.mode == "hang":
                    owner._stop.wait()
                else:
                    self._send(200, json.dumps(owner.verdict(str(body.get("input")))).encode())

            def _send(self, code: int, payload: bytes) -> None:
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
