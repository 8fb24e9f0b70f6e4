"""The chat page keeps every question with its outcome: failed, stopped, retried, regenerated."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rag.memory import FAILED, STOPPED, ConversationStore
from tests.ui_fakes import fake_resources
from ui.chat import copy_text, when

ROOT = Path(__file__).resolve().parents[2]


def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str = "ok") -> AppTest:
    monkeypatch.setenv("RAGCHAT_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("RAGCHAT_TEST_MODE", mode)
    monkeypatch.setenv("RAGCHAT_TEST_PAGE", "chat")
    return AppTest.from_file(str(ROOT / "tests" / "ui_app.py"), default_timeout=30).run()


def test_a_failed_question_is_kept_with_its_error_and_a_retry(tmp_path, monkeypatch):
    at = app(tmp_path, monkeypatch, mode="down")
    at.chat_input[0].set_value("What is max_connections?").run()
    assert not at.exception
    memory = fake_resources(str(tmp_path), "down").memory
    (conv,) = memory.conversations(owner="local")  # listed: it holds a question
    assert conv.title == "What is max_connections?"
    (exchange,) = memory.exchanges(conv.id)
    assert exchange.answer is not None and exchange.answer.outcome == FAILED
    assert "cannot connect" in (exchange.answer.error or "")
    assert any("cannot connect" in e.value for e in at.error)
    assert at.button(key=f"retry-{exchange.question.id}").label == "Retry"
    assert [m.name for m in at.chat_message] == ["user", "assistant"]


def test_retry_answers_the_failed_question_in_place(tmp_path, monkeypatch):
    memory = fake_resources(str(tmp_path)).memory
    conv = memory.create(owner="local")
    asked = memory.ask(conv.id, "What is max_connections?")
    memory.answer(conv.id, asked.id, "", outcome=FAILED, error="the model timed out")
    at = app(tmp_path, monkeypatch)
    at.button(key=f"conv-{conv.id}").click().run()
    assert any("timed out" in e.value for e in at.error)
    at.button(key=f"retry-{asked.id}").click().run()
    assert not at.exception and not at.error
    (exchange,) = memory.exchanges(conv.id)  # the same question, now answered
    assert exchange.answer is not None and exchange.answer.outcome == "answered"
    assert "The default is 100" in "\n".join(m.value for m in at.markdown)


def test_regenerate_replaces_the_last_answer(tmp_path, monkeypatch):
    at = app(tmp_path, monkeypatch)
    at.chat_input[0].set_value("What is max_connections?").run()
    memory = fake_resources(str(tmp_path)).memory
    (conv,) = memory.conversations(owner="local")
    (first,) = memory.exchanges(conv.id)
    assert first.answer is not None
    at.button(key=f"regenerate-{first.question.id}").click().run()
    assert not at.exception
    (again,) = memory.exchanges(conv.id)
    assert again.answer is not None and again.answer.id != first.answer.id
    assert [m.name for m in at.chat_message] == ["user", "assistant"]  # the old one is gone


def test_a_stopped_answer_shows_its_note_and_copies_with_sources(tmp_path, monkeypatch):
    memory = fake_resources(str(tmp_path)).memory
    conv = memory.create(owner="local")
    asked = memory.ask(conv.id, "When do backups run?")
    cite = {"n": 1, "source": "/x/ops.md", "page": None, "text": "Backups run nightly."}
    memory.answer(conv.id, asked.id, "Backups run [1]", {"citations": [cite]}, outcome=STOPPED)
    at = app(tmp_path, monkeypatch)
    at.button(key=f"conv-{conv.id}").click().run()
    assert any("You stopped this answer" in i.value for i in at.info)
    assert any(c.value == "Backups run [1]\n\nSources:\n[1] ops.md" for c in at.code)


def test_sidebar_lists_only_conversations_with_questions_with_dates(tmp_path, monkeypatch):
    memory = fake_resources(str(tmp_path)).memory
    memory.create(owner="local")  # empty: never listed
    kept = memory.create(owner="local")
    first = memory.ask(kept.id, "First question about backups")
    memory.ask(kept.id, "Second question about restores")
    at = app(tmp_path, monkeypatch)
    buttons = [b for b in at.sidebar.button if b.key and b.key.startswith("conv-")]
    assert [b.key for b in buttons] == [f"conv-{kept.id}"]
    assert "First question about backups" in buttons[0].label
    assert "Started today" in buttons[0].help and "last activity today" in buttons[0].help
    assert any(c.value.startswith("today ") for c in at.sidebar.caption)
    memory.delete_question(kept.id, first.id)  # the title follows the first question kept
    assert memory.get(kept.id).title == "Second question about restores"


def test_dates_read_as_today_yesterday_or_a_date():
    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    assert when("2026-03-04T09:05:00+00:00", UTC, now) == "today 09:05"
    assert when("2026-03-03T23:00:00+00:00", UTC, now) == "yesterday 23:00"
    assert when("2026-01-02T10:00:00+00:00", UTC, now) == "2 Jan 2026"


def test_copy_text_keeps_markers_and_lists_sources():
    cites = [{"n": 1, "title": "manual.pdf", "page": 5}, {"n": 2, "source": "/d/ops.md"}]
    assert copy_text("A [1] and B [2].", cites) == (
        "A [1] and B [2].\n\nSources:\n[1] manual.pdf, page 5\n[2] ops.md"
    )


def test_old_conversations_database_is_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL, "
        "created_at TEXT NOT NULL, updated_at TEXT NOT NULL);"
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT, "
        "role TEXT, content TEXT, created_at TEXT, meta TEXT NOT NULL DEFAULT '{}', "
        "feedback INTEGER);"
        "INSERT INTO conversations VALUES ('a', 'My pump notes', 't', 't'), "
        "('b', 'q one', 't', 't');"
        "INSERT INTO messages (conversation_id, role, content, created_at) VALUES "
        "('a', 'user', 'q', 't'), ('a', 'assistant', 'ans', 't'), ('b', 'user', 'q one', 't');"
    )
    db.commit()
    db.close()
    store = ConversationStore(path)
    (_question, answer) = store.messages("a")
    assert answer.outcome == "answered"  # old rows read as answered
    assert store.get("a").title == "My pump notes"  # a chosen name stays
    store.ask("b", "another")
    assert store.get("b").title == "q one"


def test_a_question_is_stored_when_asked_and_an_interrupted_answer_as_stopped(tmp_path):
    res = fake_resources(str(tmp_path))
    engine = res.service.engine(conversations=True)
    conv = res.memory.create(owner="local")
    stream = engine.ask_in(conv.id, "What is the default of max_connections?", within=None)
    pieces = iter(stream)
    (question,) = res.memory.messages(conv.id)  # stored before any answer
    assert question.content == "What is the default of max_connections?"
    first = next(pieces)
    stream.close()  # the reader leaves midway (Stop, or another click in the page)
    (exchange,) = res.memory.exchanges(conv.id)
    assert exchange.answer is not None and exchange.answer.outcome == STOPPED
    assert exchange.answer.content == first.strip()


def test_an_answer_from_the_cache_says_so(tmp_path, monkeypatch):
    at = app(tmp_path, monkeypatch, mode="cached")
    at.chat_input[0].set_value("What is max_connections?").run()
    assert not at.exception
    assert not any("From the cache" in c.value for c in at.caption)
    again = app(tmp_path, monkeypatch, mode="cached")  # another session: a new conversation
    again.chat_input[0].set_value("what is max_connections").run()
    assert not again.exception
    assert any("From the cache" in c.value for c in again.caption)
    assert any(c.value.startswith("from the cache") for c in again.caption)  # the details line
    assert "The default is 100" in "\n".join(m.value for m in again.markdown)
    memory = fake_resources(str(tmp_path), "cached").memory
    answers = [memory.exchanges(c.id)[0].answer for c in memory.conversations(owner="local")]
    assert sorted(bool(a and a.meta.get("cached")) for a in answers) == [False, True]
    assert len({a.content for a in answers if a is not None}) == 1
