"""OpenTelemetry traces of questions: spans, their nesting and attributes, and export."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, StatusCode

from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.context import Turn
from rag.errors import ProviderError
from rag.observe import tracing
from rag.prompts import load_prompts
from tests.api_fakes import Controls, ScriptedChat
from tests.fakes import RecordingRetriever, doc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def traced() -> tuple[ChatEngine, InMemorySpanExporter, Controls]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    controls = Controls()
    retriever = RecordingRetriever(
        by_keyword={"pumps": [doc("Pumps are serviced every spring.", page=2, n=1)]}
    )
    prompts = load_prompts()
    chain = build_chain(ScriptedChat(controls=controls), retriever, prompts, ChainConfig())
    engine = ChatEngine(chain, prompts, model_name="fake-model", tracer=provider.get_tracer("test"))
    return engine, exporter, controls


def test_a_question_is_one_span_with_its_steps(traced) -> None:
    engine, exporter, _ = traced
    history = [Turn("user", "Tell me about pumps"), Turn("assistant", "Pumps [1].")]
    stream = engine.ask("when are pumps serviced?", history, within=None)
    "".join(stream)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"ragchat.question", "condense", "retrieve", "generate"}
    root = spans["ragchat.question"]
    assert all(spans[n].parent.span_id == root.context.span_id for n in spans if n != root.name)
    assert root.attributes["ragchat.model"] == "fake-model"
    assert root.attributes["ragchat.prompt_version"].startswith("answer@")
    assert root.attributes["ragchat.abstained"] is False
    assert root.attributes["ragchat.tokens.completion"] > 0
    assert spans["generate"].attributes["ragchat.model"] == "fake-model"
    assert spans["condense"].attributes["ragchat.condensed"] is True
    # The steps follow each other inside the question, as they ran.
    condense, retrieve, generate = spans["condense"], spans["retrieve"], spans["generate"]
    assert root.start_time <= condense.start_time <= condense.end_time
    assert condense.end_time <= retrieve.start_time <= retrieve.end_time
    assert retrieve.end_time <= generate.start_time <= generate.end_time <= root.end_time
    assert [e.name for e in generate.events] == ["first token"]
    assert stream.result is not None and stream.result.model == "fake-model"


def test_a_failed_question_is_a_span_with_the_error(traced) -> None:
    engine, exporter, controls = traced
    controls.fail_after_words = 0  # the model fails before its first word
    with pytest.raises(ProviderError):
        "".join(engine.ask("when are pumps serviced?", within=None))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["ragchat.question"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "ProviderError"
    assert spans["generate"].status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in root.events)


def test_no_endpoint_no_tracing(monkeypatch) -> None:
    monkeypatch.delenv(tracing.ENDPOINT_ENV, raising=False)
    monkeypatch.delenv(tracing.TRACES_ENDPOINT_ENV, raising=False)
    monkeypatch.setattr(tracing, "_tracer", None)
    assert isinstance(tracing.tracer(), NoOpTracer)


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


_QUESTION = """
import time
from rag.observe import tracing
t = time.perf_counter()
times = tracing.StepTimes(t, t + 0.01, t + 0.02, t + 0.03, t + 0.05)
tracing.record_question(tracing.tracer(), times, {"ragchat.model": "m1"}, condensed=False)
"""


def test_spans_go_to_the_otlp_endpoint_when_one_is_set(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    _Collector.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            tracing.ENDPOINT_ENV: f"http://127.0.0.1:{server.server_address[1]}",
        }
        subprocess.run([sys.executable, "-c", _QUESTION], env=env, check=True, timeout=60)
    finally:
        server.shutdown()
    assert [path for path, _ in _Collector.bodies] == ["/v1/traces"]
    request = ExportTraceServiceRequest.FromString(_Collector.bodies[0][1])
    (resource,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "ragchat"
    names = [s.name for scope in resource.scope_spans for s in scope.spans]
    assert sorted(names) == ["condense", "generate", "ragchat.question", "retrieve"]
