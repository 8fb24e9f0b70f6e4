"""The Review page: the queue, a correction with its sources, right, and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from rag.review.store import RATED_DOWN, RIGHT, WEAK_CITATIONS, WRONG, Draft, ReviewItem
from tests.ui_fakes import fake_resources

ROOT = Path(__file__).resolve().parents[2]
CHUNK = f"{'a' * 16}-00000"  # "max_connections sets clients." in the fake index
HOSTILE = "Fine ![tracker](http://evil.example/t.png) <b>bold</b> [click](http://evil.example)"


def queued(folder: Path, question: str, answer: str = HOSTILE, **kw: Any) -> ReviewItem:
    service = fake_resources(str(folder)).service
    citation = {
        "n": 1, "source": str(folder / "manual.pdf"), "title": "manual.pdf", "page": 1,
        "chunk_id": CHUNK, "text": "max_connections sets clients.", "support": 0.1,
        "inferred": False, "flags": [],
    }  # fmt: skip
    draft = Draft(
        reasons=kw.get("reasons", (WEAK_CITATIONS, RATED_DOWN)), question=question,
        standalone=question, answer=answer, citations=[citation], collections=None,
        model="fake-model", prompt_version="answer@v3", asked_by="local", asked_by_name="local",
        asked_at="2026-01-02T03:04:05+00:00",
    )  # fmt: skip
    return service.review.store.add(draft)


def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("RAGCHAT_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("RAGCHAT_TEST_PAGE", "review")
    return AppTest.from_file(str(ROOT / "tests" / "ui_app.py"), default_timeout=30).run()


def shown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_a_correction_with_a_ticked_source_is_saved_and_served(tmp_path, monkeypatch):
    item = queued(tmp_path, "How many clients may connect?")
    at = app(tmp_path, monkeypatch)
    assert not at.exception
    assert "How many clients may connect?" in shown(at)
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert badges == [":orange-badge[weak citations]", ":red-badge[rated down]"]
    at.text_area(key=f"review-text-{item.id}").input("It sets the client limit [1].")
    at.checkbox(key=f"review-source-{item.id}-{CHUNK}").check()
    at.run()
    assert any("Cited as [1] manual.pdf" in c.value.replace("\\", "") for c in at.caption)
    at.button(key=f"review-wrong-{item.id}").click().run()
    assert not at.exception
    assert any("marked wrong" in s.value for s in at.success)
    service = fake_resources(str(tmp_path)).service
    saved = service.review.store.get(item.id, within=None)
    assert saved.status == WRONG and saved.served
    assert saved.correction == "It sets the client limit [1]."
    assert [s.chunk_id for s in saved.sources] == [CHUNK]
    assert "Nothing to review." in [i.value for i in at.info]  # the open queue is empty now


def test_right_and_a_refused_correction(tmp_path, monkeypatch):
    first = queued(tmp_path, "What does max_connections set?")
    second = queued(tmp_path, "What is max_connections?")
    at = app(tmp_path, monkeypatch)
    at.button(key=f"review-right-{first.id}").click().run()
    assert any("marked right" in s.value for s in at.success)
    service = fake_resources(str(tmp_path)).service
    assert service.review.store.get(first.id, within=None).status == RIGHT
    # The second is shown now; a correction without a source is refused, with the reason.
    at.text_area(key=f"review-text-{second.id}").input("A limit.")
    at.button(key=f"review-wrong-{second.id}").click().run()
    assert any("needs at least one source" in e.value for e in at.error)
    assert service.review.store.get(second.id, within=None).status == "open"


def test_the_answer_and_question_are_shown_safely(tmp_path, monkeypatch):
    queued(tmp_path, "**Bold** <script>alert(1)</script> question")
    at = app(tmp_path, monkeypatch)
    text = shown(at)
    assert "http://evil.example/t.png)" not in text.replace("`http://evil.example/t.png`", "")
    assert "![tracker](" not in text and "](http://evil.example)" not in text
    assert "\\*\\*Bold\\*\\* \\<script\\>" in text  # the question shows as typed


def _viewer_page() -> None:
    import os

    from tests.ui_fakes import fake_resources
    from ui import review

    res = fake_resources(os.environ["RAGCHAT_TEST_DIR"])
    review.page(res.as_caller(res.service.access.as_user("vic")))


def test_a_viewer_is_refused(tmp_path, monkeypatch):
    queued(tmp_path, "A question only reviewers may see")
    fake_resources(str(tmp_path)).service.access.accounts.add_user("vic", "viewer", "password-vic")
    monkeypatch.setenv("RAGCHAT_TEST_DIR", str(tmp_path))
    at = AppTest.from_function(_viewer_page, default_timeout=30).run()
    assert not at.exception
    assert any("only editors of a collection and admins" in e.value for e in at.error)
    assert "A question only reviewers may see" not in shown(at)


def test_a_passage_search_runs_once_for_the_reruns_that_follow(tmp_path, monkeypatch):
    item = queued(tmp_path, "How many clients may connect?")
    desk = fake_resources(str(tmp_path)).service.review
    searched: list[str] = []
    real = desk.search

    def search(item_id: int, query: str, caller: Any) -> Any:
        searched.append(query)
        return real(item_id, query, caller)

    monkeypatch.setattr(desk, "search", search)
    at = app(tmp_path, monkeypatch)
    at.text_input(key=f"review-query-{item.id}").input("max_connections").run()
    assert not at.exception and searched == ["max_connections"]
    at.checkbox(key=f"review-source-{item.id}-{CHUNK}").check().run()
    at.text_area(key=f"review-text-{item.id}").input("It sets the client limit [1].").run()
    assert searched == ["max_connections"]  # the same query: its hits are shown again
    at.text_input(key=f"review-query-{item.id}").input("clients").run()
    assert searched == ["max_connections", "clients"]
