from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from rag.llm.local import free_port
from tests.integration.browser import CHROMIUM, CHROMIUM_ARGS

REDIS = Path("/usr/bin/redis-server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, shared by the tests of one module."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port, no persistence, for one module."""
    if not REDIS.exists():
        pytest.skip(f"{REDIS} is missing: apt-get install redis-server (make redis does)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [str(REDIS), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                break
            except RedisConnectionError as exc:  # until the server listens
                if time.monotonic() > deadline:
                    proc.terminate()
                    raise AssertionError("redis-server did not start") from exc
                time.sleep(0.05)
    finally:
        client.close()
    yield url
    proc.terminate()
    proc.wait(10)
