"""CLI output that goes somewhere unusual: a closed pipe, a hostile file name."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from rag.settings import BUNDLED_EMBEDDING_MODEL
from rag.store.faiss import FaissStore, NewChunk
from tests.fakes import CountingEmbeddings

DIM = 384  # all-MiniLM-L6-v2, so the CLI opens this index without loading the model


def _index(folder: Path, sources: list[str]) -> Path:
    index_dir = folder / "index"
    store = FaissStore(
        index_dir, CountingEmbeddings(size=DIM), model_id=BUNDLED_EMBEDDING_MODEL, dimension=DIM
    )
    rng = np.random.default_rng(0)
    with store.writer() as writer:
        for n, source in enumerate(sources):
            writer.add_document(
                hashlib.sha256(source.encode()).hexdigest(),
                kind="text",
                pages=None,
                source=source,
                chunks=[NewChunk(f"passage {n}")],
                vectors=rng.normal(size=(1, DIM)).astype("float32"),
            )
    return index_dir


def _ragchat(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return subprocess.Popen(
        [sys.executable, "-m", "rag.cli", *args], stdout=stdout, stderr=subprocess.PIPE, env=env
    )


def test_output_to_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    index_dir = _index(tmp_path, [f"/docs/file-{n}.txt" for n in range(3000)])
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (like `| head -0`)
    proc = _ragchat("docs", "list", "--index", str(index_dir), stdout=write_end)
    os.close(write_end)
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert b"BrokenPipeError" not in err
    assert proc.returncode == 141


def test_hostile_source_names_cannot_forge_output_lines(tmp_path: Path) -> None:
    forged = "/docs/evil\nadded 999, updated 0, unchanged 0\x1b[2K\u202etxt.exe"
    index_dir = _index(tmp_path, [forged])
    proc = _ragchat("docs", "list", "--index", str(index_dir))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert len(text.strip().splitlines()) == 1  # one document, one line
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x0a" in text and "\\x1b" in text and "\\u202e" in text
    proc = _ragchat("docs", "list", "--index", str(index_dir), "--json")
    out, _ = proc.communicate(timeout=120)
    assert json.loads(out)[0]["sources"] == [forged]  # JSON keeps the real name, escaped
