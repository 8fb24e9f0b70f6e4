"""A missing or broken published generation: nothing is deleted, the error says how to
recover, and ``ragchat index repair`` goes back to the newest intact generation."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest

from rag.cli import index as index_cli
from rag.errors import IndexCorruptError, IndexNotFoundError, IndexUnwritableError, RagError
from rag.settings import Settings
from rag.store.faiss import CURRENT, FaissStore
from tests.stores import add_doc, make_store, newest_segment

REPAIR = "run `ragchat index repair`"


def three_generations(index_dir: Path) -> FaissStore:
    """An index at g000003 whose folder also keeps g000002 (the one before)."""
    store = make_store(index_dir)
    for n in range(3):
        add_doc(store, f"d{n}", [f"text of document {n}"])
    assert store.generations() == ["g000002", "g000003"]
    return store


def doc_ids(index_dir: Path) -> list[str]:
    return [d.id for d in make_store(index_dir).documents()]


def test_current_naming_a_missing_generation_keeps_every_intact_one(index_dir):
    store = three_generations(index_dir)
    (index_dir / CURRENT).write_text("g000009\n")
    with pytest.raises(IndexCorruptError, match=r"names g000009, but .* is missing") as err:
        add_doc(store, "new", ["new text"])
    assert REPAIR in str(err.value)
    assert store.generations() == ["g000002", "g000003"]  # the recovery points survive
    with pytest.raises(IndexCorruptError, match=REPAIR.replace("`", ".")):
        make_store(index_dir).search_chunks("text")

    report = make_store(index_dir).repair()
    assert report.before == "g000009" and report.current == "g000003"
    assert report.problem is not None and "g000009" in report.problem
    assert doc_ids(index_dir) == ["d0", "d1", "d2"]
    add_doc(store, "new", ["new text"])  # writing works again
    assert doc_ids(index_dir) == ["d0", "d1", "d2", "new"]


def test_a_broken_published_generation_is_replaced_by_the_one_before(index_dir):
    store = three_generations(index_dir)
    newest_segment(index_dir, "g000003").write_bytes(b"garbage" * 50)
    with pytest.raises(IndexCorruptError, match=r"bad seg\d+\.faiss") as err:
        add_doc(make_store(index_dir), "new", ["new text"])
    assert REPAIR in str(err.value)
    assert store.generations() == ["g000002", "g000003"]

    report = make_store(index_dir).repair()
    assert report.current == "g000002"
    assert report.removed == ["g000003"]  # the broken one, newer than the one kept
    assert doc_ids(index_dir) == ["d0", "d1"]


def test_missing_current_with_an_intact_generation_is_recovered_not_wiped(index_dir):
    three_generations(index_dir)
    (index_dir / CURRENT).unlink()
    add_doc(make_store(index_dir), "new", ["new text"])  # publishes g000003 first, then adds
    assert doc_ids(index_dir) == ["d0", "d1", "d2", "new"]


def test_a_first_ingestion_killed_just_before_publishing_is_kept_by_the_next_run(index_dir):
    store = make_store(index_dir)
    add_doc(store, "d0", ["zero"])
    (index_dir / CURRENT).unlink()  # as if killed after the last file, before the rename
    assert make_store(index_dir).documents() == []  # readers: nothing published yet
    add_doc(make_store(index_dir), "d1", ["one"])
    assert doc_ids(index_dir) == ["d0", "d1"]


def test_first_ingestion_leftovers_without_current_are_still_cleaned(index_dir):
    (index_dir / "manifests").mkdir(parents=True)
    (index_dir / "segments").mkdir()
    (index_dir / "manifests" / "g000001.json").write_bytes(b"half written")
    (index_dir / "segments" / "seg000001.faiss").write_bytes(b"half written")
    store = make_store(index_dir)
    add_doc(store, "d0", ["zero"])
    assert store.generations() == ["g000001"]  # the half-written manifest was replaced
    assert doc_ids(index_dir) == ["d0"]


def test_repair_of_an_intact_index_only_removes_crashed_leftovers(index_dir):
    three_generations(index_dir)
    (index_dir / "manifests" / "g000004.json").write_bytes(b"half written")
    (index_dir / "segments" / "seg000099.faiss").write_bytes(b"half written")
    (index_dir / "CURRENT.tmp").write_text("g000004\n")
    report = make_store(index_dir).repair()
    assert report.problem is None and report.current == "g000003"
    assert report.removed == ["g000004"]
    assert make_store(index_dir).generations() == ["g000002", "g000003"]
    assert not (index_dir / "CURRENT.tmp").exists()
    assert not (index_dir / "segments" / "seg000099.faiss").exists()


def test_nothing_to_recover_is_an_error_and_deletes_nothing(index_dir):
    store = make_store(index_dir)
    add_doc(store, "d0", ["zero"])
    (index_dir / "meta.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(IndexCorruptError, match="nothing to recover"):
        make_store(index_dir).repair()
    assert store.generations() == ["g000001"]
    with pytest.raises(IndexNotFoundError):
        make_store(index_dir.parent / "empty").repair()


def test_a_long_running_reader_follows_a_repair_and_a_reused_generation_name(index_dir):
    reader = three_generations(index_dir)  # like the web app: one store open all along
    assert [d.id for d in reader.documents()] == ["d0", "d1", "d2"]  # g000003 is open
    newest_segment(index_dir, "g000003").write_bytes(b"garbage" * 50)
    assert make_store(index_dir).repair().current == "g000002"
    add_doc(make_store(index_dir), "fresh", ["fresh text"])  # a new g000003
    assert make_store(index_dir).current_generation() == "g000003"
    assert [d.id for d in reader.documents()] == ["d0", "d1", "fresh"]
    hit = reader.search_chunks("fresh text", k=1)[0][0]
    assert (hit.doc_id, hit.text) == ("fresh", "fresh text")


@pytest.mark.parametrize("where", ["file", "inside a file"])
def test_an_index_path_that_is_a_file_is_a_clear_error_everywhere(tmp_path, where):
    blocker = tmp_path / "index"
    blocker.write_text("not a folder")
    index_dir = blocker if where == "file" else blocker / "sub"
    store = make_store(index_dir)
    expected = f"{blocker} is a file, not a folder"
    for read in (store.documents, store.chunk_count, store.all_chunks, store.status):
        with pytest.raises(IndexCorruptError, match=expected):
            read()
    with pytest.raises(IndexCorruptError, match=expected):
        store.search_chunks("anything")
    with pytest.raises(IndexUnwritableError, match=expected):
        add_doc(store, "d0", ["zero"])
    with pytest.raises(IndexCorruptError, match=expected):
        store.repair()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_an_unreadable_index_folder_is_a_clear_error(index_dir):
    add_doc(make_store(index_dir), "d0", ["zero"])
    index_dir.chmod(0)
    try:
        with pytest.raises(IndexCorruptError, match="cannot read it: permission denied"):
            make_store(index_dir).documents()
    finally:
        index_dir.chmod(0o755)


# -- the commands -----------------------------------------------------------------------


def run_command(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run an ``index`` command as ``ragchat`` does: a RagError is one line, exit code 2."""
    parser = argparse.ArgumentParser(prog="ragchat")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)
    index_cli.add_commands(sub, lambda a: Settings(index_dir=a.index))
    from rag.cli.ingest import add_commands as add_ingest_commands

    add_ingest_commands(sub, lambda a: Settings(index_dir=a.index))
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def bundled_index(index_dir: Path) -> Path:
    """An index made as if with the bundled embedding model (same name and dimension)."""
    settings = Settings(index_dir=index_dir)
    store = make_store(index_dir, model=settings.embedding_model, dimension=384)
    for n in range(3):
        add_doc(store, f"d{n}", [f"text of document {n}", f"more of document {n}"])
    return index_dir


