"""Prometheus metrics of one installation (``GET /api/metrics``), with prometheus-client.

One ``Metrics`` object per process records what the service does: answers (latency, time
to first token, retrieval time, tokens and estimated cost per model, abstentions, cache
hits), errors by category, feedback, rate-limit refusals and ingestion throughput. Gauges
that describe the installation rather than events (job-queue depth, index size, model
endpoint health) are read when the metrics are scraped, from callbacks the caller gives.

Several processes (the app and ``ragchat worker`` processes, or several app replicas):

- each process serves its own ``/api/metrics`` and Prometheus scrapes each (per-process
  scraping; the ``instance`` label tells them apart), or
- ``PROMETHEUS_MULTIPROC_DIR`` names a folder shared by processes of one machine, set
  before any of them starts: prometheus-client's multiprocess mode writes every process's
  values there, and any one process's ``/api/metrics`` answers for all of them (counters
  and histograms summed; gauges of the installation are read by the scraping process).

The folder must be emptied when the installation restarts (prometheus-client's rule).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rag.errors import RagError, category_of
from rag.observe.prices import Price, cost_of

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds. Answers on CPU models take seconds to minutes; retrieval milliseconds.
ANSWER_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
RETRIEVAL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# Chunks per second of one ingestion run.
INGEST_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


# A gauge read at scrape time: (help, callback) or (help, callback, label). The callback
# returns a number, None (left out), or, with a label, {label value: number}.
GaugeSpec = tuple[str, Callable[[], Any]] | tuple[str, Callable[[], Any], str]


class _Installation(Collector):
    """Gauges read at scrape time from the callbacks given to ``Metrics``."""

    def __init__(self, gauges: Mapping[str, GaugeSpec]) -> None:
        self._gauges = dict(gauges)

    def add(self, name: str, spec: GaugeSpec) -> None:
        self._gauges[name] = spec

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (doc, read, *label) in list(self._gauges.items()):
            try:
                value = read()
            except Exception as exc:  # a gauge that cannot be read is left out, and said
                logger.warning("metric %s left out of the scrape: %r", name, exc, exc_info=True)
                continue
            if label and isinstance(value, Mapping):
                family = GaugeMetricFamily(name, doc, labels=label)
                for key, number in value.items():
                    family.add_metric([str(key)], float(number))
                yield family
            elif value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))


class Metrics:
    """The service's counters and histograms, and the scrape of them.

    ``gauges``: name -> ``GaugeSpec``, for values read at scrape time. ``prices``: the
    cost table.
    """

    def __init__(
        self,
        *,
        prices: Mapping[str, Price] | None = None,
        gauges: Mapping[str, GaugeSpec] | None = None,
        multiproc_dir: str | None = None,
    ) -> None:
        self.prices = dict(prices or {})
        self.multiproc_dir = (
            multiproc_dir if multiproc_dir is not None else os.environ.get(MULTIPROC_ENV)
        )
        self.registry = CollectorRegistry()
        # In multiprocess mode values go to the shared folder, and the scrape reads them
        # from there, not from a registry (which would count this process twice).
        own = None if self.multiproc_dir else self.registry
        self.answer_seconds = Histogram(
            "ragchat_answer_seconds", "Time to a whole answer.", ["model"],
            buckets=ANSWER_BUCKETS, registry=own,
        )  # fmt: skip
        self.first_token_seconds = Histogram(
            "ragchat_first_token_seconds", "Time to the answer's first token.", ["model"],
            buckets=FIRST_TOKEN_BUCKETS, registry=own,
        )  # fmt: skip
        self.retrieval_seconds = Histogram(
            "ragchat_retrieval_seconds", "Time to retrieve the passages of a question.",
            buckets=RETRIEVAL_BUCKETS, registry=own,
        )  # fmt: skip
        self.ingest_chunks_per_second = Histogram(
            "ragchat_ingest_chunks_per_second", "Chunks embedded per second, by ingestion run.",
            buckets=INGEST_BUCKETS, registry=own,
        )  # fmt: skip
        self.ingested_chunks = Counter(
            "ragchat_ingested_chunks", "Chunks embedded and stored.", registry=own
        )
        self.questions = Counter(
            "ragchat_questions", "Questions answered (cached ones included).", ["model"],
            registry=own,
        )  # fmt: skip
        self.abstentions = Counter(
            "ragchat_abstentions", "Questions the documents did not answer.", registry=own
        )
        self.cache_hits = Counter(
            "ragchat_cache_hits", "Answers served from the response cache.", ["kind"],
            registry=own,
        )  # fmt: skip
        self.tokens = Counter(
            "ragchat_tokens", "Model tokens read (prompt) and written (completion).",
            ["model", "direction"], registry=own,
        )  # fmt: skip
        self.cost = Counter(
            "ragchat_cost_dollars", "Estimated model cost (RAG_MODEL_PRICES).", ["model"],
            registry=own,
        )  # fmt: skip
        self.errors = Counter(
            "ragchat_errors", "Errors shown to users, by category.", ["category", "type"],
            registry=own,
        )  # fmt: skip
        self.feedback = Counter(
            "ragchat_feedback", "Answers rated by users.", ["rating"], registry=own
        )
        self.rate_limited = Counter(
            "ragchat_rate_limited", "Requests refused by a rate limit.", ["limit"],
            registry=own,
        )  # fmt: skip
        self._installation = _Installation(gauges or {})
        if own is not None:
            own.register(self._installation)

    def gauge(self, name: str, doc: str, read: Callable[[], Any], label: str | None = None) -> None:
        """Add (or replace) a gauge read at scrape time (see ``GaugeSpec``).

        With ``label``, ``read`` returns a mapping of label values to numbers.
        """
        self._installation.add(name, (doc, read) if label is None else (doc, read, label))

    # -- recording ----------------------------------------------------------------------

    def answered(
        self,
        *,
        model: str,
        total_s: float,
        first_token_s: float,
        retrieval_s: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        abstained: bool,
        cached: str | None = None,
        by_model: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        """One answer that reached its user (``cached``: the kind of cache hit, if one).

        ``by_model``: prompt and completion tokens of each model that worked on it (a small
        model condensing, another answering); without it, all are ``model``'s.
        """
        model = model or "unknown"
        self.questions.labels(model).inc()
        self.answer_seconds.labels(model).observe(total_s)
        self.first_token_seconds.labels(model).observe(first_token_s)
        if retrieval_s is not None:
            self.retrieval_seconds.observe(retrieval_s)
        if abstained:
            self.abstentions.inc()
        if cached is not None:
            self.cache_hits.labels(cached).inc()
            return  # a cached answer cost no tokens
        for name, (prompt, completion) in (
            by_model or {model: (prompt_tokens, completion_tokens)}
        ).items():
            self.tokens.labels(name, "prompt").inc(prompt)
            self.tokens.labels(name, "completion").inc(completion)
            dollars = cost_of(self.prices, name, prompt, completion)
            if dollars is not None:
                self.cost.labels(name).inc(dollars)

    def failed(self, error: BaseException) -> None:
        """An error a user saw (its category from ``rag.errors``)."""
        kind = type(error).__name__ if isinstance(error, RagError) else "InternalError"
        self.errors.labels(category_of(error), kind).inc()

    def rated(self, up: bool) -> None:
        """A thumbs up or down."""
        self.feedback.labels("up" if up else "down").inc()

    def refused(self, limit: str) -> None:
        """A request a rate limit refused (``limit``: which one)."""
        self.rate_limited.labels(limit).inc()

    def ingested(self, chunks: int, seconds: float) -> None:
        """One ingestion run that embedded ``chunks`` chunks in ``seconds``."""
        if chunks <= 0:
            return
        self.ingested_chunks.inc(chunks)
        if seconds > 0:
            self.ingest_chunks_per_second.observe(chunks / seconds)

    # -- scraping -----------------------------------------------------------------------

    def scrape(self) -> bytes:
        """The metrics in the Prometheus text format (every process's, in multiprocess mode)."""
        if not self.multiproc_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)
        registry.register(self._installation)
        return generate_latest(registry)
