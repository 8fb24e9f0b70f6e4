"""Command-line ingestion: ``ragchat ingest`` and ``ragchat docs`` (also ``python -m ingest``)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rag.cli.caller import cli_caller
from rag.settings import Settings
from rag.text import safe_label

# Heavy modules (the pipeline, the store, the components that load models) are imported
# by the commands that use them, so ``--help``, ``docs list`` and ``index status`` start
# without loading torch (tests/integration/test_cli_startup.py checks it).
if TYPE_CHECKING:
    from ingest.pipeline import IngestReport
    from rag.store.faiss import DocumentInfo


def add_index_option(parser: argparse.ArgumentParser) -> None:
    """The ``--index`` flag every command takes."""
    parser.add_argument(
        "--index",
        metavar="DIR",
        type=Path,
        help="index folder (overrides RAG_INDEX_DIR; default ./data/index)",
    )


def add_commands(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Register ``ingest`` and ``docs`` on a subparsers object."""
    p = sub.add_parser("ingest", help="index files and folders", description=INGEST_HELP)
    configure_ingest_parser(p)
    p.set_defaults(func=lambda a: cmd_ingest(a, settings_of(a)))

    docs = sub.add_parser("docs", help="list or delete indexed documents")
    docs_sub = docs.add_subparsers(dest="docs_command", required=True)
    p = docs_sub.add_parser("list", help="list indexed documents")
    add_index_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=lambda a: cmd_docs_list(a, settings_of(a)))
    p = docs_sub.add_parser("delete", help="delete a document and all its chunks")
    p.add_argument("key", metavar="ID_OR_PATH", help="document id (or a unique prefix) or path")
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_docs_delete(a, settings_of(a)))


INGEST_HELP = (
    "Index PDF, DOCX, Markdown, HTML and text files; folders are walked recursively "
    "(symbolic links leading out of a folder are not followed). Unchanged files are "
    "skipped (compared by content hash), changed files replace their old chunks. Work is "
    "published in checkpoints (RAG_CHECKPOINT_CHUNKS): an interrupted run keeps them, and "
    "running the same command again resumes where it stopped."
)


