"""Fuzzing the in-process loaders: whatever the bytes, the only error is an IngestError.

What the loaders catch themselves: every error a parser raises for damaged input (pypdf's
and the built-in errors it lets through, lxml's, zipfile's, zlib's, RecursionError). What
only the sandbox catches: hangs, runaway memory and crashes in C code. A short run here;
``make fuzz`` raises RAG_FUZZ_EXAMPLES for a long one.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.loaders import load
from ingest.sandbox import ParseLimits
from rag.errors import IngestError
from tests.hostile import _document_xml, _para, write_simple_pdf

EXAMPLES = int(os.environ.get("RAG_FUZZ_EXAMPLES", "25"))
_LIMITS = ParseLimits(max_chars=10_000_000)
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES <= 25,  # CI runs are reproducible; long runs explore
)


def _valid_pdf() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return write_simple_pdf(Path(folder) / "v.pdf", 2).read_bytes()


def _valid_docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", _document_xml(_para("Fuzzed paragraph.") * 5))
    return buf.getvalue()


_SEEDS = {
    ".pdf": _valid_pdf(),
    ".docx": _valid_docx(),
    ".html": b"<html><head><title>T</title></head><body><h1>H</h1><p>Text</p></body></html>",
    ".md": b"# Title\n\nSome *text*.\n\nSetext\n------\n\n```\ncode\n```\n",
    ".txt": "Plain text, caf\u00e9.\n".encode(),
}


def _mutate(seed: bytes, edits: list[tuple[int, bytes]], cut: int) -> bytes:
    data = bytearray(seed)
    for at, chunk in edits:
        pos = at % (len(data) + 1)
        data[pos : pos + len(chunk)] = chunk
    return bytes(data[: max(1, cut % (len(data) + 1))]) if cut else bytes(data)


def _check(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        with contextlib.suppress(IngestError):  # a clean refusal is a correct outcome
            load(path, _LIMITS)


@_SETTINGS
@given(
    suffix=st.sampled_from(sorted(_SEEDS)),
    edits=st.lists(
        st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)), max_size=6
    ),
    cut=st.integers(0, 1 << 20),
)
def test_mutated_documents_raise_only_ingest_errors(suffix: str, edits: list, cut: int):
    _check(suffix, _mutate(_SEEDS[suffix], edits, cut))


@_SETTINGS
@given(suffix=st.sampled_from(sorted(_SEEDS)), data=st.binary(max_size=4096))
def test_random_bytes_raise_only_ingest_errors(suffix: str, data: bytes):
    _check(suffix, data)


@_SETTINGS
@given(suffix=st.sampled_from([".html", ".md", ".txt"]), text=st.text(max_size=2000))
def test_random_text_raises_only_ingest_errors(suffix: str, text: str):
    _check(suffix, text.encode("utf-8", errors="surrogatepass"))
