from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.files import iter_files
from rag.errors import IngestError
from rag.text import safe_label


def walk(*paths: Path) -> dict[str, str | None]:
    """name relative to the first path -> problem (None: to be read)."""
    root = paths[0]
    out = {}
    for found in iter_files(list(paths)):
        try:
            name = found.path.relative_to(root).as_posix()
        except ValueError:
            name = str(found.path)
        out[name] = found.problem
    return out


def test_walks_folders_and_skips_hidden_and_unknown(tmp_path: Path):
    (tmp_path / "a.md").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.PDF").write_bytes(b"%PDF-")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.md").write_text("x")
    found = [f.path.relative_to(tmp_path).as_posix() for f in iter_files([tmp_path])]
    assert found == ["a.md", "sub/b.PDF"]


def test_missing_path_is_an_error(tmp_path: Path):
    with pytest.raises(IngestError, match="no such file"):
        list(iter_files([tmp_path / "missing"]))


def test_symlinks_out_of_the_folder_are_refused_and_inside_ones_followed(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("root:x:0:0")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "sub" / "real.md").write_text("# Real")
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "leak.txt").symlink_to(outside / "secret.txt")
    (docs / "leakdir").symlink_to(outside)
    (docs / "alias.md").symlink_to(docs / "sub" / "real.md")  # inside: the same file once
    (docs / "sub" / "loop").symlink_to(docs)  # a loop back to the top
    (docs / "broken.txt").symlink_to(docs / "nowhere.txt")
    found = walk(docs)
    out = "symbolic link out of the folder being ingested"
    assert found == {
        "alias.md": None,
        "broken.txt": "broken symbolic link",
        "leak.txt": out,
        "leakdir": out,
        "passwd.txt": out,
    }
    (alias,) = [f for f in iter_files([docs]) if f.problem is None]
    assert alias.key == str((docs / "sub" / "real.md").resolve())


def test_a_symlink_named_directly_is_followed(tmp_path: Path):
    target = tmp_path / "target.txt"
    target.write_text("hello")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    (found,) = iter_files([link])
    assert found.problem is None and found.key == str(target)


def test_fifos_are_refused_without_being_opened(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    os.mkfifo(docs / "pipe.txt")  # opening it for reading would block the run
    os.mkfifo(docs / "pipe")  # not a name ragchat reads: skipped silently
    (docs / "ok.txt").write_text("fine")
    assert walk(docs) == {"ok.txt": None, "pipe.txt": "not a regular file (a FIFO)"}
    (named,) = iter_files([docs / "pipe"])  # named directly: refused too
    assert named.problem == "not a regular file (a FIFO)"
    (device,) = iter_files([Path("/dev/null")])
    assert device.problem == "not a regular file (a character device)"


def test_undecodable_names_are_refused_and_shown_escaped(tmp_path: Path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    with open(raw, "wb") as fh:
        fh.write(b"latin-1 name")
    (found,) = iter_files([tmp_path])
    assert found.problem is not None and "not valid UTF-8" in found.problem
    assert safe_label(str(found.path)).endswith("caf\\udce9.txt")


def test_paths_too_long_for_the_system_are_a_reason_not_a_traceback(tmp_path: Path):
    (tmp_path / "short.md").write_text("# Short")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(24):  # 24 x 201 bytes: beyond PATH_MAX (4096)
            name = "d" * 200
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("deep.md", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as fh:
            fh.write("# Deep")
    finally:
        os.close(fd)
    found = list(iter_files([tmp_path]))
    assert [f.path.name for f in found if f.problem is None] == ["short.md"]
    (refused,) = [f for f in found if f.problem is not None]
    assert "path too long" in refused.problem
