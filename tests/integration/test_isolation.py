"""Isolation attacks (issue 13): bob against alice's data through the HTTP API and the CLI.

One real service (the bundled embedding model, the FAISS/SQLite index, the job workers)
served by uvicorn on 127.0.0.1 with RAG_AUTH=password, answering through a stub model
(``FaultServer``) that records every prompt. Alice keeps a canary in her private
collection; every attack from bob (API key, session cookie, ``ragchat --user bob``)
checks the raw response text, and the prompts sent to the model, for it. Each "bob does
not see it" has its control: alice (or the operator) does see it the same way.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette

from rag.access.principal import Principal
from rag.api.app import create_api, mount
from rag.api.auth import auth_routes
from rag.errors import RagError
from rag.service.components import build_service
from rag.service.core import RagService
from rag.service.jobs import JobService, build_job_service
from rag.settings import Settings
from tests.faultserver import FaultServer
from tests.isolation_support import (
    cli_env,
    client,
    flipped,
    leaked,
    ragchat,
    ragchat_many,
    served,
    session_cookie,
    sign_in,
    wait_for_job,
)

# Markers made of letters no hex id, uuid or timestamp can contain.
ALICE_CANARY = "Canary QZVXK: the vault code in the lighthouse basement is WOMBAT-4471."
ALICE_MARKERS = ("QZVXK", "WOMBAT")
BOB_CANARY = "Canary JPLMQ: the boathouse key hides under the PELICAN plank."
BOB_MARKERS = ("JPLMQ", "PELICAN")
VAULT_QUESTION = "What is the vault code in the lighthouse basement?"
LENS_QUERY = "How often is the lighthouse lens polished with rouge?"
NEAR_DUPLICATES = 48  # more than RAG_FUSION_DEPTH (40) candidates per method
SECRET = "isolation-suite-session-secret-0123456789"
PASSWORDS = {
    "root": "root-password",
    "alice": "alice-password",
    "bob": "bob-password",
    "vera": "vera-password",
    "dora": "dora-password",
}


@dataclass
class World:
    """The served app and what alice owns (the ids bob must not reach)."""

    url: str
    api_url: str
    app: FastAPI
    service: RagService
    jobs: JobService
    stub: FaultServer
    data_dir: Path
    files: Path
    users: dict[str, Principal]
    keys: dict[str, str]
    key_ids: dict[str, str]
    cookies: dict[str, str]
    alice_docs: dict[str, str]  # name -> id, alice-private
    shared_doc: str
    bob_docs: dict[str, str]
    alice_collection: str  # alice-private's id
    alice_chunks: list[str]
    alice_conversation: str = ""
    alice_messages: list[int] = field(default_factory=list)
    alice_answer: dict[str, Any] = field(default_factory=dict)
    alice_prompts: str = ""
    alice_job: str = ""
    alice_job_rows: str = ""

    @property
    def vault_doc(self) -> str:
        return self.alice_docs["vault.md"]

    def api(self, who: str) -> httpx.Client:
        """A client as ``who``: ``bob-key``, ``bob-cookie``, ``alice-shared-key``, ``none``."""
        name, _, how = who.rpartition("-")
        if how == "key":
            return client(self.api_url, key=self.keys[name])
        if how == "cookie":
            return client(self.api_url, cookie=self.cookies[name])
        return client(self.api_url)

    def prompts_since(self, n: int) -> str:
        """What the model was sent from the ``n``th request on, as one text."""
        return json.dumps(self.stub.bodies[n:], ensure_ascii=False)


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def _documents(files: Path) -> dict[str, Path]:
    """alice/, bob/ and shared/ folders to ingest into the three collections."""
    alice, bob, shared = files / "alice", files / "bob", files / "shared"
    _write(alice, "vault.md", f"# Vault\n\n{ALICE_CANARY}\n")
    for n in range(NEAR_DUPLICATES):
        _write(
            alice,
            f"lens-{n:02d}.md",
            f"# Lens note {n}\n\nThe lighthouse lens is polished with rouge every month "
            f"(keeper note {n}).\n",
        )
    _write(bob, "boathouse.md", f"# Boathouse\n\n{BOB_CANARY}\n")
    for n, thing in enumerate(["crane", "winch", "slipway", "ferry"]):
        _write(
            bob,
            f"{thing}.md",
            f"# Harbour {thing}\n\nThe harbour {thing} is oiled every spring by the "
            f"harbour master ({n}).\n",
        )
    _write(shared, "museum.md", "# Museum\n\nThe lighthouse museum opens at nine every day.\n")
    return {"alice-private": alice, "bob-private": bob, "shared": shared}


def _settings(data_dir: Path, **overrides: Any) -> Settings:
    with pytest.MonkeyPatch.context() as env:  # the developer's RAG_* do not count
        for name in list(os.environ):
            if name.startswith("RAG_"):
                env.delenv(name)
        return Settings(data_dir=data_dir, auth="password", session_secret=SECRET, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("isolation-data")
    files = tmp_path_factory.mktemp("isolation-files")
    with ExitStack() as stack:
        stub = stack.enter_context(FaultServer())
        settings = _settings(
            data_dir,
            llm_base_url=stub.base_url,
            min_relevance=0.0,  # every passage reaches the prompt: a leak would show
            relevance_gap=1.0,
            cache=False,  # every answer reaches the model (the cache: tests/unit/test_cache.py)
            rate_requests_per_minute=0,
            rate_key_requests_per_minute=0,
        )
        service = build_service(settings)
        stack.callback(service.close)
        access = service.access
        operator = access.operator()
        access.add_user(operator, "root", "admin", PASSWORDS["root"])
        for name in ("alice", "bob", "dora"):
            access.add_user(operator, name, "member", PASSWORDS[name])
        access.add_user(operator, "vera", "viewer", PASSWORDS["vera"])
        users = {name: access.as_user(name) for name in PASSWORDS}
        alice, bob = users["alice"], users["bob"]
        access.create_collection(alice, "alice-private")
        access.create_collection(bob, "bob-private")
        access.create_collection(alice, "shared")
        access.share(alice, "shared", "user", "bob", "viewer")
        access.share(alice, "shared", "user", "vera", "editor")  # her role still forbids
        owners = {"alice-private": alice, "bob-private": bob, "shared": alice}
        for collection, folder in _documents(files).items():
            report = service.ingest([folder], caller=owners[collection], collection=collection)
            assert report.count("failed") == 0
        found = access.accounts.find_collection("alice-private")
        assert found is not None
        alice_docs = {
            d.name: d.id for d in service.documents(caller=alice, collections=["alice-private"])
        }
        assert len(alice_docs) == NEAR_DUPLICATES + 1
        bob_docs = {
            d.name: d.id for d in service.documents(caller=bob, collections=["bob-private"])
        }
        (shared_doc,) = [d.id for d in service.documents(caller=bob, collections=["shared"])]
        alice_chunks = [
            h.chunk_id
            for h in service.search(
                VAULT_QUESTION, caller=alice, collections=["alice-private"], k=100
            )
        ]
        assert len(alice_chunks) == NEAR_DUPLICATES + 1

        jobs = build_job_service(settings, service, workers=2)
        stack.callback(jobs.close)
        app = create_api(lambda: service, lambda: jobs)
        url = stack.enter_context(
            served(Starlette(routes=[mount(app), *auth_routes(lambda: service)]))
        )
        keys, key_ids = {}, {}
        for label, owner, options in (
            ("alice", alice, {}),
            ("bob", bob, {}),
            ("alice-shared", alice, {"collections": ["shared"]}),
            ("alice-ro", alice, {"read_only": True}),
            ("vera", users["vera"], {}),
            ("dora", users["dora"], {}),
            ("bob-spare", bob, {}),
        ):
            key, secret = access.create_key(owner, name=label, **options)
            keys[label], key_ids[label] = secret, key.id
        cookies = {
            n: session_cookie(url, n, PASSWORDS[n]) for n in ("alice", "bob", "vera", "dora")
        }
        world = World(
            url=url,
            api_url=f"{url}/api",
            app=app,
            service=service,
            jobs=jobs,
            stub=stub,
            data_dir=data_dir,
            files=files,
            users=users,
            keys=keys,
            key_ids=key_ids,
            cookies=cookies,
            alice_docs=alice_docs,
            shared_doc=shared_doc,
            bob_docs=bob_docs,
            alice_collection=found.id,
            alice_chunks=alice_chunks,
        )
        _alice_works(world)
        yield world


def _alice_works(world: World) -> None:
    """Alice's conversation, answer and batch job: the ids bob will try, and the controls."""
    with world.api("alice-key") as alice:
        created = alice.post("/v1/conversations", json={"title": "vault"})
        assert created.status_code == 201, created.text
        world.alice_conversation = created.json()["id"]
        before = len(world.stub.bodies)
        asked = alice.post(
            "/v1/ask",
            json={"question": VAULT_QUESTION, "conversation_id": world.alice_conversation},
        )
        assert asked.status_code == 200, asked.text
        world.alice_answer = asked.json()
        world.alice_prompts = world.prompts_since(before)
        read = alice.get(f"/v1/conversations/{world.alice_conversation}")
        world.alice_messages = [m["id"] for m in read.json()["messages"]]
        job = alice.post(
            "/v1/jobs", json={"kind": "batch", "questions": [{"question": VAULT_QUESTION}]}
        )
        assert job.status_code == 202, job.text
        world.alice_job = job.json()["id"]
        assert wait_for_job(alice, world.alice_job)["state"] == "done"
        world.alice_job_rows = alice.get(f"/v1/jobs/{world.alice_job}/results").text


