"""The web chat shows when an answer was cut and which model wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rag.memory import ConversationStore

ROOT = Path(__file__).resolve().parents[2]
CUT = "model endpoint http://127.0.0.1:9/v1 failed (stream_dropped): the connection closed"


def test_a_cut_answer_shows_its_note_and_the_model_that_wrote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    memory = ConversationStore(tmp_path / "conversations.db")
    conversation = memory.create("Backups", owner="local")
    memory.add(conversation.id, "user", "When do backups run?")
    meta = {"model": "fallback-model", "prompt_version": "answer@v3", "cut": CUT}
    memory.add(conversation.id, "assistant", "Backups run nightly", meta)
    memory.add(conversation.id, "user", "And restores?")
    memory.add(conversation.id, "assistant", "Restores are manual.", {"model": "m", "cut": None})
    memory.close()
    monkeypatch.setenv("RAGCHAT_TEST_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "tests" / "ui_app.py"), default_timeout=30).run()
    at.button(key=f"conv-{conversation.id}").click().run()
    assert not at.exception
    notes = [w.value for w in at.warning]
    assert len(notes) == 1  # only under the answer that was cut
    assert "answer was cut" in notes[0] and "stream\\_dropped" in notes[0]
    assert any(c.value.startswith("fallback\\-model") for c in at.caption), at.caption
