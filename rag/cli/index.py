"""``ragchat index status``, ``repair`` and ``migrate``: look after the index."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rag.settings import Settings
from rag.store.faiss import IndexStatus, RepairReport
from rag.text import safe_label

if TYPE_CHECKING:  # imported only where used: psycopg is not loaded for a folder index
    from rag.store.postgres import PostgresRepair, PostgresStatus

REPAIR_HELP = (
    "Point the index at its newest intact generation when the published one is missing or "
    "broken, and remove the folders that crashed ingestions left behind. Waits for a running "
    "ingestion to finish first. Exit code 2 when there is nothing to recover."
)


def add_commands(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Register ``index status`` and ``index repair`` on a subparsers object."""
    from rag.cli.ingest import add_index_option

    index = sub.add_parser("index", help="check or repair the index folder")
    index_sub = index.add_subparsers(dest="index_command", required=True)
    p = index_sub.add_parser("status", help="generation, documents, chunks, model and disk use")
    add_index_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=lambda a: cmd_status(a, settings_of(a)))
    p = index_sub.add_parser("repair", help="recover from a missing or broken generation",
                             description=REPAIR_HELP)  # fmt: skip
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_repair(a, settings_of(a)))
    p = index_sub.add_parser(
        "compact", help="merge small vector segments into an approximate-search segment now"
    )
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_compact(a, settings_of(a)))
    from rag.cli.migrate import add_command as add_migrate_command

    add_migrate_command(index_sub, settings_of)

    cache = sub.add_parser("cache", help="the response cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    p = cache_sub.add_parser("clear", help="remove every cached answer")
    p.set_defaults(func=lambda a: cmd_cache_clear(a, settings_of(a)))


def cmd_cache_clear(args: argparse.Namespace, settings: Settings) -> int:
    """Remove every answer from the response cache (answers are asked of the model again)."""
    from rag.cli.caller import cli_caller
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        count = service.clear_cache(caller=cli_caller(service, args))
    plural = "" if count == 1 else "s"
    print(f"removed {count} cached answer{plural}" if settings.cache else "the cache is off")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the state of the index; a missing or broken index is an error (exit code 2)."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        print_status(service.index_status(), as_json=args.json)
    return 0


def cmd_compact(args: argparse.Namespace, settings: Settings) -> int:
    """Compact the index until nothing is due, saying what was merged."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        print_compaction(service.compact_index())
    return 0


def print_compaction(reports: list[Any]) -> None:
    """One line per compaction (``nothing to compact`` when none was due)."""
    if not reports:
        print("nothing to compact")
    for r in reports:
        print(
            f"merged {len(r.merged)} segment(s) into {r.into} ({r.kind}, {r.vectors:,} vectors, "
            f"{r.dropped:,} deleted ones dropped) in {r.seconds:.1f}s"
        )


def cmd_repair(args: argparse.Namespace, settings: Settings) -> int:
    """Repair the index and say what was done; nothing to recover is an error (exit 2)."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        print_repair(service.repair_index())
    return 0


def print_status(status: IndexStatus | PostgresStatus, *, as_json: bool) -> None:
    """``index status`` output, as text or as one JSON object."""
    if as_json:
        print(json.dumps(status.to_json()))
        return
    if not isinstance(status, IndexStatus):  # Postgres
        print(f"index       {safe_label(status.url)} (Postgres schema {status.schema})")
        print(f"generation  {status.generation} (published {status.published_at})")
        print(f"documents   {status.documents}")
        print(f"chunks      {status.chunks}")
        print(f"model       {safe_label(status.embedding_model)} ({status.dimension} dimensions)")
        tables = ", ".join(f"{name} {_size(n)}" for name, n in status.tables.items())
        print(f"disk        {_size(status.disk_bytes)} with indexes ({tables})")
        print(f"server      {status.server}")
        return
    print(f"index       {safe_label(status.index_dir)}")
    print(f"generation  {status.generation} (published {status.published_at})")
    print(f"documents   {status.documents}")
    print(f"chunks      {status.chunks}")
    print(f"model       {safe_label(status.embedding_model)} ({status.dimension} dimensions)")
    print(f"disk        {_size(status.disk_bytes)} in {len(status.generations)} generation(s)")
    for seg in status.segments:
        dead = f", {seg['dead']:,} deleted" if seg.get("dead") else ""
        print(f"segment     {seg['name']} {seg['kind']} {seg['count']:,} vectors{dead}")
    if status.leftovers:
        print(
            f"leftovers   {', '.join(status.leftovers)} (from interrupted ingestions; "
            "`ragchat index repair` removes them)"
        )


def print_repair(report: RepairReport | PostgresRepair) -> None:
    """What ``index repair`` found and did, one line each."""
    if not isinstance(report, RepairReport):  # Postgres
        print(f"nothing to repair in Postgres (at {report.generation}): {report.reason}")
        return
    if report.problem is None:
        print(f"the published generation {report.current} is intact")
    else:
        print(f"found: {safe_label(report.problem)}")
        print(f"repaired: the index now uses {report.current}, the newest intact generation")
    if report.removed:
        print(f"removed leftovers of interrupted ingestions: {', '.join(report.removed)}")
    elif report.problem is None:
        print("nothing to repair")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = n / 1024
    for unit in ("KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
