"""The review loop end to end, in Debian's Chromium: a thumbs down, the queue, a correction,
the correction served as a reviewed answer, and `ragchat review export` writing it as an
eval line.

Answers come from the stub OpenAI-compatible endpoint (tests/faultserver.py), which answers
"Backups run nightly at two [1]."; the embedding model is real, and so are the app, the
command and the SQLite files they share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import Browser, expect

from rag.evaluation import load_dataset
from rag.memory import ConversationStore
from rag.review.store import RATED_DOWN, WRONG, ReviewItem, ReviewStore
from tests.faultserver import FaultServer
from tests.integration.browser import ARTIFACTS, ROOT, ask_in_chat, stub_chat_app

expect.set_options(timeout=30_000)  # a Streamlit rerun on a busy 2-core machine can be slow

T = TypeVar("T")
PAGES = ["Backups run nightly at two in the morning and keep seven copies."]
QUESTION = "When do backups run?"
CORRECTION = "Backups run every night at 02:00, and seven copies are kept [1]."


@pytest.fixture(scope="module")
def stub() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, stub: FaultServer) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("reviewdata")
    with stub_chat_app(data, PAGES, stub.base_url) as url:
        yield url, data


ask = ask_in_chat


def wait_for(what: str, check: Callable[[], T], seconds: float = 60) -> T:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"{what} never happened")


def test_thumbs_down_to_queue_to_correction_to_reviewed_answer_to_eval_line(
    browser: Browser, app: tuple[str, Path], stub: FaultServer
) -> None:
    url, data = app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    main = page.get_by_test_id("stMainBlockContainer")
    try:
        # The model's answer, rated down.
        ask(page, QUESTION)
        expect(main).to_contain_text("Backups run nightly at two", timeout=120_000)
        memory = ConversationStore(data / "conversations.db")
        (conv,) = memory.conversations(owner="local")
        (exchange,) = memory.exchanges(conv.id)
        assert exchange.answer is not None
        answer_id = exchange.answer.id
        thumbs = page.locator(f".st-key-feedback-{answer_id} button")
        expect(thumbs).to_have_count(2)
        thumbs.nth(1).click()  # thumbs down
        reviews = ReviewStore(data / "reviews.sqlite")

        def rated() -> list[ReviewItem]:
            return reviews.items(within=None)

        (item,) = wait_for("the thumbs down reaching the queue", rated)
        assert item.reasons == (RATED_DOWN,) and item.message_id == answer_id
        assert item.question == QUESTION and item.answer == exchange.answer.content
        chunk = item.citations[0]["chunk_id"]

        # The Review page: the queued answer, corrected with its source.
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review").click()
        expect(page.get_by_role("heading", name="Review", exact=True)).to_be_visible()
        expect(main).to_contain_text(QUESTION)
        expect(main).to_contain_text("rated down")
        box = page.locator(f".st-key-review-text-{item.id} textarea")
        box.fill(CORRECTION)
        box.press("Tab")  # the text area sends its value when it loses focus
        page.locator(f".st-key-review-source-{item.id}-{chunk} label").click()
        expect(main).to_contain_text("Cited as [1] backups.pdf")
        page.screenshot(path=str(ARTIFACTS / "review-queue.png"), full_page=True)
        main.get_by_role("button", name="Wrong — save the correction").click()
        expect(main).to_contain_text(f"#{item.id} marked wrong")
        reviewed = reviews.get(item.id, within=None)
        assert reviewed.status == WRONG and reviewed.served
        assert reviewed.correction == CORRECTION
        assert [s.chunk_id for s in reviewed.sources] == [chunk]

        # The same question, asked again in a new chat: the correction, marked reviewed,
        # and the model is not asked.
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Chat").click()
        page.get_by_role("button", name="New chat").click()
        expect(main.get_by_test_id("stChatMessage")).to_have_count(0)
        asked = stub.requests
        ask(page, "when do backups run")
        expect(main).to_contain_text("Backups run every night at 02:00")
        expect(main.get_by_text("Reviewed answer").first).to_be_visible()
        expect(main).to_contain_text("backups.pdf")  # its citation card
        page.screenshot(path=str(ARTIFACTS / "chat-reviewed.png"), full_page=True)
        assert stub.requests == asked
        newest = memory.conversations(owner="local")[0]
        (served,) = memory.exchanges(newest.id)
        assert served.answer is not None and served.answer.content == CORRECTION
        assert served.answer.meta["reviewed"] is True
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / "review-failure.png"), full_page=True)
        raise
    finally:
        page.close()

    # `ragchat review export`: the correction as a line `ragchat eval` reads.
    done = subprocess.run(
        [sys.executable, "-m", "rag.cli", "review", "export"],
        cwd=ROOT,
        env={**os.environ, "RAG_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (line,) = [json.loads(raw) for raw in done.stdout.splitlines()]
    assert line["question"] == QUESTION
    assert line["sources"] == ["backups.pdf"] and line["pages"] == [1]
    assert (
        line["reference_answer"] == "Backups run every night at 02:00, and seven copies are kept."
    )
    dataset = data / "reviewed.jsonl"
    dataset.write_text(done.stdout, encoding="utf-8")
    (eval_item,) = load_dataset(dataset)
    assert eval_item.passage is not None and eval_item.passage.lower() in PAGES[0].lower()
