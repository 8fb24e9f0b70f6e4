"""Parse files in a separate worker process, within time and memory limits.

A hostile or broken file (a decompression bomb, a parser hang, a crash in C code, runaway
memory) costs one clear ``IngestError`` for that file and a fresh worker, never the run.
One long-lived worker parses file after file (started with ``subprocess``, never by forking
this process, which holds model threads); it is replaced after a crash, a kill or a memory
limit. Blocks come back streamed, one length-prefixed JSON frame each, so memory stays flat
on both sides however large the file.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from ingest.detect import Kind
from ingest.loaders import Block, LoadedStream
from rag.errors import IngestError, ParseLimitError, RagError, UnsupportedFileError

if TYPE_CHECKING:
    from rag.settings import Settings

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
# Largest frame the parent accepts: a block is at most 256K characters (x6 escaped).
_MAX_FRAME = 8 * 1024 * 1024
# A worker whose memory grew this far above its start (heap fragmentation after a large
# file) is replaced before the next file.
_RECYCLE_ABOVE_MB = 256
# Exit status of a worker that ran out of memory (after reporting it).
EXIT_OUT_OF_MEMORY = 3
_NOT_READY = "the parser worker did not get ready within {:g} s"


@dataclass(frozen=True)
class ParseLimits:
    """What one file's parser may take: time, memory, output and DOCX archive shape."""

    timeout_s: float = 60.0
    max_mb: int = 1024
    max_pages: int = 50_000
    max_chars: int = 200_000_000
    docx_max_entries: int = 10_000
    docx_max_unzipped_mb: int = 1024
    docx_max_ratio: int = 200

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        """The limits the ``RAG_PARSE_*`` and ``RAG_DOCX_*`` settings describe."""
        return cls(
            timeout_s=settings.parse_timeout_s,
            max_mb=settings.parse_max_mb,
            max_pages=settings.parse_max_pages,
            max_chars=settings.parse_max_chars,
            docx_max_entries=settings.docx_max_entries,
            docx_max_unzipped_mb=settings.docx_max_unzipped_mb,
            docx_max_ratio=settings.docx_max_ratio,
        )


def write_frame(out: IO[bytes], message: dict[str, Any]) -> None:
    """Send one message: a 4-byte length, then JSON (ASCII, so lone surrogates survive)."""
    data = json.dumps(message, ensure_ascii=True).encode("ascii")
    out.write(_HEADER.pack(len(data)) + data)
    out.flush()


class _Timeout(Exception):
    """The worker said nothing for longer than allowed."""


class _WorkerGone(Exception):
    """The worker cannot be reached: it exited, crashed or never started."""


class _Worker:
    """One worker process and the parent's end of its pipes."""

    def __init__(self, limits: ParseLimits) -> None:
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingest.worker", json.dumps(asdict(limits))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:  # no memory, no process slots, no file descriptors left
            raise _WorkerGone(f"cannot start a process: {exc}") from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin
        self._fd = self.proc.stdout.fileno()
        self._buf = bytearray()
        self.ready = False
        self.baseline_kb = 0

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for the worker's hello (its imports done); note its resident baseline."""
        if self.ready:
            return
        message = self.read(timeout_s)
        if message.get("t") != "ready":
            raise _WorkerGone(f"unexpected first message {message.get('t')!r}")
        self.ready = True
        self.baseline_kb = self.rss_kb()
        logger.debug("parser worker %s ready in %.2f s", self.proc.pid, self.elapsed)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._in.write(json.dumps(message, ensure_ascii=True).encode("ascii") + b"\n")
            self._in.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerGone(f"cannot reach the worker: {exc}") from exc

    def read(self, timeout_s: float) -> dict[str, Any]:
        """The next message, waiting at most ``timeout_s`` for it to arrive."""
        deadline = time.monotonic() + timeout_s
        header = self._read_exact(_HEADER.size, deadline)
        (size,) = _HEADER.unpack(header)
        if size > _MAX_FRAME:
            raise _WorkerGone(f"oversized message ({size} bytes)")
        message: dict[str, Any] = json.loads(self._read_exact(size, deadline))
        return message

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                raise _Timeout
            data = os.read(self._fd, max(65536, n - len(self._buf)))
            if not data:
                raise _WorkerGone("output ended")
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def rss_kb(self) -> int:
        """Resident memory of the worker in KB (0 where /proc is not available)."""
        try:
            with open(f"/proc/{self.proc.pid}/statm") as fh:
                pages = int(fh.read().split()[1])
        except (OSError, ValueError, IndexError):
            return 0
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024

    def exit_reason(self, limits: ParseLimits) -> str:
        """Why the worker's output ended, once it has exited."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return "parser stopped responding"
        if code == EXIT_OUT_OF_MEMORY:
            return f"parser ran out of its {limits.max_mb} MB of memory"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"parser crashed ({name})"
        return f"parser exited unexpectedly (status {code})"

    def kill(self) -> None:
        """Stop the worker and close the pipes; never raises (the worker may be long gone)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.warning("parser worker %s did not exit after SIGKILL", self.proc.pid)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is None:
                continue
            try:
                # A path still buffered for a dead worker makes this flush raise
                # BrokenPipeError; the pipe is closed all the same.
                pipe.close()
            except OSError as exc:
                logger.debug("closing a pipe of parser worker %s: %s", self.proc.pid, exc)


