"""Prometheus metrics: a scripted session through the API, prices, multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from rag.api.app import create_api, serve_api
from rag.errors import ProviderError, RateLimitedError
from rag.observe.metrics import Metrics
from rag.observe.prices import Price, parse_prices
from tests.api_fakes import FakeJobs, fake_service

LOCAL = ("127.0.0.1", 40000)
ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the Prometheus text format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_scripted_session_shows_in_the_scrape(tmp_path: Path) -> None:
    service, _ = fake_service(tmp_path)
    client = TestClient(serve_api(create_api(lambda: service, lambda: FakeJobs())), client=LOCAL)
    try:
        for _ in range(2):
            r = client.post("/api/v1/ask", json={"question": "default of max_connections?"})
            assert r.status_code == 200, r.text
        r = client.post("/api/v1/ask", json={"question": "unknown words only"})
        assert r.json()["abstained"] is True
        assert client.post("/api/v1/ask", json={"question": "  "}).status_code in (400, 422)
        scrape = client.get("/api/metrics")
    finally:
        service.close()
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=")
    got = samples(scrape.text)
    model = (("model", "fake-model"),)
    assert got[("ragchat_questions_total", model)] == 3
    assert got[("ragchat_abstentions_total", ())] == 1
    assert got[("ragchat_answer_seconds_count", model)] == 3
    assert got[("ragchat_first_token_seconds_count", model)] == 3
    assert got[("ragchat_retrieval_seconds_count", ())] == 3
    assert got[("ragchat_answer_seconds_bucket", (("le", "+Inf"), *model))] == 3
    assert got[("ragchat_tokens_total", (("direction", "completion"), *model))] > 0
    assert got[("ragchat_tokens_total", (("direction", "prompt"), *model))] > 0
    errors = (("category", "input"), ("type", "InvalidInputError"))
    assert got[("ragchat_errors_total", errors)] == 1  # counted once, not per layer
    assert ("ragchat_cost_dollars_total", model) not in got  # no price table: no cost


def test_cost_follows_the_price_table_and_errors_their_category() -> None:
    metrics = Metrics(prices={"big": Price(2.0, 8.0), "*": Price(0.5, 1.0)}, multiproc_dir="")
    for model in ("big", "other"):
        metrics.answered(
            model=model, total_s=1.2, first_token_s=0.3, retrieval_s=0.02,
            prompt_tokens=1_000_000, completion_tokens=500_000, abstained=False,
        )  # fmt: skip
    metrics.answered(
        model="big", total_s=0.01, first_token_s=0.005, retrieval_s=None,
        prompt_tokens=0, completion_tokens=0, abstained=False, cached="exact",
    )  # fmt: skip
    metrics.failed(ProviderError("http://llm", 503, "down"))
    metrics.failed(RateLimitedError("requests per minute", 10))
    metrics.failed(KeyError("a bug"))
    metrics.rated(up=False)
    metrics.refused("requests per minute")
    metrics.ingested(120, 4.0)
    got = samples(metrics.scrape().decode())
    assert got[("ragchat_cost_dollars_total", (("model", "big"),))] == pytest.approx(6.0)
    assert got[("ragchat_cost_dollars_total", (("model", "other"),))] == pytest.approx(1.0)
    assert got[("ragchat_cache_hits_total", (("kind", "exact"),))] == 1
    assert got[("ragchat_questions_total", (("model", "big"),))] == 2
    assert got[("ragchat_errors_total", (("category", "model"), ("type", "ProviderError")))] == 1
    limited = (("category", "business_rule"), ("type", "RateLimitedError"))
    assert got[("ragchat_errors_total", limited)] == 1
    bug = (("category", "infrastructure"), ("type", "InternalError"))
    assert got[("ragchat_errors_total", bug)] == 1
    assert got[("ragchat_feedback_total", (("rating", "down"),))] == 1
    assert got[("ragchat_rate_limited_total", (("limit", "requests per minute"),))] == 1
    assert got[("ragchat_ingested_chunks_total", ())] == 120
    assert got[("ragchat_ingest_chunks_per_second_sum", ())] == 30


def test_installation_gauges_are_read_at_scrape_time() -> None:
    depth = [3]

    def broken() -> float:
        raise OSError("index unreadable")

    metrics = Metrics(
        gauges={
            "ragchat_job_queue_depth": ("Jobs waiting.", lambda: depth[0]),
            "ragchat_model_endpoint_up": (
                "Endpoint health.",
                lambda: {"http://a": 1, "b": 0},
                "endpoint",
            ),
            "ragchat_index_chunks": ("Chunks.", broken),  # left out, the scrape goes on
        },
        multiproc_dir="",
    )
    depth[0] = 5
    got = samples(metrics.scrape().decode())
    assert got[("ragchat_job_queue_depth", ())] == 5
    assert got[("ragchat_model_endpoint_up", (("endpoint", "http://a"),))] == 1
    assert not any(name == "ragchat_index_chunks" for name, _ in got)


def test_the_price_table_setting_names_what_is_wrong() -> None:
    assert parse_prices("") == {}
    assert parse_prices('{"gpt-x": [1, 4.5]}') == {"gpt-x": Price(1.0, 4.5)}
    with pytest.raises(ValueError, match="not JSON"):
        parse_prices("gpt: 1")
    with pytest.raises(ValueError, match=r"'gpt': expected \[prompt, completion\]"):
        parse_prices('{"gpt": [1]}')
    with pytest.raises(ValueError, match="expected an object"):
        parse_prices("[1, 2]")


_WORKER = """
from rag.observe.metrics import Metrics
m = Metrics()
for _ in range({n}):
    m.answered(model="m", total_s=1.0, first_token_s=0.1, retrieval_s=0.01,
               prompt_tokens=10, completion_tokens=5, abstained=False)
