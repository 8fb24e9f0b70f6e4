"""Stop, Retry and Regenerate in Debian's Chromium, against a stub OpenAI-compatible endpoint.

The stub (tests/faultserver.py) streams slowly, fails on demand and answers normally, so
each button is exercised without waiting on a real model; the embedding model is real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from rag.memory import ConversationStore
from tests.faultserver import OK, Fault, FaultServer, status
from tests.integration.browser import ARTIFACTS, ask_in_chat, stub_chat_app

PAGES = ["Backups run nightly at two in the morning and keep seven copies."]


@pytest.fixture(scope="module")
def stub() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, stub: FaultServer) -> Iterator[tuple[str, Path]]:
    # Indexed before the app starts, as `ragchat ingest` does: this test is about the chat.
    data = tmp_path_factory.mktemp("chatdata")
    with stub_chat_app(data, PAGES, stub.base_url) as url:
        yield url, data / "backups.pdf"


ask = ask_in_chat


def test_stop_retry_and_regenerate(browser: Browser, app: tuple[str, Path], stub: FaultServer):
    url, pdf = app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    main = page.get_by_test_id("stMainBlockContainer")

    # Stop: the stream ends, what arrived is kept and marked stopped.
    stub.faults[:] = [Fault("slow_stream", interval=0.4, tokens=200)]
    ask(page, "When do backups run?")
    expect(main).to_contain_text("word2", timeout=60_000)
    expect(page.get_by_test_id("stChatInputTextArea")).to_be_disabled()  # no second question
    page.locator(".st-key-stop button").click()
    expect(main.get_by_text("You stopped this answer")).to_be_visible(timeout=30_000)
    expect(main).to_contain_text("word0")
    expect(main).not_to_contain_text("word150")
    page.screenshot(path=str(ARTIFACTS / "chat-stopped.png"), full_page=True)

    # Retry: a failed question keeps its error line and is answered again in place.
    stub.faults.clear()
    stub.default = status(400)
    ask(page, "How many copies are kept?")
    retry = page.locator("[class*='st-key-retry-'] button")
    expect(retry).to_be_visible(timeout=60_000)
    expect(main.get_by_test_id("stAlertContentError")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "chat-failed.png"), full_page=True)
    stub.default = OK
    retry.click()
    expect(main).to_contain_text("Backups run nightly at two", timeout=60_000)
    expect(retry).to_have_count(0)
    expect(main.get_by_test_id("stChatMessage")).to_have_count(4)

    # Regenerate: the last answer is replaced; the previous one is not shown.
    memory = ConversationStore(pdf.parent / "conversations.db")
    (conv,) = memory.conversations(owner="local")
    replaced = memory.exchanges(conv.id)[-1].answer
    assert replaced is not None
    page.locator("[class*='st-key-regenerate-'] button").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = memory.exchanges(conv.id)[-1].answer
        if answer is not None and answer.id != replaced.id:
            break
        page.wait_for_timeout(200)
    else:
        pytest.fail("the regenerated answer was never stored")
    assert answer.outcome == "answered"
    expect(page.locator(f".st-key-actions-{answer.id}")).to_be_visible(timeout=30_000)
    expect(page.locator(f".st-key-actions-{replaced.id}")).to_have_count(0)  # not shown
    expect(main.get_by_test_id("stChatMessage")).to_have_count(4)
    page.screenshot(path=str(ARTIFACTS / "chat-regenerated.png"), full_page=True)

    # Cut: the endpoint drops midway (the condensing request before it succeeds).
    stub.faults[:] = [OK, Fault("drop", after=3)]
    ask(page, "And at what time?")
    expect(main.get_by_text("This answer was cut")).to_be_visible(timeout=60_000)
    expect(main.get_by_test_id("stChatMessage")).to_have_count(6)
    page.close()
