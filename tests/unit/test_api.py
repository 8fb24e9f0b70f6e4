"""The HTTP API through FastAPI's TestClient, over a real service built from fakes."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag.api.app import create_api, serve_api
from rag.errors import ConfigError
from rag.settings import Settings
from tests.api_fakes import ANSWER, FOLLOW_UP, FakeJobs, fake_service

LOCAL = ("127.0.0.1", 40000)


@pytest.fixture
def env(tmp_path: Path):
    service, controls = fake_service(tmp_path)
    jobs = FakeJobs()
    api = create_api(lambda: service, lambda: jobs)
    client = TestClient(serve_api(api), client=LOCAL)
    yield client, service, controls, jobs
    service.close()


def events(text: str) -> list[tuple[str, Any]]:
    """Parse a Server-Sent Events body into (event, JSON data) pairs."""
    out = []
    for block in text.strip().split("\n\n"):
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out


def assert_error(response, status: int, type_: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == type_
    assert error["message"]
    assert "Traceback" not in response.text
    if field is not None:
        assert error["field"] == field
    return error


CITATION_KEYS = {"n", "source", "title", "page", "chunk_id", "text", "support", "inferred", "flags"}


# Ask --------------------------------------------------------------------------------


def test_ask_answers_with_verified_citations(env):
    client, *_ = env
    r = client.post("/api/v1/ask", json={"question": "What is the default of max_connections?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "The default is 100 [1] and it limits clients [2]."
    assert [c["n"] for c in body["citations"]] == [1, 2]
    assert all(set(c) == CITATION_KEYS for c in body["citations"])
    assert body["citations"][0]["page"] == 5 and "100" in body["citations"][0]["text"]
    assert body["model"] == "fake-model"
    assert body["prompt_version"].startswith("answer@")
    assert {"retrieval_ms", "first_token_ms", "total_ms"} <= set(body["timings"])
    assert body["tokens"]["completion"] > 0
    assert body["abstained"] is False and body["cut"] is None


def test_ask_streams_tokens_then_one_done_event(env):
    client, *_ = env
    r = client.post("/api/v1/ask", json={"question": "default of max_connections?", "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    tokens = [data for name, data in got if name == "token"]
    assert len(tokens) > 3  # streamed piece by piece, not in one block
    assert [name for name, _ in got][-1] == "done"
    (done,) = [data for name, data in got if name == "done"]
    assert "".join(tokens).strip() == done["answer"]
    assert [c["n"] for c in done["citations"]] == [1, 2]
    assert all(set(c) == CITATION_KEYS for c in done["citations"])


def test_a_failure_mid_stream_is_an_error_event(env):
    client, _, controls, _ = env
    controls.fail_after_words = 3
    r = client.post("/api/v1/ask", json={"question": "max_connections?", "stream": True})
    got = events(r.text)
    assert [name for name, _ in got][:1] == ["token"]
    name, data = got[-1]
    assert name == "error"
    assert data["error"]["type"] == "model_error"
    assert "crashed" in data["error"]["message"]


def test_a_model_failure_is_a_502(env):
    client, _, controls, _ = env
    controls.fail_after_words = 0
    r = client.post("/api/v1/ask", json={"question": "max_connections?"})
    assert_error(r, 502, "model_error")


def test_ask_in_a_conversation_keeps_it(env):
    client, *_ = env
    conv = client.post("/api/v1/conversations", json={"title": "limits"})
    assert conv.status_code == 201
    cid = conv.json()["id"]
    r = client.post(
        "/api/v1/ask", json={"question": "default of max_connections?", "conversation_id": cid}
    )
    assert r.json()["conversation_id"] == cid and r.json()["message_id"]
    r = client.post(
        "/api/v1/ask", json={"question": "and how does it count?", "conversation_id": cid}
    )
    assert r.json()["answer"] == FOLLOW_UP
    assert r.json()["standalone_question"] == "How does max_connections count sessions?"

    listed = client.get("/api/v1/conversations").json()["conversations"]
    assert [c["id"] for c in listed] == [cid]
    detail = client.get(f"/api/v1/conversations/{cid}").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2
    assert detail["messages"][1]["meta"]["citations"][0]["n"] == 1
    assert client.delete(f"/api/v1/conversations/{cid}").status_code == 204
    assert_error(client.get(f"/api/v1/conversations/{cid}"), 404, "not_found")
    assert_error(client.delete(f"/api/v1/conversations/{cid}"), 404, "not_found")


def test_ask_in_an_unknown_conversation_is_a_404(env):
    client, *_ = env
    r = client.post("/api/v1/ask", json={"question": "q?", "conversation_id": "nope"})
    assert_error(r, 404, "not_found")
    r = client.post("/api/v1/ask", json={"question": "q?", "conversation_id": "no", "stream": True})
    assert_error(r, 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "question"),
        ({"question": "   "}, "question"),
        ({"question": 3}, "question"),
        ({"question": "q", "k": 0}, "k"),
        ({"question": "q", "k": "many"}, "k"),
        ({"question": "q", "mode": "psychic"}, "mode"),
        ({"question": "q", "colour": "blue"}, "colour"),
        ([1, 2], "body"),
    ],
)
def test_bad_ask_requests_name_the_field(env, body, field):
    client, *_ = env
    assert_error(client.post("/api/v1/ask", json=body), 422, "invalid_input", field)


def test_malformed_json_is_a_400(env):
    client, *_ = env
    r = client.post(
        "/api/v1/ask", content=b'{"question": ', headers={"content-type": "application/json"}
    )
    assert_error(r, 400, "malformed_json", "body")


def test_oversize_bodies_are_413(env):
    client, *_ = env
    big = {"question": "x" * (1024 * 1024 + 10)}
    assert_error(client.post("/api/v1/ask", json=big), 413, "too_large")

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"question": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}'

    r = client.post("/api/v1/ask", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "too_large")
    # upload_max_mb is 1 in the fake settings
    r = client.post("/api/v1/documents", files={"files": ("big.txt", b"x" * (3 * 1024 * 1024))})
    assert_error(r, 413, "too_large")


def test_an_upload_over_the_limit_inside_the_slack_names_the_file(env):
    client, *_ = env
    r = client.post("/api/v1/documents", files={"files": ("big.txt", b"x" * (1024 * 1024 + 100))})
    assert_error(r, 413, "too_large", "files[0]")
    assert "big.txt" in r.json()["error"]["message"]


# Search and documents ---------------------------------------------------------------


def test_search_returns_hits(env):
    client, *_ = env
    r = client.post("/api/v1/search", json={"query": "backups nightly", "k": 2})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert 1 <= len(hits) <= 2
    assert {"score", "relevance", "source", "title", "page", "chunk_id", "text", "flags"} == set(
        hits[0]
    )
    assert any("Backups" in h["text"] for h in hits)
    assert_error(
        client.post("/api/v1/search", json={"query": "x", "k": 0}), 422, "invalid_input", "k"
    )
    assert_error(client.post("/api/v1/search", json={}), 422, "invalid_input", "query")


def test_documents_list_and_delete(env):
    client, *_ = env
    docs = client.get("/api/v1/documents").json()["documents"]
    assert sorted(d["title"] for d in docs) == ["manual.pdf", "ops.md"]
    pdf = next(d for d in docs if d["title"] == "manual.pdf")
    assert pdf["pages"] == 5 and pdf["kind"] == "pdf" and pdf["complete"] is True
    r = client.delete(f"/api/v1/documents/{pdf['id']}")
    assert r.status_code == 200 and r.json()["id"] == pdf["id"]
    assert [d["title"] for d in client.get("/api/v1/documents").json()["documents"]] == ["ops.md"]
    assert_error(client.delete(f"/api/v1/documents/{pdf['id']}"), 404, "not_found")
    assert_error(client.delete("/api/v1/documents/unknown-id"), 404, "not_found")


def test_upload_returns_an_ingestion_job(env):
    client, _, _, jobs = env
    r = client.post(
        "/api/v1/documents",
        files=[("files", ("a.md", b"# A\n\nalpha")), ("files", ("b.txt", b"beta"))],
    )
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "ingest" and r.json()["state"] == "queued"
    assert jobs.files == [("a.md", b"# A\n\nalpha"), ("b.txt", b"beta")]
    assert_error(client.post("/api/v1/documents"), 422, "invalid_input", "files")


def test_without_jobs_uploads_and_jobs_are_503(tmp_path):
    service, _ = fake_service(tmp_path)
    client = TestClient(serve_api(create_api(lambda: service)), client=LOCAL)
    r = client.post("/api/v1/documents", files={"files": ("a.md", b"alpha")})
    error = assert_error(r, 503, "unavailable")
    assert "jobs are not available" in error["message"]
    assert_error(client.get("/api/v1/jobs"), 503, "unavailable")


# OpenAI-compatible ------------------------------------------------------------------


def test_chat_completions_keep_citations(env):
    client, *_ = env
    r = client.post(
        "/api/v1/chat/completions",
        json={
            "model": "ragchat",
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "default of max_connections?"},
            ],
            "temperature": 0.2,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "The default is 100 [1] and it limits clients [2].",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert [c["n"] for c in body["citations"]] == [1, 2]
    assert body["usage"]["total_tokens"] > 0


def test_chat_completions_use_earlier_turns_as_history(env):
    client, _, controls, _ = env
    r = client.post(
        "/api/v1/chat/completions",
        json={
            "messages": [
                {"role": "user", "content": "default of max_connections?"},
                {"role": "assistant", "content": ANSWER},
                {"role": "user", "content": [{"type": "text", "text": "how does it count?"}]},
            ]
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == FOLLOW_UP
    assert any("Rewrite the user's last question" in p and ANSWER in p for p in controls.prompts)


def test_chat_completions_stream_chunks_with_citations_on_the_last(env):
    client, *_ = env
    r = client.post(
        "/api/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "max_connections?"}], "stream": True},
    )
    got = events(r.text)
    assert got[-1] == ("message", "[DONE]")
    chunks = [data for _, data in got[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "[1]" in text and "[2]" in text
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert [c["n"] for c in final["citations"]] == [1, 2]
    assert all("citations" not in c for c in chunks[:-1])


def test_chat_completions_stream_error_is_an_openai_error_chunk(env):
    client, _, controls, _ = env
    controls.fail_after_words = 2
    r = client.post(
        "/api/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "max_connections?"}], "stream": True},
    )
    last = events(r.text)[-1][1]
    assert last["error"]["type"] == "model_error" and last["error"]["code"] == 502


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "messages[1]"),
        ([{"role": "user", "content": "  "}], "messages[0].content"),
        ([{"role": "wizard", "content": "q"}], "messages[0].role"),
    ],
)
def test_bad_chat_requests_name_the_field(env, messages, field):
    client, *_ = env
    r = client.post("/api/v1/chat/completions", json={"messages": messages})
    assert_error(r, 422, "invalid_input", field)


def test_models_lists_ragchat(env):
    client, *_ = env
    assert client.get("/api/v1/models").json()["data"][0]["id"] == "ragchat"


# Health, docs, errors, access -------------------------------------------------------


def test_health_and_ready(env):
    client, _, controls, _ = env
    assert client.get("/api/health").json() == {"status": "ok"}
    r = client.get("/api/ready")
    assert r.status_code == 200 and r.json()["checks"] == {"index": "ok", "model": "ok"}
    controls.model_problem = "the model endpoint http://x is unreachable"
    r = client.get("/api/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["model"].endswith("unreachable")


def test_docs_are_served_under_the_mount(env):
    client, *_ = env
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and "/api/openapi.json" in docs.text
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"/v1/ask", "/v1/chat/completions", "/v1/jobs", "/health"} <= set(paths)


def test_unknown_route_and_method_are_json(env):
    client, *_ = env
    assert_error(client.get("/api/v1/nothing"), 404, "not_found")
    assert_error(client.get("/api/v1/ask"), 405, "method_not_allowed")


def test_an_unexpected_error_is_a_bare_500_and_logged(env, monkeypatch, caplog):
    client, service, _, _ = env

    def broken(**_: Any) -> list:
        raise RuntimeError("secret detail /etc/passwd")

    monkeypatch.setattr(service, "documents", broken)
    quiet = TestClient(client.app, client=LOCAL, raise_server_exceptions=False)
    r = quiet.get("/api/v1/documents")
    assert r.status_code == 500
    error = r.json()["error"]
    assert error == {
        "type": "internal",
        "message": "internal error; see the server log",
        "id": error["id"],
    }
    assert re.fullmatch(r"[0-9a-f]{8}", error["id"])
    assert "secret" not in r.text
    assert "secret detail" in caplog.text  # the traceback is in the log, not the response
    assert f"error {error['id']}: unexpected" in caplog.text  # the id leads to it


def test_a_config_error_is_a_500_with_its_message(env, monkeypatch):
    client, service, _, _ = env

    def bad(*_: Any, **__: Any):
        raise ConfigError("RAG_RERANKER_PATH", "/nowhere is no model folder")

    monkeypatch.setattr(service, "search", bad)
    r = client.post("/api/v1/search", json={"query": "x"})
    error = assert_error(r, 500, "config_error", "RAG_RERANKER_PATH")
    assert "/nowhere is no model folder" in error["message"]


def test_remote_clients_are_refused_unless_allowed(tmp_path):
    service, _ = fake_service(tmp_path)
    remote = ("192.0.2.7", 5000)
    client = TestClient(serve_api(create_api(lambda: service)), client=remote)
    error = assert_error(client.get("/api/health"), 403, "forbidden")
    assert "RAG_ALLOW_REMOTE" in error["message"]
    assert TestClient(client.app, client=("::1", 5000)).get("/api/health").status_code == 200

    class RemoteSettings(Settings):
        allow_remote: bool = True

    allowed, _ = fake_service(tmp_path / "b", settings=RemoteSettings(data_dir=tmp_path / "b"))
    client = TestClient(serve_api(create_api(lambda: allowed)), client=remote)
    assert client.get("/api/health").status_code == 200


# Jobs -------------------------------------------------------------------------------


def test_batch_job_json_lifecycle(env):
    client, *_ = env
    r = client.post(
        "/api/v1/jobs",
        json={
            "kind": "batch",
            "questions": [{"question": "one?"}, {"sources": ["x"]}, {"question": "two?"}],
            "concurrency": 2,
        },
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["total"] == 2
    assert job["errors"] == [
        {"line": 2, "field": "question", "error": "must be a non-empty string"}
    ]
    assert job["options"]["concurrency"] == 2
    jid = job["id"]
    assert [j["id"] for j in client.get("/api/v1/jobs").json()["jobs"]] == [jid]

    states = [data["state"] for name, data in events(client.get(f"/api/v1/jobs/{jid}/events").text)]
    assert states[-1] == "done" and "running" in states

    assert client.get(f"/api/v1/jobs/{jid}").json()["state"] == "done"
    r = client.get(f"/api/v1/jobs/{jid}/results")
    assert r.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [row["question"] for row in rows] == ["one?", "two?"]

    r = client.get(f"/api/v1/jobs/{jid}/results?format=csv")
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["question"] for row in table] == ["one?", "two?"]
    assert json.loads(table[0]["citations"])[0]["n"] == 1
    assert table[0]["abstained"] == "false" and table[0]["error"] == ""
    assert_error(
        client.get(f"/api/v1/jobs/{jid}/results?format=xml"), 422, "invalid_input", "format"
    )


def test_cancel_a_job(env):
    client, *_ = env
    jid = client.post(
        "/api/v1/jobs", json={"kind": "batch", "questions": [{"question": "q"}] * 3}
    ).json()["id"]
    r = client.post(f"/api/v1/jobs/{jid}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert client.get(f"/api/v1/jobs/{jid}").json()["state"] == "cancelled"


def test_batch_job_from_a_file_and_an_ingest_job(env):
    client, _, _, jobs = env
    r = client.post(
        "/api/v1/jobs",
        data={"kind": "batch", "concurrency": "4"},
        files={"file": ("questions.jsonl", b'{"question": "one?"}\n{"question": "two?"}\n')},
    )
    assert r.status_code == 202, r.text
    assert r.json()["total"] == 2 and jobs.batch_files[0][2] == 4
    r = client.post("/api/v1/jobs", data={"kind": "ingest"}, files=[("files", ("a.md", b"alpha"))])
    assert r.status_code == 202 and r.json()["kind"] == "ingest"
    assert jobs.files == [("a.md", b"alpha")]


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"json": {"kind": "batch", "questions": []}}, 422, "questions"),
        ({"json": {"kind": "batch"}}, 422, "questions"),
        ({"json": {"kind": "batch", "questions": ["q?"]}}, 422, "questions"),
        ({"json": {"kind": "batch", "questions": [{"q": 1}]}}, 422, "questions"),
        (
            {"json": {"kind": "batch", "questions": [{"question": "q"}], "concurrency": 0}},
            422,
            "concurrency",
        ),
        ({"json": {"kind": "ingest"}}, 422, "kind"),
        ({"json": {"kind": "party"}}, 422, "kind"),
        ({"data": {"kind": "batch"}, "files": {"file": ("q.txt", b"q")}}, 422, "file"),
        ({"data": {"kind": "batch"}, "files": {"other": ("q.csv", b"q")}}, 422, "file"),
        (
            {"data": {"kind": "batch", "concurrency": "lots"}, "files": {"file": ("q.csv", b"q")}},
            422,
            "concurrency",
        ),
        ({"data": {"kind": "ingest"}}, 422, "files"),
    ],
)
def test_bad_job_requests_name_the_field(env, kwargs, status, field):
    client, *_ = env
    assert_error(client.post("/api/v1/jobs", **kwargs), status, "invalid_input", field)


def test_bad_job_bodies(env):
    client, *_ = env
    r = client.post("/api/v1/jobs", content=b"{nope", headers={"content-type": "application/json"})
    assert_error(r, 400, "malformed_json", "body")
    r = client.post("/api/v1/jobs", content=b"kind=batch", headers={"content-type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")
    big = {"kind": "batch", "questions": [{"question": "x" * 1000}] * 1100}
    assert_error(client.post("/api/v1/jobs", json=big), 413, "too_large")


def test_unknown_job_ids_are_404(env):
    client, *_ = env
    for r in (
        client.get("/api/v1/jobs/nope"),
        client.get("/api/v1/jobs/nope/events"),
        client.get("/api/v1/jobs/nope/results"),
        client.post("/api/v1/jobs/nope/cancel"),
    ):
        assert_error(r, 404, "not_found")


def test_jobs_routes_over_the_real_job_service(tmp_path):
    from rag.service.jobs import build_job_service

    service, _ = fake_service(tmp_path)
    jobs = build_job_service(service.settings, service, workers=2)
    try:
        client = TestClient(serve_api(create_api(lambda: service, lambda: jobs)), client=LOCAL)
        questions = [
            {"question": "default of max_connections?"}, {"nope": 1}, 7, {"question": "b?"},
        ]  # fmt: skip
        r = client.post("/api/v1/jobs", json={"kind": "batch", "questions": questions})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["total"] == 2 and [e["line"] for e in job["errors"]] == [2, 3]
        outside = {"kind": "batch", "questions": questions, "compare": ["a", "b@http://x/v1"]}
        r = client.post("/api/v1/jobs", json=outside)
        assert r.status_code == 422 and r.json()["error"]["field"] == "compare[1]"
        got = events(client.get(f"/api/v1/jobs/{job['id']}/events").text)
        assert got[-1][1]["state"] == "done" and got[-1][1]["done"] == 2
        rows = [
            json.loads(x) for x in client.get(f"/api/v1/jobs/{job['id']}/results").text.splitlines()
        ]
        assert [row["question"] for row in rows] == ["default of max_connections?", "b?"]
        assert [c["n"] for c in rows[0]["citations"]] == [1, 2]

        r = client.post("/api/v1/documents", files={"files": ("a.md", b"# Alpha\n\nalpha beta")})
        got = events(client.get(f"/api/v1/jobs/{r.json()['id']}/events").text)
        assert got[-1][1]["state"] == "done"
        assert "a.md" in [d["title"] for d in client.get("/api/v1/documents").json()["documents"]]
    finally:
        jobs.close()
        service.close()