def _no_leak(response: httpx.Response, *secrets: str) -> None:
    found = leaked(response.text, ALICE_MARKERS + secrets)
    assert not found, f"{response.request.method} {response.request.url}: {found} leaked"


def _body(response: httpx.Response) -> str:
    """The response's text with its error id (different for every error) taken out."""
    return re.sub(r',"id":"[0-9a-f]{8}"', "", response.text)


def _same_404(
    api: httpx.Client, method: str, path: str, real_id: str, **kwargs: Any
) -> httpx.Response:
    """Bob's answer for alice's id is a 404, word for word the one for an unknown id."""
    fake_id = uuid.uuid4().hex[: len(real_id)] if len(real_id) <= 32 else "0" * len(real_id)
    real = api.request(method, path.format(real_id), **kwargs)
    fake = api.request(method, path.format(fake_id), **kwargs)
    assert real.status_code == 404, (path, real.status_code, real.text)
    assert real.json()["error"]["type"] == "not_found"
    assert _body(real).replace(real_id, "ID") == _body(fake).replace(fake_id, "ID")
    _no_leak(real)
    return real


# -- controls: alice sees her canary through the very routes bob attacks -----------------


def test_alice_reaches_her_canary_through_search_answers_prompts_and_jobs(world: World) -> None:
    with world.api("alice-key") as alice:
        hits = alice.post("/v1/search", json={"query": VAULT_QUESTION, "k": 3})
    assert leaked(hits.text, ALICE_MARKERS) == list(ALICE_MARKERS)
    assert leaked(json.dumps(world.alice_answer["citations"]), ALICE_MARKERS)
    assert leaked(world.alice_prompts, ALICE_MARKERS)  # the passage reached the model
    assert leaked(world.alice_job_rows, ALICE_MARKERS)
    assert len(world.alice_messages) == 2