def test_repair_command_says_what_it_did(bundled_index, capsys):
    (bundled_index / CURRENT).write_text("g000007\n")
    code, out, _ = run_command(["docs", "list", "--index", str(bundled_index)], capsys)
    assert code == 2
    code, out, err = run_command(["index", "repair", "--index", str(bundled_index)], capsys)
    assert code == 0, err
    assert "found: CURRENT names g000007, but" in out
    assert "the index now uses g000003, the newest intact generation" in out
    code, out, _ = run_command(["index", "repair", "--index", str(bundled_index)], capsys)
    assert code == 0
    assert out == "the published generation g000003 is intact\nnothing to repair\n"


def test_repair_command_with_nothing_to_recover_exits_2(tmp_path, capsys):
    code, out, err = run_command(["index", "repair", "--index", str(tmp_path / "none")], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: no index in") and err.count("\n") == 1


def test_status_command(bundled_index, capsys):
    (bundled_index / "manifests" / "g000009.json").write_text("{")  # a crashed ingestion's
    code, out, _ = run_command(["index", "status", "--index", str(bundled_index), "--json"], capsys)
    assert code == 0
    status = json.loads(out)
    assert status["generation"] == "g000003"
    assert (status["documents"], status["chunks"]) == (3, 6)
    assert status["embedding_model"] == Settings().embedding_model
    assert status["leftovers"] == ["g000009"]
    assert status["disk_bytes"] > 0
    code, out, _ = run_command(["index", "status", "--index", str(bundled_index)], capsys)
    assert "generation  g000003" in out and "leftovers   g000009" in out


def test_every_command_on_an_index_path_that_is_a_file_exits_2(tmp_path, capsys):
    blocker = tmp_path / "index"
    blocker.write_text("x")
    for argv in (["docs", "list"], ["index", "status"], ["index", "repair"]):
        code, _, err = run_command([*argv, "--index", str(blocker)], capsys)
        assert code == 2, argv
        assert "is a file, not a folder" in err and err.count("\n") == 1


def test_compact_command_merges_what_is_due_and_status_lists_segments(
    bundled_index, capsys, monkeypatch
):
    from rag.store import segments

    code, out, _ = run_command(["index", "compact", "--index", str(bundled_index)], capsys)
    assert (code, out) == (0, "nothing to compact\n")
    monkeypatch.setattr(segments, "ANN_MIN", 6)
    code, out, err = run_command(["index", "compact", "--index", str(bundled_index)], capsys)
    assert code == 0, err
    assert out.startswith("merged 3 segment(s) into seg") and "6 vectors" in out
    code, out, _ = run_command(["index", "status", "--index", str(bundled_index)], capsys)
    assert f"segment     seg000004 {segments.ANN_KIND} 6 vectors" in out
