"""The parser worker: reads file paths on stdin, streams each file's blocks on stdout.

Started by ``ingest.sandbox.ParserSandbox`` as ``python -m ingest.worker LIMITS_JSON``.
Its address space is capped (``RLIMIT_AS``) before anything is parsed, so runaway memory
becomes a ``MemoryError`` here rather than a host under pressure. Every file ends in an
``end`` or an ``error`` message; only running out of memory ends the worker.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
from pathlib import Path
from typing import IO, Any

from ingest.loaders import open_stream
from ingest.sandbox import EXIT_OUT_OF_MEMORY, ParseLimits, write_frame
from rag.errors import IngestError, ParseLimitError

# Imported before the worker says it is ready, so no file pays for them.
_PRELOAD = ("pypdf", "lxml.etree", "zipfile", "zlib")


def _limit_resources(limits: ParseLimits) -> None:
    cap = limits.max_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file


def _error(exc: IngestError) -> dict[str, Any]:
    return {
        "t": "error",
        "cls": type(exc).__name__,
        "reason": exc.reason,
        "limit": getattr(exc, "limit", None),
    }


def _parse(out: IO[bytes], path: Path, limits: ParseLimits) -> None:
    stream = open_stream(path, limits)
    write_frame(out, {"t": "open", "kind": stream.kind.value, "pages": stream.pages})
    for block in stream.blocks:
        write_frame(out, {"t": "block", "b": [block.text, block.page, block.heading, block.offset]})
    write_frame(out, {"t": "end"})


def main() -> int:
    """Serve parse requests until stdin closes."""
    limits = ParseLimits(**json.loads(sys.argv[1]))
    # Frames go to the original stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _limit_resources(limits)
    for module in _PRELOAD:
        importlib.import_module(module)
    write_frame(out, {"t": "ready"})
    for line in sys.stdin.buffer:
        path = Path(json.loads(line)["path"])
        try:
            _parse(out, path, limits)
        except IngestError as exc:
            write_frame(out, _error(exc))
        except MemoryError:
            limit_error = ParseLimitError(
                path, "RAG_PARSE_MAX_MB", f"parser ran out of its {limits.max_mb} MB of memory"
            )
            write_frame(out, _error(limit_error) | {"fatal": True})
            return EXIT_OUT_OF_MEMORY
        except RecursionError:
            write_frame(
                out, _error(IngestError(path, "parser failed: structure nested too deeply"))
            )
        # Sandbox boundary: any other exception of a third-party parser is that file's
        # failure, reported with its type; the worker goes on with the next file.
        except Exception as exc:  # noqa: BLE001
            reason = f"parser failed: {type(exc).__name__}: {exc}"[:500]
            write_frame(out, _error(IngestError(path, reason)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