def configure_ingest_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of the ingest command."""
    p.add_argument("paths", metavar="PATH", nargs="+", type=Path, help="files or folders")
    p.add_argument(
        "--prune",
        action="store_true",
        help="remove documents of the collection whose files no longer exist",
    )
    p.add_argument(
        "--collection",
        metavar="NAME",
        help="the collection to add them to (default: the default collection)",
    )
    add_index_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,  # keeps a -v given before the subcommand
        help="more log output (-vv for debug)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        metavar="N",
        help="word-pieces per chunk (overrides RAG_CHUNK_SIZE)",
    )
    p.add_argument(
        "--chunk-overlap",
        type=int,
        metavar="N",
        help="word-pieces shared by neighbouring chunks (overrides RAG_CHUNK_OVERLAP)",
    )


_BAR_LABELS = {"parse": "files", "read": "reading", "embed": "embedding", "publish": "published"}
_BAR_UNITS = {"parse": "file", "read": "char", "embed": "chunk", "publish": "chunk"}


class _Bars:
    """Progress on stderr: tqdm bars on a terminal; waits for the lock always.

    Rates are honest: a bar that first hears of its stage when some work is already done
    (the first embedded batch, say) counts that work from the previous progress event,
    not from the moment the bar was drawn (which gave "3355443 chunk/s"), and later
    counts go through ``update()`` so tqdm's smoothed rate sees each step's time.
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bars: dict[str, Any] = {}
        self._waiting_said = -1.0
        self._last_event = time.time()  # tqdm's clock

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "wait":
            self._waiting(done)
            return
        if not self.enabled or stage not in _BAR_LABELS:
            return
        from tqdm import tqdm

        began, self._last_event = self._last_event, time.time()
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(
                total=total or None, desc=_BAR_LABELS[stage], unit=_BAR_UNITS[stage],
                unit_scale=stage == "read", position=len(self.bars), leave=False,
                file=self.stream,
            )  # fmt: skip
            bar.start_t = bar.last_print_t = began  # the work counted began then
        if stage == "read" and done < bar.n:
            bar.reset()  # the next file
        bar.total = total or None
        bar.update(done - bar.n)

    def _waiting(self, seconds: int) -> None:
        """'waiting for another ingestion to publish… 12 s': each second on a terminal."""
        if self.enabled:
            self.stream.write(f"\rwaiting for another ingestion to publish… {seconds} s")
            self.stream.flush()
            self._waiting_said = time.monotonic()
        elif self._waiting_said < 0 or time.monotonic() - self._waiting_said >= 10:
            print(f"waiting for another ingestion to publish… {seconds} s", file=self.stream)
            self._waiting_said = time.monotonic()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Run an ingestion and print its summary; exit code 1 when any file failed."""
    from ingest.sandbox import ParseLimits, ParserSandbox
    from rag.service.components import open_service

    bars = _Bars(enabled=sys.stderr.isatty() and not args.json)
    with (
        ParserSandbox(ParseLimits.from_settings(settings)) as sandbox,
        open_service(settings, sandbox=sandbox, one_shot=True) as service,
    ):
        try:
            report = service.ingest(
                args.paths,
                caller=cli_caller(service, args),
                collection=args.collection,
                prune=args.prune,
                progress=bars,
            )
        finally:
            bars.close()
        # A background compaction would die with this process: run what is due now.
        compacted = service.compact_index()
    print_report(report, as_json=args.json)
    if not args.json:
        for r in compacted:
            print(f"compacted {len(r.merged)} segment(s) into {r.into} ({r.vectors:,} vectors) "
                  f"in {r.seconds:.1f}s", file=sys.stderr)  # fmt: skip
    return 1 if report.failed else 0


def print_report(report: IngestReport, *, as_json: bool) -> None:
    """The closing summary, as text or as one JSON object.

    Paths are printed as labels (``safe_label``): a file name cannot move the cursor or
    forge a line. The JSON keeps the real path, escaped by ``json.dumps`` (ASCII only, so
    undecodable names survive as escapes).
    """
    if as_json:
        print(json.dumps(report.to_json()))
        return
    width = shutil.get_terminal_size().columns if sys.stderr.isatty() else None
    for failed in report.failed:
        print(failure_line(failed.path, failed.reason or "", width), file=sys.stderr)
    resumed = report.resumed
    if resumed:
        kept = sum(f.resumed for f in resumed)
        print(
            f"resumed {len(resumed)} file(s) where an earlier run stopped "
            f"({kept:,} stored chunks not embedded again)",
            file=sys.stderr,
        )
    print(
        f"added {report.count('added')}, updated {report.count('updated')}, "
        f"unchanged {report.count('unchanged')}, removed {report.count('removed')}, "
        f"failed {len(report.failed)}; {report.chunks} chunks written in {report.seconds:.1f}s"
    )


def failure_line(path: str, reason: str, width: int | None = None) -> str:
    """'failed: PATH: REASON', one line; wrapped at spaces with an indent for a terminal.

    A terminal wraps long lines wherever the width ends, inside words; given its
    ``width`` the line is broken only between words, and the rest is indented. A word
    longer than the width (a path) is never split. Without a width (a pipe, a file) it
    stays one line, so ``grep failed:`` finds the whole message.
    """
    line = f"failed: {safe_label(path)}: {safe_label(reason)}"
    if width is None or len(line) <= width:
        return line
    return textwrap.fill(
        line,
        width=max(width - 1, 20),
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def cmd_docs_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print the indexed documents."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        collections = [args.collection] if getattr(args, "collection", None) else None
        docs = service.documents(caller=cli_caller(service, args), collections=collections)
    if args.json:
        # "name" is what the web app shows; "titles" are the original names per source.
        rows = [{**d.to_json(), "name": d.name, "titles": d.titles} for d in docs]
        print(json.dumps(rows, indent=2))
        return 0
    if not docs:
        print(f"no documents in {settings.resolved_index_dir}")
        return 0
    for d in docs:
        print(document_line(d))
        if d.pii is not None and (note := d.guard_note()):  # what the scan found
            print(f"    {note}")
    unscanned = sum(d.pii is None for d in docs)
    if unscanned:
        print(
            f"note: {unscanned} document{'' if unscanned == 1 else 's'} not scanned for "
            "personal data or injected instructions yet; the next ingestion scans them",
            file=sys.stderr,
        )
    return 0


def document_line(d: DocumentInfo) -> str:
    """One line of ``docs list``; names are labels, so no name can forge a line.

    Each file is shown by its title when it has one (an upload's original name, stored
    under a generated file name) with the stored path after it in parentheses.
    """
    pages = f"{d.pages} pages, " if d.pages else ""
    names = ", ".join(_named(s, t) for s, t in _titled(d)) or "(no source)"
    chunks = (
        f"{d.chunks} chunks"
        if d.complete
        else f"partial: {d.chunks:,} chunks; run ingest again to finish"
    )
    return f"{d.id[:12]}  {pages}{chunks}  {d.ingested_at}  {names}"


def _titled(d: DocumentInfo) -> list[tuple[str, str]]:
    titles = list(d.titles) + [""] * (len(d.sources) - len(d.titles))
    return list(zip(d.sources, titles, strict=False))


def _named(source: str, title: str) -> str:
    if not title or title == Path(source).name:
        return safe_label(source)
    return f"{safe_label(title)} ({safe_label(source)})"


def cmd_docs_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Delete one document (by id, id prefix or path) with all its chunks and vectors."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        doc = service.delete_document(args.key, caller=cli_caller(service, args))
    print(f"deleted document {doc.id[:12]} ({doc.chunks} chunks)")
    return 0
