"""What the command line prints: rates, failure lines, names, scores, Ctrl-C wording."""

from __future__ import annotations

import io
import re
import time

import pytest

from rag.cli import _INTERRUPTED, build_parser
from rag.cli.ingest import _Bars, document_line, failure_line
from rag.store.faiss import DocumentInfo


def shown_rate(bars: _Bars, stage: str) -> float:
    text = str(bars.bars[stage])
    match = re.search(r"([\d.]+)\s*(?:chunk|file)/s", text)
    assert match, text
    return float(match.group(1))


def test_the_embedding_rate_counts_from_when_the_work_began():
    bars = _Bars(enabled=True, stream=io.StringIO())
    bars("parse", 0, 1)
    time.sleep(0.3)  # the first batch is being embedded
    bars("embed", 4096, 10_000)  # the bar hears of the stage only now
    # Counted from the previous event: about 4096 / 0.3 s, not 4096 / 0.0001 s.
    assert shown_rate(bars, "embed") < 4096 / 0.25
    time.sleep(0.2)
    bars("embed", 8192, 10_000)
    assert shown_rate(bars, "embed") < 8192 / 0.45
    bars.close()


def test_failure_lines_break_between_words_with_an_indent():
    reason = "the PDF is encrypted and no password was given; decrypt it with qpdf first"
    path = "/home/me/papers/annual-report-of-the-rowing-club-2024.pdf"
    text = failure_line(path, reason, width=40)
    lines = text.split("\n")
    assert len(lines) > 1 and all(line.startswith("    ") for line in lines[1:])
    words = f"failed: {path}: {reason}".split()
    assert " ".join(text.split()) == " ".join(words)  # no word split
    assert all(len(line) <= 40 or path in line for line in lines)
    assert failure_line(path, reason) == f"failed: {path}: {reason}"  # a pipe: one line


def test_docs_list_names_uploads_by_their_original_name():
    doc = DocumentInfo(
        id="f" * 64, kind="pdf", sources=["/data/uploads/3f9c0d1e2a7b4c5d.pdf", "/srv/b.pdf"],
        pages=4, chunks=9, ingested_at="2025-01-01T00:00:00+00:00",
        titles=["Annual Report.pdf", "b.pdf"],
    )  # fmt: skip
    line = document_line(doc)
    assert "Annual Report.pdf (/data/uploads/3f9c0d1e2a7b4c5d.pdf)" in line
    assert line.endswith(", /srv/b.pdf")  # a file under its own name is shown once


def test_search_help_explains_its_one_score(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "relevance: a number from 0 to 1" in text
    assert '"score" (the raw ranking score' in text


def test_ctrl_c_on_llm_serve_says_the_server_stopped():
    assert _INTERRUPTED["llm"] == "stopped the local model server"
    assert "index" not in _INTERRUPTED["llm"]
