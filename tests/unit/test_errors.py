"""Error categories: each follows its retry policy, and every error shown carries its id."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag.access.principal import LOCAL
from rag.api.app import create_api, serve_api
from rag.errors import (
    RETRY_POLICIES,
    ConfigError,
    ContentRefusedError,
    EndpointFailure,
    EndpointFault,
    IndexLockedError,
    InvalidInputError,
    PermissionDeniedError,
    ProviderError,
    RagError,
    RateLimitedError,
    error_id,
    retry_policy,
    with_id,
)
from rag.guard.pii import LogDetector, redact
from rag.jobs.answering import answer_row
from rag.memory import ConversationNotFoundError
from tests.api_fakes import FakeJobs, fake_service

UNREACHABLE = ProviderError.from_failures(
    [EndpointFailure("http://a/v1", EndpointFault.UNREACHABLE, "cannot connect")]
)
BAD_KEY = ProviderError.from_failures(
    [EndpointFailure("http://a/v1", EndpointFault.CLIENT_ERROR, "invalid key", status=401)]
)


def test_error_ids_are_short_and_stable() -> None:
    error = InvalidInputError("question", "the question is empty")
    assert re.fullmatch(r"[0-9a-f]{8}", error_id(error))
    # Never all digits: the log redaction would mask the id as a number.
    ids = [error_id(InvalidInputError("q", str(n))) for n in range(300)]
    assert all(i[0] in "abcdef" for i in ids)
    assert all(redact(f"error {i} shown", LogDetector()) == f"error {i} shown" for i in ids)
    assert error_id(error) == error_id(error)
    assert error_id(InvalidInputError("q", "x")) != error_id(error)
    assert with_id(error).endswith(f"(error id {error_id(error)})")


@pytest.mark.parametrize(
    ("error", "retries"),
    [
        (UNREACHABLE, 2),  # model: the endpoint may be back later
        (BAD_KEY, 0),  # model, but a refused key fails the same way again
        (IndexLockedError("/data/index", 5.0), 3),  # infrastructure: passes in seconds
        (ConfigError("RAG_X", "bad"), 0),  # infrastructure that no retry cures
        (InvalidInputError("question", "empty"), 0),  # input
        (PermissionDeniedError("read", "not yours"), 0),  # security
        (ContentRefusedError("question", "the blocklist", ["violence"]), 0),  # security
        (RateLimitedError("10/minute", 30), 0),  # business rule: the error says when
        (ConversationNotFoundError("c1"), 0),  # input
        (RagError("the answer ended early"), 0),  # only errors that may pass are retried
    ],
)
def test_each_category_has_its_policy(error: RagError, retries: int) -> None:
    assert retry_policy(error).retries == retries
    assert set(RETRY_POLICIES) == {"model", "infrastructure", "input", "security", "business_rule"}


class Flaky:
    """A service whose ``ask`` raises the given errors, then answers."""

    def __init__(self, real: Any, errors: list[RagError]) -> None:
        self.real, self.errors, self.asked = real, errors, 0

    def ask(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.real.ask(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Any]:
    real, _ = fake_service(tmp_path)
    yield real
    real.close()


def test_batch_questions_follow_their_category_policy(service: Any) -> None:
    item = {"question": "What does max_connections set?"}
    waits: list[float] = []

    def row_after(errors: list[RagError]) -> tuple[dict[str, Any], int]:
        flaky = Flaky(service, errors)
        row = answer_row(flaky, 0, item, caller=LOCAL, sleep=waits.append)  # type: ignore[arg-type]
        return row, flaky.asked

    # A model outage that passes: asked again after 5 s, then 10 s, and answered.
    row, asked = row_after([UNREACHABLE, UNREACHABLE])
    assert row["error"] is None and row["answer"] and asked == 3
    assert waits == [5.0, 10.0]
    # One that does not pass: the row names the error after three tries.
    waits.clear()
    row, asked = row_after([UNREACHABLE] * 3)
    assert asked == 3 and "cannot connect" in row["error"]
    # Infrastructure: three retries, one second doubling.
    waits.clear()
    row, asked = row_after([IndexLockedError("/i", 5.0)] * 3)
    assert row["error"] is None and asked == 4 and waits == [1.0, 2.0, 4.0]
    # Input, security, business rules and hopeless model errors: never asked again.
    for error in (
        InvalidInputError("question", "empty"),
        PermissionDeniedError("read", "not yours"),
        RateLimitedError("100 questions/day", 3600),
        BAD_KEY,
    ):
        waits.clear()
        row, asked = row_after([error])
        assert asked == 1 and waits == [] and row["error"] == str(error)


@pytest.fixture
def client(service: Any) -> TestClient:
    api = create_api(lambda: service, lambda: FakeJobs())
    return TestClient(serve_api(api), client=("127.0.0.1", 40000))  # a local caller


def failing(service: Any, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def broken(**_: Any) -> list[Any]:
        raise error

    monkeypatch.setattr(service, "documents", broken)


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (UNREACHABLE, 502, "10"),
        (BAD_KEY, 502, None),
        (IndexLockedError("/i", 5.0), 503, "2"),
        (ConfigError("RAG_X", "bad"), 500, None),
        (RateLimitedError("10/minute", 30), 429, "30"),
        (PermissionDeniedError("read", "not yours"), 403, None),
    ],
)
def test_api_errors_carry_their_id_and_when_to_retry(
    client: TestClient,
    service: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: RagError,
    status: int,
    retry_after: str | None,
) -> None:
    failing(service, monkeypatch, error)
    with caplog.at_level(logging.INFO, logger="rag"):  # an earlier test may raise its level
        r = client.get("/api/v1/documents")
    assert r.status_code == status
    assert r.headers.get("retry-after") == retry_after
    body = r.json()["error"]
    assert body["id"] == error_id(error)
    logged = [rec.getMessage() for rec in caplog.records if body["id"] in rec.getMessage()]
    assert logged and f"({error.category}, {type(error).__name__})" in logged[0]


def test_every_error_shape_has_an_id(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rag"):  # an earlier test may raise its level
        bad_body = client.post("/api/v1/ask", json={"question": 3})
        no_route = client.get("/api/v1/nowhere")
    for response in (bad_body, no_route):
        found = response.json()["error"]["id"]
        assert re.fullmatch(r"[0-9a-f]{8}", found)
        assert found in caplog.text