# -- bob, with his API key and with his session cookie ------------------------------------

CREDENTIALS = ["bob-key", "bob-cookie"]


@pytest.mark.parametrize("who", CREDENTIALS)
def test_bob_lists_and_searches_nothing_of_alices(world: World, who: str) -> None:
    with world.api(who) as bob:
        listed = bob.get("/v1/documents")
        assert listed.status_code == 200
        names = {d["title"] for d in listed.json()["documents"]}
        assert names == {*world.bob_docs, "museum.md"}
        _no_leak(listed, *world.alice_docs.values(), world.alice_collection)
        for collection in ("alice-private", world.alice_collection):
            refused = bob.get("/v1/documents", params={"collection": collection})
            unknown = bob.get("/v1/documents", params={"collection": "nobody-private"})
            assert refused.status_code == unknown.status_code == 404
            assert _body(refused).replace(collection, "C") == _body(unknown).replace(
                "nobody-private", "C"
            )
        for mode in ("hybrid", "vector", "keyword"):
            query = "vault code canary basement" if mode == "keyword" else VAULT_QUESTION
            hits = bob.post("/v1/search", json={"query": query, "k": 20, "mode": mode})
            assert hits.status_code == 200, hits.text
            _no_leak(hits, *world.alice_chunks)
            assert all(h["chunk_id"] not in world.alice_chunks for h in hits.json()["hits"])
        for collection in ("alice-private", world.alice_collection):
            body = {"query": VAULT_QUESTION, "collections": [collection]}
            refused = bob.post("/v1/search", json=body)
            assert refused.status_code == 404
            _no_leak(refused)


@pytest.mark.parametrize("who", CREDENTIALS)
def test_bob_answers_never_use_alices_passages(world: World, who: str) -> None:
    before = len(world.stub.bodies)
    ask = {"question": VAULT_QUESTION}
    chat = {"messages": [{"role": "user", "content": VAULT_QUESTION}]}
    with world.api(who) as bob:
        for stream in (False, True):
            answered = bob.post("/v1/ask", json={**ask, "stream": stream})
            assert answered.status_code == 200, answered.text
            assert not stream or "event: done" in answered.text
            _no_leak(answered, *world.alice_chunks)
            completed = bob.post("/v1/chat/completions", json={**chat, "stream": stream})
            assert completed.status_code == 200, completed.text
            assert not stream or "data: [DONE]" in completed.text
            _no_leak(completed, *world.alice_chunks)
            for route, body in (("/v1/ask", ask), ("/v1/chat/completions", chat)):
                narrowed = {**body, "stream": stream, "collections": ["alice-private"]}
                refused = bob.post(route, json=narrowed)
                assert refused.status_code == 404, refused.text
                _no_leak(refused)
        nothing = bob.post("/v1/ask", json={**ask, "collections": ["bob-private"]})
        assert nothing.status_code == 200  # his own collection answers
    prompts = world.prompts_since(before)
    assert len(world.stub.bodies) - before == 5  # every answer reached the model
    assert not leaked(prompts, ALICE_MARKERS), "alice's passage reached the model"


