"""The HTTP API served for real: the OpenAI client against it, and the one-port web app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from playwright.sync_api import Browser, expect

from rag.api.app import create_api, serve_api
from rag.llm.local import free_port
from tests.api_fakes import FakeJobs, fake_service
from tests.faultserver import FaultServer
from tests.integration.browser import streamlit_app


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API over a fake service, served by uvicorn on a free loopback port."""
    service, _ = fake_service(tmp_path_factory.mktemp("api"))
    app = serve_api(create_api(lambda: service, FakeJobs))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/api"
    server.should_exit = True
    thread.join(10)
    service.close()


def client(api_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api_url}/v1", api_key="unused", max_retries=0)


def test_openai_client_gets_citations_without_streaming(api_url):
    response = client(api_url).chat.completions.create(
        model="ragchat",
        messages=[{"role": "user", "content": "What is the default of max_connections?"}],
    )
    text = response.choices[0].message.content
    assert text == "The default is 100 [1] and it limits clients [2]."
    citations = response.model_extra["citations"]
    assert [c["n"] for c in citations] == [1, 2]
    assert citations[0]["page"] == 5 and "100" in citations[0]["text"]
    assert response.usage is not None and response.usage.total_tokens > 0


def test_openai_client_gets_citations_streaming(api_url):
    stream = client(api_url).chat.completions.create(
        model="ragchat",
        messages=[{"role": "user", "content": "What is the default of max_connections?"}],
        stream=True,
    )
    chunks = list(stream)
    assert len(chunks) > 4  # token by token
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "[1]" in text and "[2]" in text
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert [c["n"] for c in final.model_extra["citations"]] == [1, 2]


def test_openai_client_sees_a_bad_request_as_an_error(api_url):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(api_url).chat.completions.create(
            model="ragchat", messages=[{"role": "assistant", "content": "hello"}]
        )
    assert caught.value.body["field"] == "messages[0]"


def test_the_web_app_serves_the_pages_and_the_api_on_one_port(tmp_path: Path, browser: Browser):
    with FaultServer() as llm, streamlit_app(tmp_path, RAG_LLM_BASE_URL=llm.base_url) as url:
        health = httpx.get(f"{url}/api/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert httpx.get(f"{url}/api/ready", timeout=10).json()["checks"]["model"] == "ok"
        assert httpx.get(f"{url}/api/v1/jobs", timeout=10).json() == {"jobs": []}
        assert "/api/openapi.json" in httpx.get(f"{url}/api/docs", timeout=10).text
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and '<div id="root">' in page.text
        tab = browser.new_page()  # the page script runs (websocket and all) beside the API
        tab.goto(url)
        expect(tab.get_by_text("No documents are indexed yet")).to_be_visible(timeout=60_000)
        tab.close()
