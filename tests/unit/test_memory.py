from __future__ import annotations

from pathlib import Path

import pytest

from rag.context import Turn
from rag.memory import ConversationNotFoundError, ConversationStore


def test_conversations_persist_and_stay_apart(tmp_path: Path):
    path = tmp_path / "conv.db"
    store = ConversationStore(path)
    a, b = store.create("first", owner="local"), store.create("second", owner="local")
    store.add(a.id, "user", "question a")
    store.add(a.id, "assistant", "answer a", {"citations": [{"n": 1, "chunk_id": "x"}]})
    store.add(b.id, "user", "question b")
    store.close()

    reopened = ConversationStore(path)
    assert reopened.history(a.id) == [Turn("user", "question a"), Turn("assistant", "answer a")]
    assert reopened.history(b.id) == []  # a question without an answer is not context
    assert reopened.messages(a.id)[1].meta["citations"][0]["chunk_id"] == "x"
    assert [c.title for c in reopened.conversations(owner="local")] == ["second", "first"]


def test_rename_delete_and_feedback(tmp_path: Path):
    store = ConversationStore(tmp_path / "conv.db")
    conv = store.create(owner="local")
    msg = store.add(conv.id, "assistant", "an answer")
    store.set_feedback(msg.id, 1, owner="local")
    assert store.messages(conv.id)[0].feedback == 1
    store.rename(conv.id, "Renamed")
    assert store.get(conv.id).title == "Renamed"
    store.delete(conv.id)
    with pytest.raises(ConversationNotFoundError):
        store.get(conv.id)
    with pytest.raises(ConversationNotFoundError):
        store.add(conv.id, "user", "late")
    with pytest.raises(ValueError, match="feedback"):
        store.set_feedback(msg.id, 5, owner="local")
