"""OpenTelemetry traces of questions, sent when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

One span per question (``ragchat.question``) with a child span per step: ``condense``
(the follow-up rewritten as a standalone question), ``retrieve`` and ``generate``. They
carry the prompt version, the model, token counts, and whether the answer abstained.

The spans are made when the answer ends, from the times the chain measured, with their
real start and end times. The chain runs inside a generator that the adapters drive (a
Streamlit page, an HTTP response, a batch worker), so a span held open across its yields
would have to move OpenTelemetry's current context in and out of whoever iterates; made
afterwards, nothing leaks between questions and a question costs nothing to trace until
it ends.

The exporter is the OTLP one over HTTP (``opentelemetry-exporter-otlp-proto-http``),
configured by the standard ``OTEL_*`` variables (endpoint, headers, service name:
``ragchat`` unless ``OTEL_SERVICE_NAME`` says otherwise). Without the endpoint no
provider is installed and the tracer is OpenTelemetry's no-op one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_lock = threading.Lock()
_tracer: Tracer | None = None


def tracer() -> Tracer:
    """The process's tracer: exporting over OTLP when an endpoint is set, else a no-op."""
    global _tracer
    with _lock:
        if _tracer is None:
            _tracer = _build()
        return _tracer


def _build() -> Tracer:
    if not (os.environ.get(ENDPOINT_ENV) or os.environ.get(TRACES_ENDPOINT_ENV)):
        return trace.NoOpTracer()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or "ragchat"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("ragchat")


@dataclass(frozen=True)
class StepTimes:
    """When a question's steps ran, in ``time.perf_counter()`` seconds."""

    started: float
    retrieve_started: float | None
    retrieve_ended: float | None
    first_token: float | None
    ended: float


def record_question(
    tracer: Tracer,
    times: StepTimes,
    attributes: Mapping[str, Any],
    *,
    condensed: bool,
    error: BaseException | None = None,
) -> None:
    """Emit the spans of one finished (or failed) question.

    ``attributes`` go on the question span (``ragchat.model``, ``ragchat.prompt_version``,
    token counts ...); the model and prompt version also on ``generate``.
    """
    if isinstance(tracer, trace.NoOpTracer):
        return
    to_ns = _clock()
    root = tracer.start_span("ragchat.question", start_time=to_ns(times.started))
    context = trace.set_span_in_context(root)
    try:
        for key, value in attributes.items():
            if value is not None:
                root.set_attribute(key, value)
        step_start = times.started
        if times.retrieve_started is not None:
            condense = tracer.start_span("condense", context, start_time=to_ns(step_start))
            condense.set_attribute("ragchat.condensed", condensed)
            condense.end(end_time=to_ns(times.retrieve_started))
            step_start = times.retrieve_started
        if times.retrieve_started is not None and times.retrieve_ended is not None:
            retrieve = tracer.start_span("retrieve", context, start_time=to_ns(step_start))
            retrieve.end(end_time=to_ns(times.retrieve_ended))
            step_start = times.retrieve_ended
            generate = tracer.start_span("generate", context, start_time=to_ns(step_start))
            for key in ("ragchat.model", "ragchat.prompt_version"):
                if attributes.get(key) is not None:
                    generate.set_attribute(key, attributes[key])
            if times.first_token is not None:
                generate.add_event("first token", timestamp=to_ns(times.first_token))
            _fail(generate, error)
            generate.end(end_time=to_ns(times.ended))
        _fail(root, error)
    finally:
        root.end(end_time=to_ns(times.ended))


def _fail(span: Span, error: BaseException | None) -> None:
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def _clock() -> Any:
    """perf_counter seconds -> wall-clock nanoseconds (one offset for the question)."""
    offset = time.time_ns() - int(time.perf_counter() * 1e9)
    return lambda t: offset + int(t * 1e9)
