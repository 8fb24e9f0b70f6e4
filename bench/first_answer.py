"""Seconds from ``make run`` to the first answered sample question, as a new user sees it.

Runs ``make run`` (which indexes ``docs/`` and serves the app) with an empty data folder
on a free port, opens the page in Debian's Chromium, asks the README's sample question as
soon as the question box appears and waits until the answer has ended (its feedback
buttons show). Prints when the server answered its health check, when the page was ready
and when the answer ended, all from the moment ``make`` was started. The venv must be
installed already (``make install``), or the install is counted too.

    python bench/first_answer.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.llm.local import free_port  # noqa: E402
from tests.integration.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

QUESTION = "How do I add my own documents?"


def run_once() -> tuple[float, float, float, str]:
    """(server up, page ready, answer ended) in seconds from ``make run``, and the answer."""
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        log = (Path(data) / "make.log").open("wb")
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"], cwd=ROOT,
            env={**os.environ, "RAG_DATA_DIR": data, "STREAMLIT_SERVER_HEADLESS": "true"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            while True:
                try:
                    if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
                if proc.poll() is not None or time.monotonic() - t0 > 300:
                    raise RuntimeError((Path(data) / "make.log").read_text())
            server = time.monotonic() - t0
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(url)
                box = page.get_by_test_id("stChatInputTextArea")
                expect(box).to_be_editable(timeout=120_000)
                ready = time.monotonic() - t0
                box.fill(QUESTION)
                box.press("Enter")
                main = page.get_by_test_id("stMainBlockContainer")
                expect(main.get_by_test_id("stFeedback")).to_have_count(1, timeout=300_000)
                answered = time.monotonic() - t0
                text = main.get_by_test_id("stChatMessage").nth(1).inner_text()
                browser.close()
            return server, ready, answered, text
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()


def main() -> None:
    """Print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    runs = parser.parse_args().runs
    results = []
    for i in range(runs):
        server, ready, answered, text = run_once()
        results.append((server, ready, answered))
        print(f"run {i + 1}: server up {server:.1f} s, page ready {ready:.1f} s, "
              f"answer ended {answered:.1f} s")  # fmt: skip
        print("  answer:", " ".join(text.split())[:300])
    if runs > 1:
        server, ready, answered = (statistics.median(r[k] for r in results) for k in range(3))
        print(f"median: server up {server:.1f} s, page ready {ready:.1f} s, "
              f"answer ended {answered:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