@pytest.mark.parametrize("who", CREDENTIALS)
def test_bob_cannot_reach_alices_conversation(world: World, who: str) -> None:
    conversation = world.alice_conversation
    with world.api(who) as bob:
        listed = bob.get("/v1/conversations")
        assert listed.status_code == 200
        _no_leak(listed, conversation)
        _same_404(bob, "GET", "/v1/conversations/{}", conversation)
        _same_404(bob, "DELETE", "/v1/conversations/{}", conversation)
        fake = uuid.uuid4().hex
        for stream in (False, True):
            refused, unknown = (
                bob.post(
                    "/v1/ask",
                    json={"question": "and then?", "conversation_id": c, "stream": stream},
                )
                for c in (conversation, fake)
            )
            assert refused.status_code == 404, refused.text
            assert _body(refused).replace(conversation, "ID") == _body(unknown).replace(fake, "ID")
            _no_leak(refused)


@pytest.mark.parametrize("who", CREDENTIALS)
def test_bob_cannot_reach_alices_job(world: World, who: str) -> None:
    job = world.alice_job
    with world.api(who) as bob:
        listed = bob.get("/v1/jobs")
        assert listed.status_code == 200
        _no_leak(listed, job)
        for method, path in (
            ("GET", "/v1/jobs/{}"),
            ("GET", "/v1/jobs/{}/events"),
            ("GET", "/v1/jobs/{}/results"),
            ("GET", "/v1/jobs/{}/results?format=csv"),
            ("POST", "/v1/jobs/{}/cancel"),
        ):
            _same_404(bob, method, path, job)


@pytest.mark.parametrize("who", CREDENTIALS)
def test_bob_cannot_delete_alices_documents(world: World, who: str) -> None:
    with world.api(who) as bob:
        _same_404(bob, "DELETE", "/v1/documents/{}", world.vault_doc)
        _same_404(bob, "DELETE", "/v1/documents/{}", world.vault_doc[:8])  # a unique prefix
        _same_404(bob, "DELETE", "/v1/documents/{}", world.alice_docs["lens-00.md"])
        shared = bob.delete(f"/v1/documents/{world.shared_doc}")
        assert shared.status_code == 403  # he reads it (viewer), may not change it


@pytest.mark.parametrize("who", CREDENTIALS)
def test_bob_cannot_upload_into_alices_collection(world: World, who: str) -> None:
    evil = {"files": ("evil.md", b"# Evil\n\nThe vault code is 0000.\n", "text/markdown")}
    with world.api(who) as bob:
        for collection in ("alice-private", world.alice_collection):
            upload = bob.post("/v1/documents", params={"collection": collection}, files=evil)
            assert upload.status_code == 404, upload.text
            as_job = bob.post(
                "/v1/jobs", data={"kind": "ingest", "collection": collection}, files=evil
            )
            assert as_job.status_code == 404, as_job.text
            batch = bob.post(
                "/v1/jobs",
                json={
                    "kind": "batch",
                    "questions": [{"question": VAULT_QUESTION}],
                    "collections": [collection],
                },
            )
            assert batch.status_code == 404, batch.text
        viewer = bob.post("/v1/documents", params={"collection": "shared"}, files=evil)
        assert viewer.status_code == 403
    everything = world.service.documents(caller=world.users["root"])
    assert "evil.md" not in {d.name for d in everything}


def test_bob_can_upload_into_his_own_collection(world: World) -> None:
    """The control of the refusals above: the same upload, to bob-private, is taken."""
    mine = {"files": ("tide.md", b"# Tides\n\nHigh tide is at six.\n", "text/markdown")}
    with world.api("bob-key") as bob:
        upload = bob.post("/v1/documents", params={"collection": "bob-private"}, files=mine)
        assert upload.status_code == 202, upload.text
        assert wait_for_job(bob, upload.json()["id"])["state"] == "done"
        assert "tide.md" in {d["title"] for d in bob.get("/v1/documents").json()["documents"]}


