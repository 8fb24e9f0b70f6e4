"""``ragchat index migrate --to postgresql://...``: copy the index folder into Postgres."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rag.settings import Settings
from rag.text import safe_label

MIGRATE_HELP = (
    "Copy the embedded index (RAG_INDEX_DIR or --index) into Postgres with pgvector: every "
    "document with its names, collection, scan results and stored vectors, so nothing is "
    "embedded again. The copy is one transaction: an interrupted migration leaves the target "
    "empty, and a target that already holds documents is refused. Then set RAG_STORE_URL to "
    "the same URL on every app replica and worker."
)


def add_command(index_sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Register ``index migrate`` on the ``index`` subcommands."""
    from rag.cli.ingest import add_index_option

    p = index_sub.add_parser(
        "migrate", help="copy the index folder into Postgres (no re-embedding)",
        description=MIGRATE_HELP,
    )  # fmt: skip
    p.add_argument("--to", required=True, metavar="URL", help="postgresql://user:pw@host/db")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_migrate(a, settings_of(a)))


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Copy the folder index named by the settings into the Postgres database ``--to``."""
    from rag.service.components import build_store
    from rag.settings import load_settings
    from rag.store.migrate import migrate_index
    from rag.store.postgres import PostgresStore

    # The target URL is checked like RAG_STORE_URL; the source is the folder.
    target_settings = load_settings(**{**settings.model_dump(), "store_url": args.to})
    source = build_store(settings.model_copy(update={"store_url": None}))
    target = build_store(target_settings)
    assert isinstance(target, PostgresStore)

    def progress(done: int, total: int) -> None:
        if not args.json:
            print(f"\rcopied {done:,} of {total:,} chunks", end="", file=sys.stderr, flush=True)

    try:
        report = migrate_index(source, target, progress=progress)
    finally:
        if not args.json:
            print(file=sys.stderr)
        target.close()
        source.close()
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"copied {report.documents} documents ({report.partial} partial), "
          f"{report.chunks} chunks and {report.sources} source names to {safe_label(target.label)} "
          f"in {report.seconds:.1f} s; nothing was embedded again")  # fmt: skip
    for name, n in sorted(report.collections.items()):
        print(f"  collection {safe_label(name)}: {n} documents")
    print("scan results copied" if report.scanned else "not scanned: the next write scans it")
    for note in report.skipped:
        print(f"skipped {safe_label(note)}")
    print(f"now set RAG_STORE_URL={safe_label(target.label)} (with its password) everywhere")
    return 0
