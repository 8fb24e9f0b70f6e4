"""A full, read-only or vanishing disk while a generation is written: one clear error,
nothing published, the partial generation gone, and the index as it was."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rag.store.faiss
import rag.store.meta
from rag.errors import IndexUnwritableError
from tests.stores import add_doc, make_store, segment_files

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def state(index_dir: Path) -> tuple[str | None, list[tuple[str, int]], list[str]]:
    fresh = make_store(index_dir)
    return (
        fresh.current_generation(),
        [(d.id, d.chunks) for d in fresh.documents()],
        [c.text for c in fresh.all_chunks()],
    )


def failing(original: Callable[..., Any], when: Callable[..., bool] = lambda *a: True):
    """``original``, except that calls matching ``when`` fail with ENOSPC."""

    def call(*args: Any) -> Any:
        if when(*args):
            raise ENOSPC
        return original(*args)

    return call


def half_written_index(index: Any, path: Path) -> None:
    path.write_bytes(b"\0" * 100)  # some bytes made it to disk before it filled up
    raise ENOSPC


FAULTS: dict[str, tuple[str, Callable[..., Any]]] = {
    "writing the vectors": ("_write_index", half_written_index),
    "writing the manifest": (
        "_write_text",
        failing(rag.store.faiss._write_text, lambda path, _: path.parent.name == "manifests"),
    ),
    "syncing a file": ("_fsync", failing(rag.store.faiss._fsync, lambda path: path.is_file())),
    "syncing the segments folder": (
        "_fsync",
        failing(rag.store.faiss._fsync, lambda path: path.name == "segments"),
    ),
    "syncing the manifests folder": (
        "_fsync",
        failing(rag.store.faiss._fsync, lambda path: path.name == "manifests"),
    ),
    "writing CURRENT.tmp": (
        "_write_text",
        failing(rag.store.faiss._write_text, lambda path, _: path.name == "CURRENT.tmp"),
    ),
    "replacing CURRENT": ("_replace", failing(rag.store.faiss._replace)),
}


@pytest.mark.parametrize("step", FAULTS)
def test_full_disk_at_each_step_is_one_clear_error_and_changes_nothing(
    index_dir, monkeypatch, step
):
    store = make_store(index_dir)
    add_doc(store, "first", ["one", "two"])
    before = state(index_dir)
    name, fault = FAULTS[step]
    with monkeypatch.context() as patch:
        patch.setattr(rag.store.faiss, name, fault)
        with pytest.raises(IndexUnwritableError) as err:
            add_doc(store, "second", ["three"])
    assert str(err.value) == (
        f"cannot write to index {index_dir}: no space left on device while writing g000002; "
        "nothing was published, the index is as it was"
    )
    assert state(index_dir) == before
    assert store.chunk_count() == 2
    assert store.generations() == ["g000001"]  # the partial generation is gone
    assert sorted(p.name for p in (index_dir / "segments").iterdir()) == [
        p.name for p in segment_files(index_dir, "g000001")
    ]
    add_doc(store, "second", ["three"])  # once there is room again, writing works
    assert store.chunk_count() == 3


def test_database_full_while_adding_chunks(index_dir, monkeypatch):
    store = make_store(index_dir)
    add_doc(store, "first", ["one"])
    before = state(index_dir)

    def small_database(path: Path) -> sqlite3.Connection:
        db = rag.store.meta.connect(str(path), readonly=False)
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own "disk is full"
        return db

    monkeypatch.setattr(rag.store.faiss, "_connect_writable", small_database)
    with pytest.raises(IndexUnwritableError, match="database or disk is full while writing"):
        add_doc(store, "big", [f"chunk {i} " + "words " * 200 for i in range(50)])
    assert state(index_dir) == before
    assert store.generations() == ["g000001"]


def test_first_ingestion_into_a_full_disk_leaves_no_index(index_dir, monkeypatch):
    monkeypatch.setattr(rag.store.faiss, "_write_index", half_written_index)
    store = make_store(index_dir)
    with pytest.raises(IndexUnwritableError, match="no space left on device while writing g000001"):
        add_doc(store, "first", ["one"])
    assert not store.exists()
    assert store.generations() == []
    assert store.documents() == []


def test_a_new_segment_vanishing_mid_write(index_dir, monkeypatch):
    store = make_store(index_dir)
    add_doc(store, "first", ["one"])
    before = state(index_dir)
    write_index = rag.store.faiss._write_index

    def vanish(index: Any, path: Path) -> None:
        write_index(index, path)
        path.unlink()  # deleted by someone else before it was synced

    monkeypatch.setattr(rag.store.faiss, "_write_index", vanish)
    with pytest.raises(IndexUnwritableError, match="no such file or directory while writing"):
        add_doc(store, "second", ["two"])
    assert state(index_dir) == before


# A real write limit, no injection: the process may not grow a file past 64 KB (EFBIG).
_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    import numpy as np
    from rag.errors import IndexUnwritableError
    from rag.store.faiss import FaissStore, NewChunk
    from tests.fakes import CountingEmbeddings

    store = FaissStore(Path(sys.argv[1]), CountingEmbeddings(size=32), model_id="fake",
                       dimension=32)
    texts = [f"chunk {i} of the big document " * 4 for i in range(2000)]
    vectors = np.asarray(store.embeddings.embed_documents(texts), dtype="float32")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    try:
        with store.writer() as w:
            w.add_document("big", kind="text", pages=None, source="/big.txt",
                           chunks=[NewChunk(t) for t in texts], vectors=vectors)
    except IndexUnwritableError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"error": None}))
    """
)


def test_a_real_file_size_limit_is_reported_and_changes_nothing(index_dir):
    store = make_store(index_dir)
    add_doc(store, "first", ["one", "two"])
    before = state(index_dir)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMIT, str(index_dir)],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error is not None
    # SQLite hits the limit first and says so in its own words.
    assert re.search(r"(file too large|disk I/O error) while writing g000002; nothing was", error)
    assert state(index_dir) == before
    assert store.generations() == ["g000001"]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A 3 MB tmpfs mounted for the test; skipped where mounting is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_is_reported_and_the_index_survives(tiny_tmpfs):
    index_dir = tiny_tmpfs / "index"
    store = make_store(index_dir)
    add_doc(store, "d0", [f"chunk {i} of document zero " * 10 for i in range(100)])
    published = 0
    full = "no space left on device|database or disk is full"  # whichever write fails first
    with pytest.raises(IndexUnwritableError, match=full) as err:
        for n in range(1, 400):  # each generation adds one document: the disk fills up
            add_doc(store, f"d{n}", [f"chunk {i} of document {n} " * 10 for i in range(100)])
            published = n
    assert "nothing was published" in str(err.value)
    fresh = make_store(index_dir)
    assert len(fresh.documents()) == published + 1
    assert fresh.chunk_count() == 100 * (published + 1)
    assert fresh.current_generation() == f"g{published + 1:06d}"
    assert f"g{published + 2:06d}" not in fresh.generations()  # the partial one is gone
    hit = fresh.search_chunks(f"chunk 5 of document {published} " * 10, k=1)[0][0]
    assert hit.doc_id == f"d{published}"