def test_bob_batch_results_citations_and_feedback_hold_nothing_of_alices(world: World) -> None:
    before = len(world.stub.bodies)
    questions = [VAULT_QUESTION, "Tell me the vault code.", "What does the canary say?"]
    with world.api("bob-key") as bob:
        rows = [{"question": q} for q in questions]
        job = bob.post("/v1/jobs", json={"kind": "batch", "questions": rows})
        assert job.status_code == 202, job.text
        done = wait_for_job(bob, job.json()["id"])
        assert done["state"] == "done" and done["done"] == 3
        for fmt in ("jsonl", "csv"):
            rows = bob.get(f"/v1/jobs/{done['id']}/results", params={"format": fmt})
            assert rows.status_code == 200 and "vault" in rows.text.lower()
            _no_leak(rows, *world.alice_chunks)
    assert not leaked(world.prompts_since(before), ALICE_MARKERS)
    bob_principal = world.users["bob"]
    assert world.service.chunks(world.alice_chunks, caller=bob_principal) == []
    assert world.service.chunks(world.alice_chunks, caller=world.users["alice"])  # real ids
    for message in world.alice_messages:
        with pytest.raises(RagError):
            world.service.set_feedback(message, 0, caller=bob_principal)


def test_a_key_restricted_to_shared_sees_shared_only(world: World) -> None:
    with world.api("alice-shared-key") as keyed:
        listed = keyed.get("/v1/documents")
        assert [d["id"] for d in listed.json()["documents"]] == [world.shared_doc]
        hits = keyed.post("/v1/search", json={"query": VAULT_QUESTION, "k": 20})
        assert {h["title"] for h in hits.json()["hits"]} == {"museum.md"}
        _no_leak(hits, *BOB_MARKERS)
        answered = keyed.post("/v1/ask", json={"question": VAULT_QUESTION})
        assert answered.status_code == 200
        _no_leak(answered, *BOB_MARKERS)
        refused = keyed.get("/v1/documents", params={"collection": "alice-private"})
        assert refused.status_code == 404
        upload = keyed.post(
            "/v1/documents",
            params={"collection": "alice-private"},
            files={"files": ("x.md", b"# X\n\nx\n", "text/markdown")},
        )
        assert upload.status_code == 404
        _same_404(keyed, "DELETE", "/v1/documents/{}", world.vault_doc)


def test_a_read_only_key_reads_but_cannot_upload_or_delete(world: World) -> None:
    evil = {"files": ("ro.md", b"# RO\n\nread only.\n", "text/markdown")}
    with world.api("alice-ro-key") as keyed:
        listed = keyed.get("/v1/documents")
        assert world.vault_doc in {d["id"] for d in listed.json()["documents"]}
        upload = keyed.post("/v1/documents", params={"collection": "alice-private"}, files=evil)
        assert upload.status_code == 403, upload.text
        as_job = keyed.post(
            "/v1/jobs", data={"kind": "ingest", "collection": "alice-private"}, files=evil
        )
        assert as_job.status_code == 403, as_job.text
        deleted = keyed.delete(f"/v1/documents/{world.vault_doc}")
        assert deleted.status_code == 403, deleted.text
    assert world.vault_doc in {d.id for d in world.service.documents(caller=world.users["alice"])}


@pytest.mark.parametrize("who", ["vera-key", "vera-cookie"])
def test_a_viewer_reads_shared_documents_and_changes_nothing(world: World, who: str) -> None:
    evil = {"files": ("vera.md", b"# Vera\n\nviewer.\n", "text/markdown")}
    with world.api(who) as vera:
        listed = vera.get("/v1/documents")
        assert [d["id"] for d in listed.json()["documents"]] == [world.shared_doc]
        upload = vera.post("/v1/documents", params={"collection": "shared"}, files=evil)
        assert upload.status_code == 403, upload.text
        deleted = vera.delete(f"/v1/documents/{world.shared_doc}")
        assert deleted.status_code == 403, deleted.text
        _same_404(vera, "DELETE", "/v1/documents/{}", world.vault_doc)


def test_nothing_of_alices_was_deleted_or_changed(world: World) -> None:
    with world.api("alice-key") as alice:
        docs = {d["id"] for d in alice.get("/v1/documents").json()["documents"]}
        assert set(world.alice_docs.values()) <= docs and world.shared_doc in docs
        read = alice.get(f"/v1/conversations/{world.alice_conversation}")
        assert read.status_code == 200
        assert [m["id"] for m in read.json()["messages"]] == world.alice_messages
        assert alice.get(f"/v1/jobs/{world.alice_job}").json()["state"] == "done"
        hits = alice.post("/v1/search", json={"query": VAULT_QUESTION, "k": 3})
        assert leaked(hits.text, ALICE_MARKERS)
    messages = world.service.messages(world.alice_conversation, caller=world.users["alice"])
    assert [m.feedback for m in messages] == [None, None]


# -- authentication ---------------------------------------------------------------------