m.rated(up=True)
"""


def test_two_worker_processes_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    for n in (2, 3):  # two processes, each writing its own values to the shared folder
        subprocess.run([sys.executable, "-c", _WORKER.format(n=n)], env=env, check=True)
    scrape = Metrics(multiproc_dir=str(folder)).scrape().decode()  # any process answers
    got = samples(scrape)
    assert got[("ragchat_questions_total", (("model", "m"),))] == 5
    assert got[("ragchat_tokens_total", (("direction", "completion"), ("model", "m")))] == 25
    assert got[("ragchat_answer_seconds_count", (("model", "m"),))] == 5
    assert got[("ragchat_feedback_total", (("rating", "up"),))] == 2


def test_only_admins_read_the_metrics(tmp_path: Path) -> None:
    from rag.access.principal import Principal, Role
    from rag.api.metrics import metrics
    from rag.errors import PermissionDeniedError

    service, _ = fake_service(tmp_path)
    member = Principal(user_id="u1", name="member", role=Role.MEMBER, via="key")
    try:
        with pytest.raises(PermissionDeniedError, match="only admins"):
            metrics(service, member)
        assert metrics(service, service.access.local()).status_code == 200
    finally:
        service.close()


def test_the_job_queue_depth_is_a_gauge_of_the_service(tmp_path: Path) -> None:
    from rag.access.principal import LOCAL as CALLER
    from rag.service.jobs import build_job_service

    service, _ = fake_service(tmp_path)
    jobs = build_job_service(service.settings, service, workers=0)  # nobody takes tasks
    try:
        before = samples(service.metrics.scrape().decode())
        assert before[("ragchat_job_queue_depth", ())] == 0
        jobs.submit_batch([{"question": "a?"}, {"question": "b?"}, {"question": "c?"}],
                          caller=CALLER)  # fmt: skip
        after = samples(service.metrics.scrape().decode())
        assert after[("ragchat_job_queue_depth", ())] == 3
    finally:
        service.close()


def test_ingestion_throughput_is_recorded_for_runs_and_uploads(tmp_path: Path) -> None:
    from rag.access.principal import LOCAL as CALLER

    service, _ = fake_service(tmp_path / "data")
    notes = tmp_path / "notes.txt"
    notes.write_text("Pumps are serviced every spring. " * 40)
    try:
        report = service.ingest([notes], caller=CALLER)
        results = service.add_uploads([("up.md", b"# Valves\n\n" + b"Valves close. " * 50)],
                                      caller=CALLER)  # fmt: skip
        got = samples(service.metrics.scrape().decode())
    finally:
        service.close()
    assert report.chunks > 0 and [r.status for r in results] == ["added"]
    assert got[("ragchat_ingest_chunks_per_second_count", ())] == 2
    assert got[("ragchat_ingested_chunks_total", ())] > report.chunks
