"""The endpoint-fault table: what a question does when its model endpoint misbehaves.

Every fault of the stub server (tests/faultserver.py) is asked once through the real chat
engine (resilient model, chain, deadline; a canned retriever instead of an index), without
and with a fallback endpoint, streamed (as the web chat and `ragchat ask` show it) and,
where it differs, buffered (`ragchat ask --json`). Printed per row: requests each endpoint
received, seconds from the question to its outcome, and the outcome. Every row should end
within RAG_LLM_TIMEOUT_S + 1 s; the last line says whether they all did.

    RAG_LLM_TIMEOUT_S=5 python bench/endpoint_faults.py [--fallback-only | --no-fallback-only]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.errors import ProviderError
from rag.llm.client import endpoints
from rag.service.components import build_engine_over
from rag.settings import load_settings
from tests.fakes import RecordingRetriever, doc
from tests.faultserver import Fault, FaultServer, ok, refused_url, status


@dataclass(frozen=True)
class Row:
    name: str
    fault: Fault | None  # None: nothing listens (connection refused)
    buffered: bool = False
    then: tuple[Fault, ...] = ()  # faults for the first requests, before `fault` repeats


ROWS = [
    Row("connection refused", None),
    Row("hang (accepts, never answers)", Fault("hang")),
    Row("slow headers (one every 0.3 s)", Fault("slow_headers")),
    Row("HTTP 500", status(500)),
    Row("HTTP 503, Retry-After 2, then ok", ok(), then=(status(503, "2"),)),
    Row("HTTP 429, Retry-After 20", status(429, "20")),
    Row("HTTP 429, Retry-After 120", status(429, "120")),
    Row("HTTP 401", status(401)),
    Row("HTTP 404 (unknown model)", status(404)),
    Row("drop before the first token", Fault("drop", after=0)),
    Row("drop after 3 tokens, streamed", Fault("drop", after=3)),
    Row("drop after 3 tokens, buffered", Fault("drop", after=3), buffered=True),
    Row("1 token per second, streamed", Fault("slow_stream")),
    Row("1 token per second, buffered", Fault("slow_stream"), buffered=True),
    Row("malformed SSE line", Fault("malformed_sse")),
    Row("truncated JSON event", Fault("truncated_json")),
    Row("invalid JSON event", Fault("invalid_json")),
    Row("truncated JSON body", Fault("truncated_json_body")),
    Row("error event in the stream", Fault("error_event")),
    Row("empty completion", Fault("empty")),
    Row("ok, no usage, no model name", ok(usage=False, model=None)),
]


class _Requests(logging.Handler):
    """Counts the requests rag.llm.client sends, per endpoint (refused ones reach no server)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sent: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "model endpoint %s: request sent":
            self.sent[str(record.args[0]) if record.args else ""] += 1  # type: ignore[index]


def run(row: Row, with_fallback: bool, counter: _Requests) -> tuple[str, str, float, str]:
    counter.sent.clear()
    primary_faults = list(row.then)
    default = row.fault or ok()
    with (
        FaultServer(primary_faults, default) as first,
        FaultServer([], ok(usage=False, model=None)) as second,
    ):
        primary = first.base_url if row.fault is not None else refused_url()
        settings = load_settings(
            llm_base_url=primary,
            llm_model="primary-model",
            llm_fallback_base_url=second.base_url if with_fallback else None,
            llm_fallback_model="fallback-model",
        )
        retriever = RecordingRetriever(
            by_keyword={"backups": [doc("Backups run nightly at two.", n=3)]}
        )
        engine = build_engine_over(settings, retriever, endpoints(settings))
        started = time.monotonic()
        try:
            stream = engine.ask("When do backups run?", buffered=row.buffered, within=None)
            for _ in stream:
                pass
            answer = stream.result
            assert answer is not None
            outcome = f"answered by {answer.model}"
            if answer.cut:
                outcome = (
                    f"cut ({answer.cut.split('failed (')[-1].split(')')[0]}), by {answer.model}"
                )
        except ProviderError as exc:
            outcome = "error: " + " / ".join(
                f.label if f.attempts else "not tried" for f in exc.failures
            )
        elapsed = time.monotonic() - started
        sent = f"{counter.sent[primary]}"
        fallback_sent = f"{counter.sent[second.base_url]}" if with_fallback else "-"
        return sent, fallback_sent, elapsed, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fallback-only", action="store_true")
    group.add_argument("--no-fallback-only", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    limit = settings.llm_timeout_s
    counter = _Requests()
    log = logging.getLogger("rag.llm.client")
    log.addHandler(counter)
    log.setLevel(logging.DEBUG)
    variants = [False, True]
    if args.fallback_only:
        variants = [True]
    if args.no_fallback_only:
        variants = [False]
    print(
        f"RAG_LLM_TIMEOUT_S={limit:g}  RAG_LLM_MAX_RETRIES={settings.llm_max_retries}  "
        "fallback: a healthy stub reporting neither usage nor model name"
    )
    worst = 0.0
    for with_fallback in variants:
        print(f"\n{'with' if with_fallback else 'without'} fallback")
        print(f"| {'fault':<34} | primary | fallback | {'seconds':>7} | outcome")
        print(f"|{'-' * 36}|---------|----------|---------|{'-' * 40}")
        for row in ROWS:
            sent, fallback_sent, elapsed, outcome = run(row, with_fallback, counter)
            worst = max(worst, elapsed)
            print(f"| {row.name:<34} | {sent:>7} | {fallback_sent:>8} | {elapsed:7.2f} | {outcome}")
    verdict = "yes" if worst <= limit + 1 else "NO"
    print(f"\nslowest outcome {worst:.2f} s; all within RAG_LLM_TIMEOUT_S + 1 s: {verdict}")
    return 0 if worst <= limit + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