def _v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every operation under /v1 the API documents, path parameters filled in."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/v1"):
            filled = re.sub(r"\{[^}]+\}", "0123456789abcdef", path)
            routes += [(method.upper(), filled) for method in operations]
    return routes


def test_every_v1_route_answers_401_without_valid_credentials(world: World) -> None:
    routes = _v1_routes(world.app)
    assert len(routes) == 18 and ("GET", "/v1/usage") in routes
    bad = [
        {},
        {"Authorization": "Bearer rck_0123456789_" + "A" * 43},  # well formed, unknown
        {"Authorization": "Bearer " + world.keys["bob"][:-1]},  # cut short
        {"Authorization": "Basic Ym9iOmJvYi1wYXNzd29yZA=="},  # bob:bob-password
        {"Cookie": "ragchat_session=garbage"},
    ]
    with httpx.Client(base_url=world.api_url, timeout=30) as anyone:
        for method, path in routes:
            for headers in bad:
                answer = anyone.request(method, path, headers=headers, json={})
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                _no_leak(answer)
        assert anyone.get("/health").status_code == 200  # outside /v1: open
    with world.api("bob-key") as bob:  # the control: the same routes know bob's key
        assert bob.get("/v1/documents").status_code == 200


@pytest.mark.parametrize("part", ["payload", "timestamp", "signature"])
def test_a_tampered_cookie_answers_401(world: World, part: str) -> None:
    cookie = world.cookies["bob"]
    payload, stamp, signature = cookie.split(".")
    at = {
        "payload": len(payload) // 2,
        "timestamp": len(payload) + 1 + len(stamp) // 2,
        "signature": len(payload) + len(stamp) + 2 + len(signature) // 2,
    }[part]
    with client(world.api_url, cookie=flipped(cookie, at)) as forged:
        answer = forged.get("/v1/documents")
    assert answer.status_code == 401, answer.text
    with world.api("bob-cookie") as bob:
        assert bob.get("/v1/documents").status_code == 200


def test_a_disabled_users_key_and_cookie_answer_401(world: World) -> None:
    with world.api("dora-key") as by_key, world.api("dora-cookie") as by_cookie:
        assert by_key.get("/v1/documents").status_code == 200
        assert by_cookie.get("/v1/documents").status_code == 200
        world.service.access.set_disabled(world.users["root"], "dora")
        assert by_key.get("/v1/documents").status_code == 401
        assert by_cookie.get("/v1/documents").status_code == 401
        assert sign_in(world.url, "dora", PASSWORDS["dora"]).headers["location"] == (
            "/?signin=failed"
        )


def test_a_revoked_key_answers_401(world: World) -> None:
    with world.api("bob-spare-key") as keyed:
        assert keyed.get("/v1/conversations").status_code == 200
        world.service.access.revoke_key(world.users["bob"], world.key_ids["bob-spare"])
        answer = keyed.get("/v1/conversations")
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]["message"]


# -- retrieval with a filter -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_a_filtered_search_still_returns_k_hits(world: World, mode: str) -> None:
    root = world.users["root"]
    nearest = world.service.search(LENS_QUERY, caller=root, k=NEAR_DUPLICATES, mode=mode)
    assert {h.title for h in nearest} <= set(world.alice_docs)  # alice's notes rank first
    with world.api("bob-key") as bob:
        hits = bob.post("/v1/search", json={"query": LENS_QUERY, "k": 5, "mode": mode})
    found = hits.json()["hits"]
    assert len(found) == 5, found
    assert not {h["title"] for h in found} & set(world.alice_docs)


# -- rate limits, lockout and expiry: an instance of their own ---------------------------


@dataclass
class Limited:
    url: str
    keys: dict[str, str]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    """RAG_RATE_REQUESTS_PER_MINUTE=5, RAG_SIGNIN_MAX_FAILURES=3, sessions of one second."""
    settings = _settings(
        tmp_path_factory.mktemp("limited"),
        rate_requests_per_minute=5,
        rate_key_requests_per_minute=60,
        signin_max_failures=3,
        session_hours=1 / 3600,
    )
    service = build_service(settings)
    access = service.access
    keys = {}
    for name in ("rita", "sam", "lou"):
        access.add_user(access.operator(), name, "member", f"{name}-password")
        keys[name] = access.create_key(access.as_user(name))[1]
    app = Starlette(routes=[mount(create_api(lambda: service)), *auth_routes(lambda: service)])
    try:
        with served(app) as url:
            yield Limited(url, keys)
    finally:
        service.close()