class ParserSandbox:
    """Opens files as block streams parsed in a worker process within ``limits``.

    Not thread-safe: one stream is read at a time. Opening the next file while a stream is
    still unread abandons it (its worker is replaced).
    """

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self._worker: _Worker | None = None
        self._busy = False
        self.restarts = 0
        self._start()  # starts now, imports meanwhile

    def __enter__(self) -> ParserSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker (never raises, even when the worker has died)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()

    @property
    def worker_pid(self) -> int | None:
        """The current worker's process id (for measurements)."""
        return self._worker.proc.pid if self._worker is not None else None

    def _start(self) -> None:
        """Start a worker now, so its start-up overlaps the caller's work.

        A failure to start is only logged here; the next ``open`` tries again and reports it.
        """
        try:
            self._worker = _Worker(self.limits)
        except _WorkerGone as exc:
            logger.warning("the parser worker could not be started: %s", exc)
            self._worker = None

    def _replace(self, start: bool = True) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()
            self.restarts += 1
        self._busy = False
        if start:
            self._start()

    def _ready(self) -> _Worker:
        """The current worker once it has said it is ready.

        A worker whose process has exited since its last file (killed while idle, by the
        OOM killer or by hand) is replaced first.

        Raises:
            _WorkerGone: the worker exited or crashed before it was ready.
            _Timeout: it did not get ready in time (it has been stopped).
        """
        worker = self._worker
        if worker is not None and worker.proc.poll() is not None:
            logger.warning(
                "parser worker %s exited while idle (%s); starting another",
                worker.proc.pid,
                worker.exit_reason(self.limits),
            )
            self._replace()
            worker = self._worker
        if worker is None:
            worker = self._worker = _Worker(self.limits)
        try:
            worker.wait_ready(max(60.0, self.limits.timeout_s))
        except _WorkerGone as exc:
            reason = worker.exit_reason(self.limits)
            self._replace(start=False)
            raise _WorkerGone(f"{exc}: {reason}") from exc
        except _Timeout:
            self._replace(start=False)
            raise
        return worker

    def ready_worker(self) -> _Worker:
        """The current worker once it has started (starting one if needed).

        Raises:
            RagError: the worker process cannot be started.
        """
        try:
            return self._ready()
        except _WorkerGone as exc:
            raise RagError(f"the parser worker could not be started: {exc}") from exc
        except _Timeout as exc:
            raise RagError(_NOT_READY.format(max(60.0, self.limits.timeout_s))) from exc

    def _send(self, path: Path) -> _Worker:
        """Hand ``path`` to a ready worker; one that is gone is replaced and tried once more.

        Raises:
            IngestError: no worker could be started or reached.
        """
        for attempt in (1, 2):
            try:
                worker = self._ready()
                grown_kb = worker.rss_kb() - worker.baseline_kb
                if worker.baseline_kb and grown_kb > _RECYCLE_ABOVE_MB * 1024:
                    self._replace()
                    worker = self._ready()
                worker.send({"path": os.fsdecode(path)})
            except _Timeout as exc:  # a start-up this slow will not be quicker next time
                reason = _NOT_READY.format(max(60.0, self.limits.timeout_s))
                raise IngestError(path, reason) from exc
            except _WorkerGone as exc:
                if attempt == 2:
                    reason = f"the parser worker could not be started: {exc}"
                    raise IngestError(path, reason) from exc
                logger.warning("parser worker lost (%s); starting another", exc)
                self._replace(start=False)
                continue
            return worker
        raise AssertionError("unreachable")  # pragma: no cover

    def open(self, path: Path) -> LoadedStream:
        """Start parsing ``path`` in the worker; its kind (and pages) are known on return.

        A worker that died since the last file is replaced first, so one dead worker costs
        no file.

        Raises:
            IngestError: the file is unreadable, unsupported or corrupt, or breaks a limit
                (``ParseLimitError``: time, memory, pages, characters, archive shape), or
                the worker process cannot be started at all. Nothing else.
        """
        if self._busy:
            logger.debug("abandoning an unfinished stream; replacing the parser worker")
            self._replace()
        worker = self._send(path)
        self._busy = True
        try:
            first = self._next(worker, path)
        except BaseException:
            self._busy = False
            raise
        try:
            kind = Kind(first["kind"]) if first.get("t") == "open" else None
        except (KeyError, ValueError):
            kind = None
        if kind is None:
            self._replace()
            raise IngestError(path, f"parser sent an unexpected reply {str(first)[:200]!r}")
        return LoadedStream(
            path=path, kind=kind, blocks=self._blocks(worker, path), pages=first.get("pages")
        )

    def _next(self, worker: _Worker, path: Path) -> dict[str, Any]:
        """The worker's next message for ``path``; an error message is raised as such."""
        try:
            message = worker.read(self.limits.timeout_s)
        except _Timeout:
            self._replace()
            raise ParseLimitError(
                path,
                "RAG_PARSE_TIMEOUT_S",
                f"parser stopped after {self.limits.timeout_s:g} s without output",
            ) from None
        except (_WorkerGone, ValueError) as exc:
            reason = worker.exit_reason(self.limits)
            out_of_memory = worker.proc.returncode == EXIT_OUT_OF_MEMORY
            self._replace()
            if out_of_memory:
                raise ParseLimitError(path, "RAG_PARSE_MAX_MB", reason) from exc
            raise IngestError(path, reason) from exc
        if message.get("t") == "error":
            self._busy = False
            if message.get("fatal"):
                self._replace()
            raise _error_from(path, message)
        return message

    def _blocks(self, worker: _Worker, path: Path) -> Iterator[Block]:
        finished = False
        try:
            while True:
                message = self._next(worker, path)
                kind = message.get("t")
                if kind == "end":
                    finished = True
                    self._busy = False
                    return
                yield _block_from(path, message)
        except IngestError:
            finished = True
            raise
        finally:
            if not finished and self._worker is worker:
                # Closed before the end: the worker is still sending this file.
                self._replace()


def _block_from(path: Path, message: dict[str, Any]) -> Block:
    if message.get("t") != "block":
        raise IngestError(path, f"parser sent an unexpected message {message.get('t')!r}")
    try:
        text, page, heading, offset = message["b"]
    except (KeyError, TypeError, ValueError) as exc:
        raise IngestError(path, f"parser sent a bad block: {exc!r}") from exc
    return Block(text=text, page=page, heading=heading, offset=offset)


def _error_from(path: Path, message: dict[str, Any]) -> IngestError:
    """Rebuild the worker's error for the caller's path."""
    reason = str(message.get("reason") or "parser failed")
    cls = message.get("cls")
    if cls == "ParseLimitError":
        limit = str(message.get("limit") or "")
        return ParseLimitError(path, limit, reason.removesuffix(f" (limit {limit})"))
    if cls == "UnsupportedFileError":
        return UnsupportedFileError(path, reason)
    return IngestError(path, reason)
