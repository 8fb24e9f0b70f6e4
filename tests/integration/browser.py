"""Helpers for real-browser tests: a streamlit server on 127.0.0.1 and Debian's Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from rag.llm.local import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
ARTIFACTS = ROOT / "artifacts" / "screenshots"


class ServedApp(str):
    """The URL of a served app, knowing the server's process id."""

    pid: int


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                frontier.append(child)
                try:
                    cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes()
                except OSError:
                    continue
                found.append((child, cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


@contextmanager
def streamlit_app(
    data_dir: Path, *, script: Path = ROOT / "app.py", args: Sequence[str] = (), **env: str
) -> Iterator[ServedApp]:
    """Serve ``script`` (app.py) on a free loopback port, data in ``data_dir``; yields the URL.

    ``args`` are passed to the script itself.
    """
    port = free_port()
    log = (data_dir / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", str(script),
            "--server.address", "127.0.0.1", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--", *args,
        ],
        cwd=ROOT,
        env={**os.environ, "RAG_DATA_DIR": str(data_dir), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = ServedApp(f"http://127.0.0.1:{port}")
    url.pid = proc.pid
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            log_text = (data_dir / "streamlit.log").read_text()
            raise RuntimeError(f"streamlit did not start: {log_text}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def stub_chat_app(data_dir: Path, pages: Sequence[str], stub_url: str) -> Iterator[ServedApp]:
    """The app over a PDF of ``pages`` (indexed first, as ``ragchat ingest`` does), answering
    through the stub endpoint at ``stub_url`` (``tests/faultserver.py``); yields the URL.

    The PDF is ``data_dir / "backups.pdf"``.
    """
    from tests.docgen import make_pdf

    pdf = make_pdf(data_dir / "backups.pdf", list(pages))
    subprocess.run(
        [sys.executable, "-m", "ingest", str(pdf)],
        check=True,
        env={**os.environ, "RAG_DATA_DIR": str(data_dir)},
        capture_output=True,
        timeout=300,
    )
    env = {"RAG_LLM_BASE_URL": stub_url, "RAG_LLM_MODEL": "stub-model"}
    with streamlit_app(data_dir, **env) as url:
        yield url


def ask_in_chat(page: Any, question: str) -> None:
    """Type a question into the chat page's input and send it (a Playwright ``Page``)."""
    from playwright.sync_api import expect

    box = page.get_by_test_id("stChatInputTextArea")
    expect(box).to_be_enabled(timeout=120_000)  # the first page load warms the models
    box.fill(question)
    box.press("Enter")
