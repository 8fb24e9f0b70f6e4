from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.detect import Kind
from ingest.loaders import load, no_text_reason
from ingest.sandbox import ParseLimits, ParserSandbox
from rag.errors import IngestError, ParseLimitError, RagError
from rag.settings import Settings
from tests.docgen import make_docx, make_html, make_markdown, make_pdf
from tests.hostile import pdf_flate_bomb, text_nonutf8_name, write_simple_pdf


@pytest.fixture
def sandbox() -> Iterator[ParserSandbox]:
    with ParserSandbox(ParseLimits()) as box:
        yield box


def _read(box: ParserSandbox, path: Path) -> list[tuple[str, int | None, str | None, int]]:
    stream = box.open(path)
    return [(b.text, b.page, b.heading, b.offset) for b in stream.blocks]


def test_worker_gives_the_same_blocks_as_the_in_process_loader(
    tmp_path: Path, sandbox: ParserSandbox
):
    files = [
        make_pdf(tmp_path / "a.pdf", ["Alpha text.", "Beta text."], headings=["One", "Two"]),
        make_docx(tmp_path / "b.docx", [("Budget", "40 euros."), ("Plan", "Ends in May.")]),
        make_html(tmp_path / "c.html", [("Install", "Run the installer.")]),
        make_markdown(tmp_path / "d.md", [("First", "Body one."), ("Second", "Body two.")]),
    ]
    for path in files:
        expected = [(b.text, b.page, b.heading, b.offset) for b in load(path).blocks]
        assert _read(sandbox, path) == expected
    assert sandbox.open(files[0]).pages == 2
    assert sandbox.restarts == 0  # one worker parsed them all


def test_a_broken_file_is_one_error_and_the_next_file_goes_on(
    tmp_path: Path, sandbox: ParserSandbox
):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    good = make_markdown(tmp_path / "good.md", [("Ok", "Still indexed.")])
    with pytest.raises(IngestError) as err:
        _read(sandbox, bad)
    assert err.value.path == str(bad)
    assert "Still indexed." in _read(sandbox, good)[0][0]


def test_a_silent_parser_is_stopped_at_the_timeout_and_replaced(tmp_path: Path):
    # 60,000 pages behind a page tree that claims one: listing them takes seconds.
    slow = write_simple_pdf(tmp_path / "slow.pdf", 60_000, declared=1)
    good = make_markdown(tmp_path / "good.md", [("Ok", "Next file.")])
    with ParserSandbox(ParseLimits(timeout_s=0.3)) as box:
        box.ready_worker()
        with pytest.raises(ParseLimitError, match=r"stopped after 0.3 s without output") as err:
            _read(box, slow)
        assert err.value.limit == "RAG_PARSE_TIMEOUT_S"
        assert box.restarts == 1
        assert "Next file." in _read(box, good)[0][0]


def test_a_parser_out_of_memory_is_refused_with_its_limit(tmp_path: Path):
    bomb = pdf_flate_bomb(tmp_path)  # inflates to 75 MB inside pypdf before its own limit
    good = make_markdown(tmp_path / "good.md", [("Ok", "Next file.")])
    with ParserSandbox(ParseLimits(max_mb=128)) as box:
        with pytest.raises(ParseLimitError, match="ran out of its 128 MB of memory") as err:
            _read(box, bomb)
        assert err.value.limit == "RAG_PARSE_MAX_MB"
        assert "Next file." in _read(box, good)[0][0]


def test_a_killed_worker_is_a_clear_error_for_that_file_only(
    tmp_path: Path, sandbox: ParserSandbox
):
    big = tmp_path / "big.txt"
    big.write_text(("A line of text that goes on.\n" * 20_000 + "\n") * 10)
    good = make_markdown(tmp_path / "good.md", [("Ok", "Next file.")])
    stream = sandbox.open(big)
    next(stream.blocks)
    assert sandbox.worker_pid is not None
    os.kill(sandbox.worker_pid, signal.SIGKILL)
    with pytest.raises(IngestError, match="parser crashed"):
        list(stream.blocks)
    assert "Next file." in _read(sandbox, good)[0][0]


def test_closing_a_stream_early_leaves_the_sandbox_usable(tmp_path: Path, sandbox: ParserSandbox):
    big = tmp_path / "big.txt"
    big.write_text("Words and more words.\n" * 200_000)
    stream = sandbox.open(big)
    next(stream.blocks)
    stream.close()
    good = make_markdown(tmp_path / "good.md", [("Ok", "Next file.")])
    assert "Next file." in _read(sandbox, good)[0][0]


def test_file_names_that_are_not_utf8_reach_the_worker(tmp_path: Path, sandbox: ParserSandbox):
    path = text_nonutf8_name(tmp_path)
    assert "Hostile corpus" in _read(sandbox, path)[0][0]


def test_limits_come_from_settings():
    limits = ParseLimits.from_settings(Settings(parse_timeout_s=5, docx_max_ratio=50))
    assert (limits.timeout_s, limits.docx_max_ratio, limits.max_mb) == (5, 50, 1024)


def _kill_idle_worker(box: ParserSandbox) -> None:
    """SIGKILL the worker between files (an OOM killer or an operator would)."""
    box.ready_worker()
    pid = box.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # Wait until it has exited (a zombie the sandbox has not reaped yet).
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the worker did not die"
        time.sleep(0.01)


def test_a_worker_killed_while_idle_is_replaced_for_the_next_file(
    tmp_path: Path, sandbox: ParserSandbox
):
    first = make_markdown(tmp_path / "first.md", [("One", "First file.")])
    second = make_markdown(tmp_path / "second.md", [("Two", "Second file.")])
    assert "First file." in _read(sandbox, first)[0][0]
    _kill_idle_worker(sandbox)
    assert "Second file." in _read(sandbox, second)[0][0]
    _kill_idle_worker(sandbox)
    assert "First file." in _read(sandbox, first)[0][0]
    assert sandbox.restarts == 2


def test_closing_the_sandbox_after_its_worker_died_does_not_raise(tmp_path: Path):
    box = ParserSandbox(ParseLimits())
    _kill_idle_worker(box)
    # What an ingestion run did before its summary: a path sent to the dead worker stays
    # buffered in the pipe, and closing the pipe flushes it again.
    worker = box._worker
    assert worker is not None
    with pytest.raises(Exception, match="cannot reach the worker"):
        worker.send({"path": str(tmp_path / "next.md")})
    box.close()
    box.close()


def test_a_worker_that_cannot_start_is_an_ingest_error_for_the_file(tmp_path: Path):
    good = make_markdown(tmp_path / "good.md", [("Ok", "Never parsed.")])
    # 1 MB of address space: the worker dies of MemoryError while importing its parsers.
    with ParserSandbox(ParseLimits(max_mb=1)) as box:
        for _ in range(2):  # each file tries again, and each failure is that file's
            with pytest.raises(IngestError, match="the parser worker could not be started"):
                box.open(good)
    with (
        ParserSandbox(ParseLimits(max_mb=1)) as box,
        pytest.raises(RagError, match="the parser worker could not be started"),
    ):
        box.ready_worker()


def test_a_pdf_without_text_gets_the_same_reason_in_the_worker(
    tmp_path: Path, sandbox: ParserSandbox
):
    scan = make_pdf(tmp_path / "scan.pdf", ["", ""])
    with pytest.raises(IngestError) as err:
        _read(sandbox, scan)
    assert err.value.reason == no_text_reason(Kind.PDF)
    assert sandbox.restarts == 0