def test_the_sixth_request_in_a_minute_answers_429_with_retry_after(limited: Limited) -> None:
    with client(f"{limited.url}/api", key=limited.keys["rita"]) as rita:
        for _ in range(5):
            assert rita.get("/v1/conversations").status_code == 200
        sixth = rita.get("/v1/conversations")
    assert sixth.status_code == 429 and sixth.json()["error"]["type"] == "rate_limited"
    retry = sixth.headers["retry-after"]
    assert retry.isdigit() and 1 <= int(retry) <= 60
    with client(f"{limited.url}/api", key=limited.keys["lou"]) as lou:
        assert lou.get("/v1/conversations").status_code == 200  # per user


def test_wrong_passwords_lock_the_account_even_for_the_right_one(limited: Limited) -> None:
    for _ in range(3):
        wrong = sign_in(limited.url, "lou", "not-lous-password")
        assert wrong.headers["location"] == "/?signin=failed"
    locked = sign_in(limited.url, "lou", "lou-password")
    assert locked.status_code == 303 and locked.headers["location"] == "/?signin=locked"
    assert "set-cookie" not in locked.headers
    other = sign_in(limited.url, "rita", "rita-password")  # per account, not per address
    assert other.headers["location"] == "/" and "set-cookie" in other.headers


def test_an_expired_cookie_answers_401(limited: Limited) -> None:
    cookie = session_cookie(limited.url, "sam", "sam-password")
    with client(f"{limited.url}/api", cookie=cookie) as sam:
        assert sam.get("/v1/models").status_code == 200
        time.sleep(2.2)  # RAG_SESSION_HOURS is one second here
        expired = sam.get("/v1/models")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


# -- the command line -----------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str


CLI_READS = {
    "docs list": ["docs", "list"],
    "docs list --json": ["docs", "list", "--json"],
    "search": ["search", VAULT_QUESTION, "-k", "20"],
    "search --json keyword": [
        "search",
        "vault code canary",
        "-k",
        "20",
        "--json",
        "--mode",
        "keyword",
    ],
    "ask": ["ask", VAULT_QUESTION],
    "ask --json": ["ask", VAULT_QUESTION, "--json"],
    "ask --collection alice-private": ["ask", VAULT_QUESTION, "--collection", "alice-private"],
    "chat": ["chat"],
    "batch": ["batch", "{questions}", "--json", "-o", "{out}"],
    "collections list": ["collections", "list", "--json"],
    "keys list": ["keys", "list", "--json"],
}
CLI_ADMIN = {
    "users list": ["users", "list"],
    "users set-role": ["users", "set-role", "bob", "admin"],
    "audit verify": ["audit", "verify"],
    "audit export": ["audit", "export"],
    "keys create for alice": ["keys", "create", "--user", "alice"],
    "collections share": ["collections", "share", "alice-private", "--user", "bob"],
    "collections delete": ["collections", "delete", "alice-private", "--yes"],
    "docs delete": ["docs", "delete", "{vault}"],
    "ingest into alice-private": ["ingest", "{evil}", "--collection", "alice-private"],
}


