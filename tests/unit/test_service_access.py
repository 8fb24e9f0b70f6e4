"""Isolation in the service layer: what one user may read, change and see of another's."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.access.principal import Principal
from rag.errors import (
    DocumentNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    RagError,
    RateLimitedError,
)
from rag.memory import ConversationNotFoundError
from rag.service.core import RagService
from tests.unit.test_service import answer, service_in

CANARY = "Vault combination canary 7f3a9 opens the backups vault."


@pytest.fixture
def world(tmp_path: Path) -> tuple[RagService, Principal, Principal]:
    """A service with sign-in on: alice keeps a canary in her own collection; bob is a member."""
    service, _ = service_in(tmp_path, ["The vault opens with the code [1]."] * 20, auth="password")
    access = service.access
    root = access.operator()
    access.add_user(root, "alice", "member", "alice-password")
    access.add_user(root, "bob", "member", "bob-password")
    alice, bob = access.as_user("alice"), access.as_user("bob")
    access.create_collection(alice, "alice-private")
    (result,) = service.add_uploads(
        [("vault.md", f"# Vault\n\n{CANARY}\n".encode())], caller=alice, collection="alice-private"
    )
    assert result.status == "added"
    return service, alice, bob


def _canary_doc(service: RagService, alice: Principal) -> str:
    (doc,) = [d for d in service.documents(caller=alice) if d.name == "vault.md"]
    return doc.id


def test_documents_search_and_chunks_of_a_private_collection_stay_private(world) -> None:
    service, alice, bob = world
    doc_id = _canary_doc(service, alice)
    assert "vault.md" not in {d.name for d in service.documents(caller=bob)}
    for hit in service.search("vault combination canary", caller=bob, k=10):
        assert "7f3a9" not in hit.text
    assert any("7f3a9" in h.text for h in service.search("vault canary", caller=alice, k=10))
    with pytest.raises(DocumentNotFoundError):
        service.document(doc_id, caller=bob)
    with pytest.raises(DocumentNotFoundError):
        service.delete_document(doc_id, caller=bob)
    chunk_ids = [h.chunk_id for h in service.search("vault canary", caller=alice, k=10)]
    assert service.chunks(chunk_ids, caller=alice)  # the ids are real
    assert all("7f3a9" not in c.page_content for c in service.chunks(chunk_ids, caller=bob))
    with pytest.raises(NotFoundError):
        service.ingest([], caller=bob, collection="alice-private")
    assert _canary_doc(service, alice) == doc_id  # nothing of alice's was lost


def test_answers_never_cite_what_the_asker_may_not_read(world) -> None:
    service, alice, bob = world
    _, bobs = answer(service.ask("What opens the vault? canary", caller=bob))
    assert all("7f3a9" not in s.text for s in bobs.sources)
    _, alices = answer(service.ask("What opens the vault? canary", caller=alice))
    assert any("7f3a9" in c.source.text for c in alices.citations)
    questions = [
        r for r in service.access.audit_records(service.access.operator()) if r.action == "question"
    ]
    assert [q.actor for q in questions] == [bob.user_id, alice.user_id]
    assert questions[1].detail["cited"] and "question" not in questions[1].detail  # no text kept


def test_sharing_gives_read_access_and_unsharing_takes_it_back(world) -> None:
    service, alice, bob = world
    doc_id = _canary_doc(service, alice)
    service.access.share(alice, "alice-private", "user", "bob", "viewer")
    assert service.document(doc_id, caller=bob).name == "vault.md"
    with pytest.raises(PermissionDeniedError):
        service.delete_document(doc_id, caller=bob)  # a viewer's share: read only
    with pytest.raises(PermissionDeniedError):
        service.access.share(bob, "alice-private", "user", "bob", "editor")  # not the owner
    service.access.unshare(alice, "alice-private", "user", "bob")
    with pytest.raises(DocumentNotFoundError):
        service.document(doc_id, caller=bob)


def test_conversations_and_feedback_belong_to_their_user(world) -> None:
    service, alice, bob = world
    conversation, question = service.store_question("What opens the vault?", caller=alice)
    answer(service.retry(conversation, question, caller=alice))
    (reply,) = [m for m in service.messages(conversation, caller=alice) if m.role == "assistant"]
    assert service.conversations(caller=bob) == []
    for attempt in (
        lambda: service.messages(conversation, caller=bob),
        lambda: service.exchanges(conversation, caller=bob),
        lambda: service.rename_conversation(conversation, "mine", caller=bob),
        lambda: service.delete_conversation(conversation, caller=bob),
        lambda: service.ask("and then?", caller=bob, conversation_id=conversation),
        lambda: service.retry(conversation, question, caller=bob),
        lambda: service.store_question("more?", caller=bob, conversation_id=conversation),
    ):
        with pytest.raises(ConversationNotFoundError):
            attempt()
    with pytest.raises(RagError):
        service.set_feedback(reply.id, 0, caller=bob)
    assert service.messages(conversation, caller=alice)[1].feedback is None
    assert [c.id for c in service.conversations(caller=alice)] == [conversation]


def test_viewers_and_read_only_keys_change_nothing(world) -> None:
    service, alice, _ = world
    access = service.access
    access.add_user(access.operator(), "vera", "viewer", "vera-password")
    vera = access.as_user("vera")
    access.share(alice, "alice-private", "user", "vera", "editor")
    with pytest.raises(PermissionDeniedError):
        service.add_uploads([("x.md", b"# X\n\nx\n")], caller=vera, collection="alice-private")
    _, secret = access.create_key(alice, read_only=True)
    keyed = access.api_key(secret)
    with pytest.raises(PermissionDeniedError):
        service.delete_document(_canary_doc(service, alice), caller=keyed)
    assert access.editable(keyed) == [] and access.editable(vera) == []


def test_a_key_limited_to_a_collection_reads_only_that_one(world) -> None:
    service, alice, _ = world
    access = service.access
    access.create_collection(alice, "alice-public")
    service.add_uploads(
        [("open.md", b"# Open\n\nThe canteen opens at noon.\n")],
        caller=alice,
        collection="alice-public",
    )
    _, secret = access.create_key(alice, collections=["alice-public"])
    keyed = access.api_key(secret)
    assert {d.name for d in service.documents(caller=keyed)} == {"open.md"}
    with pytest.raises(NotFoundError):
        service.documents(caller=keyed, collections=["alice-private"])


def test_model_tokens_per_day_are_counted_per_user(tmp_path: Path) -> None:
    service, _ = service_in(tmp_path, auth="password", rate_tokens_per_day=1)
    access = service.access
    access.add_user(access.operator(), "carol", "member", "carol-password")
    carol = access.as_user("carol")
    access.share(access.operator(), "default", "everyone", "*", "viewer")  # what the fake holds
    _, first = answer(service.ask("When do backups run?", caller=carol, mode="keyword"))
    assert first.tokens["prompt"] > 1  # more than the day's budget
    with pytest.raises(RateLimitedError) as refused:
        service.ask("And restores?", caller=carol)
    assert refused.value.retry_after_s >= 1


def test_a_proxy_header_is_believed_from_trusted_proxies_only(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from rag.api.app import create_api, serve_api
    from rag.errors import AuthenticationError
    from tests.api_fakes import FakeJobs

    service, _ = service_in(tmp_path, auth="header", trusted_proxies=["10.0.0.0/24"])
    access = service.access
    headers = {"X-Forwarded-User": "carol", "X-Forwarded-Groups": "staff, ops"}
    carol = access.from_proxy(headers, "10.0.0.7")
    assert carol is not None and carol.name == "carol" and carol.groups == {"staff", "ops"}
    assert str(carol.role) == "member"  # RAG_AUTH_DEFAULT_ROLE at the first sign-in
    assert access.from_proxy({}, "10.0.0.7") is None
    with pytest.raises(AuthenticationError, match="trusted proxy"):
        access.from_proxy(headers, "192.0.2.9")
    app = serve_api(create_api(lambda: service, FakeJobs))
    via_proxy = TestClient(app, client=("10.0.0.7", 40000))
    assert via_proxy.get("/api/v1/documents", headers=headers).status_code == 200
    assert via_proxy.get("/api/v1/documents").status_code == 401  # no header: nobody
    direct = TestClient(app, client=("192.0.2.9", 40000))
    assert direct.get("/api/v1/documents", headers=headers).status_code == 401
