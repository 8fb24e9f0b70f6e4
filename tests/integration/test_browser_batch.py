"""The Batch page in Debian's Chromium: upload a CSV of questions, watch it run, download.

The app is the real one (`streamlit run app.py`: pages, API and job workers in one
process); the model is a stub OpenAI-compatible endpoint and the embedding model is real.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.docgen import make_pdf
from tests.faultserver import FaultServer
from tests.integration.browser import ARTIFACTS, streamlit_app

PAGES = [
    "Backups run nightly at two in the morning and keep seven copies.",
    "The pump needs fresh oil every spring, before the first frost ends.",
]
QUESTIONS = ["When do backups run?", "How many copies are kept?", "When does the pump need oil?"]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, FaultServer]]:
    data = tmp_path_factory.mktemp("batchdata")
    pdf = make_pdf(data / "manual.pdf", PAGES)
    subprocess.run(
        [sys.executable, "-m", "ingest", str(pdf)],
        check=True,
        env={**os.environ, "RAG_DATA_DIR": str(data)},
        capture_output=True,
        timeout=300,
    )
    with FaultServer() as stub:
        env = {"RAG_LLM_BASE_URL": stub.base_url, "RAG_LLM_MODEL": "stub-model"}
        with streamlit_app(data, **env) as url:
            yield url, data, stub


def test_upload_a_csv_watch_it_run_and_download_the_answers(
    browser: Browser, app: tuple[str, Path, FaultServer]
) -> None:
    url, data, stub = app
    questions = data / "questions.csv"
    with questions.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "sources"])
        writer.writerow([QUESTIONS[0], "manual.pdf"])
        writer.writerow(["", "manual.pdf"])  # a bad row: listed, the rest still run
        writer.writerow([QUESTIONS[1], "manual.pdf"])
        writer.writerow([QUESTIONS[2], "manual.pdf"])
    page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    page.goto(f"{url}/batch")
    expect(page.get_by_role("heading", name="Batch questions")).to_be_visible(timeout=60_000)
    page.locator("input[type=file]").set_input_files(str(questions))
    page.get_by_role("button", name="Run").click()
    main = page.get_by_test_id("stMainBlockContainer")
    expect(main.get_by_text("3 of 3 questions answered.")).to_be_visible(timeout=120_000)
    expect(main.get_by_text("Problems (1)")).to_be_visible()
    expect(main.get_by_text("line 3: question must be a non-empty string")).to_be_visible()
    expect(main.get_by_role("cell", name="recall@5", exact=True)).to_be_visible()  # labelled
    page.screenshot(path=str(ARTIFACTS / "batch.png"), full_page=True)

    with page.expect_download() as download:
        page.get_by_role("button", name="Download answers (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["question"] for r in rows] == QUESTIONS  # input order, the bad row left out
    for row in rows:
        assert row["answer"] and not row["error"]
        assert json.loads(row["citations"])[0]["source"].endswith("manual.pdf")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download answers (JSON Lines)").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert [json.loads(line)["question"] for line in lines] == QUESTIONS
    assert stub.requests >= 3
    page.close()