@pytest.fixture(scope="module")
def cli(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every command above as ``ragchat --user bob`` (and ``eval``), plus controls."""
    folder = tmp_path_factory.mktemp("cli")
    questions = folder / "questions.jsonl"
    row = {"question": VAULT_QUESTION, "sources": ["vault.md"], "passage": "vault code"}
    questions.write_text(json.dumps(row) + "\n")
    # A labelled row naming alice's file and a passage of her canary: for ``eval`` an
    # oracle (a hit tells bob the text is there) unless it measures only what bob may read.
    probe = folder / "probe.jsonl"
    probe.write_text(
        json.dumps({"question": VAULT_QUESTION, "sources": ["vault.md"], "passage": "WOMBAT-4471"})
        + "\n"
    )
    evil = folder / "evil.md"
    evil.write_text("# Evil\n\nThe vault code is 0000.\n")
    fill = {
        "{questions}": str(questions),
        "{out}": str(folder / "answers.jsonl"),
        "{vault}": world.vault_doc,
        "{evil}": str(evil),
    }
    env = cli_env(
        world.data_dir,
        RAG_AUTH="password",
        RAG_SESSION_SECRET=SECRET,
        RAG_LLM_BASE_URL=world.stub.base_url,
        RAG_MIN_RELEVANCE="0",
        RAG_RELEVANCE_GAP="1",
    )
    reads = {
        name: (["--user", "bob", *(fill.get(a, a) for a in args)], "")
        for name, args in CLI_READS.items()
    }
    reads["chat"] = (reads["chat"][0], f"{VAULT_QUESTION}\n/quit\n")
    reads["eval"] = (["--user", "bob", "eval", str(probe), "--json"], "")
    refusals = {
        name: (["--user", "bob", *(fill.get(a, a) for a in args)], "")
        for name, args in CLI_ADMIN.items()
    }
    refusals["chat --conversation alice's"] = (
        ["--user", "bob", "chat", "--conversation", world.alice_conversation],
        "",
    )
    refusals["control: search as the operator"] = (["search", VAULT_QUESTION, "-k", "3"], "")
    refusals["control: docs list as alice"] = (["--user", "alice", "docs", "list"], "")
    refusals["control: eval as the operator"] = (["eval", str(probe), "--json"], "")
    # Two processes (two cores), each running its commands through rag.cli.main in turn.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda batch: ragchat_many(env, batch), [reads, refusals]))
    runs = {name: Run(**r) for results, _ in done for name, r in results.items()}
    logs = "".join(log for _, log in done)
    runs["logs"] = Run(0, "", logs)
    runs["batch output"] = Run(0, Path(fill["{out}"]).read_text(), "")
    return runs


@pytest.mark.parametrize("name", [*CLI_READS, "batch output", "logs"])
def test_cli_reads_as_bob_never_print_alices_canary(cli: dict[str, Run], name: str) -> None:
    run = cli[name]
    expected = 2 if name == "ask --collection alice-private" else 0
    assert run.code == expected, run.err
    assert not leaked(run.out + run.err, ALICE_MARKERS)
    assert "vault.md" not in run.out and "alice-private" not in run.out
    if name == "chat":
        assert "ragchat> " in run.out and "Backups" in run.out  # it did answer


def test_cli_controls_see_alices_canary(cli: dict[str, Run]) -> None:
    search = cli["control: search as the operator"]
    assert search.code == 0 and leaked(search.out, ALICE_MARKERS)
    docs = cli["control: docs list as alice"]
    assert docs.code == 0 and "vault.md" in docs.out


def test_cli_batch_as_bob_finds_none_of_alices_sources(cli: dict[str, Run]) -> None:
    summary = json.loads(cli["batch"].out)
    assert summary["state"] == "done" and summary["metrics"]["hit@5"] == 0.0


def test_cli_eval_as_bob_measures_only_what_bob_may_read(cli: dict[str, Run]) -> None:
    """``ragchat --user bob eval`` cannot confirm alice's canary (it once searched everything)."""
    control = cli["control: eval as the operator"]
    assert control.code == 0, control.err
    assert json.loads(control.out)["hit@5"] == 1.0  # the probe finds it for the operator
    as_bob = cli["eval"]
    assert as_bob.code == 0, as_bob.err
    assert json.loads(as_bob.out)["hit@5"] == 0.0, "bob confirmed alice's canary"


@pytest.mark.parametrize("name", [*CLI_ADMIN, "chat --conversation alice's"])
def test_cli_admin_and_foreign_commands_refuse_bob_with_exit_2(
    world: World, cli: dict[str, Run], name: str
) -> None:
    run = cli[name]
    assert run.code == 2, (run.out, run.err)
    assert run.err.startswith("error: ")
    assert not leaked(run.out + run.err, ALICE_MARKERS)


def test_cli_attacks_changed_nothing(world: World, cli: dict[str, Run]) -> None:
    access = world.service.access
    assert access.accounts.user("bob").role == "member"
    alice_private = access.accounts.find_collection("alice-private")
    assert alice_private is not None and alice_private.members == ()
    assert sorted(k.name for k in access.keys(world.users["alice"])) == [
        "alice",
        "alice-ro",
        "alice-shared",
    ]
    docs = {d.id for d in world.service.documents(caller=world.users["alice"])}
    assert set(world.alice_docs.values()) <= docs
    assert "evil.md" not in {d.name for d in world.service.documents(caller=world.users["root"])}


# -- the audit trail --------------------------------------------------------------------


def test_audit_verifies_after_the_attacks_and_names_a_tampered_record(
    world: World, cli: dict[str, Run]
) -> None:
    env = cli_env(world.data_dir, RAG_AUTH="password", RAG_SESSION_SECRET=SECRET)
    intact = ragchat(env, "audit", "verify")
    assert intact.returncode == 0 and "intact" in intact.stdout, intact.stdout + intact.stderr
    bob_id = world.users["bob"].user_id
    with sqlite3.connect(world.data_dir / "audit.sqlite") as db:
        (seq,) = db.execute(
            "SELECT MIN(seq) FROM records WHERE actor = ? AND action = 'question'", (bob_id,)
        ).fetchone()
        assert seq is not None  # bob's questions were recorded
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE records SET actor = 'nobody' WHERE seq = ?", (seq,))
        for (trigger,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'records'"
        ).fetchall():
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("UPDATE records SET actor = 'nobody' WHERE seq = ?", (seq,))
    broken = ragchat(env, "audit", "verify")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"record {seq}" in broken.stdout
