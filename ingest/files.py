"""Find the files an ingestion reads: folders walked safely, odd entries refused with a reason.

Walking a folder never leaves it: a symbolic link is followed only when it points inside the
folder being ingested (and each folder is entered once, so link loops end). FIFOs, sockets
and devices are refused without being opened (opening a FIFO blocks), and so are names that
are not valid UTF-8 and paths the system cannot handle (ENAMETOOLONG). A path named directly
is taken as given: a symbolic link named on the command line is followed, and its content,
not its extension, decides whether it is read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.detect import SUPPORTED_SUFFIXES
from rag.errors import IngestError

_SPECIAL = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass(frozen=True)
class FoundFile:
    """A file to ingest, or an entry refused before reading (``problem`` says why)."""

    path: Path
    explicit: bool
    problem: str | None = None

    @property
    def key(self) -> str:
        """The name the index stores it under: the absolute path, symbolic links resolved."""
        return os.path.realpath(self.path)


def iter_files(paths: Sequence[Path]) -> Iterator[FoundFile]:
    """Files named directly, and the supported files found by walking folders.

    Hidden files and folders (names starting with a dot) are skipped when walking; so are
    files whose extension ragchat does not read. Entries that cannot be read safely (a link
    out of the folder, a FIFO, an undecodable name, a path too long) come back with a
    ``problem`` instead of raising.

    Raises:
        IngestError: a path named directly does not exist.
    """
    seen: set[str] = set()
    for found in _find(paths):
        if found.problem is None:
            if found.key in seen:  # the same file again (a link to it, or named twice)
                continue
            seen.add(found.key)
        yield found


def _find(paths: Sequence[Path]) -> Iterator[FoundFile]:
    for path in paths:
        path = Path(path)
        try:
            st = os.stat(path)  # follows a symbolic link named directly
        except FileNotFoundError:
            raise IngestError(path, "no such file or folder") from None
        except OSError as exc:
            yield FoundFile(path, True, os_reason(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(path)
        else:
            yield FoundFile(path, True, _refusal(path, st.st_mode))


def os_reason(exc: OSError) -> str:
    """A short reason for an ``OSError`` met while looking at a path."""
    if exc.errno == errno.ENAMETOOLONG:
        return "path too long for the system (ENAMETOOLONG)"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot read file: {exc.strerror or exc}"


def _refusal(path: Path, mode: int) -> str | None:
    """Why a file that exists is not read, or None when it is a readable candidate."""
    if not stat.S_ISREG(mode):
        what = _SPECIAL.get(stat.S_IFMT(mode), "not a file")
        return f"not a regular file ({what})"
    if not _decodable(str(path)):
        return "file name is not valid UTF-8; rename the file to index it"
    return None


def _decodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _wanted(name: str) -> bool:
    return Path(name).suffix.lower() in SUPPORTED_SUFFIXES


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)  # from the listing: no system call
    except OSError:
        return False


def _walk(root: Path) -> Iterator[FoundFile]:
    """Depth first, in name order, never leaving ``root`` and never entering a folder twice."""
    real_root = os.path.realpath(root)
    seen: set[tuple[int, int]] = set()
    stack: list[Iterator[os.DirEntry[str]]] = []

    def enter(folder: Path) -> FoundFile | None:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return None  # a link back to a folder already walked
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            return FoundFile(folder, False, f"cannot list folder: {os_reason(exc)}")
        stack.append(iter(entries))
        return None

    refused = enter(root)
    if refused is not None:
        yield refused
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        link = False
        try:
            link = entry.is_symlink()
            if link and not _inside(os.path.realpath(path), real_root):
                if _wanted(entry.name) or os.path.isdir(path):
                    yield FoundFile(path, False, "symbolic link out of the folder being ingested")
                continue
            st = os.stat(path) if link else entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            if _wanted(entry.name):
                yield FoundFile(path, False, "broken symbolic link" if link else "file vanished")
            continue
        except OSError as exc:
            if _wanted(entry.name) or _is_folder(entry):
                yield FoundFile(path, False, os_reason(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            refused = enter(path)
            if refused is not None:
                yield refused
        elif _wanted(entry.name):
            yield FoundFile(path, False, _refusal(path, st.st_mode))
