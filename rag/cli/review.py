"""``ragchat review list``, ``mark`` and ``export``: the review queue from the command line.

As the other commands, it acts as the operator (an admin) unless ``--user NAME`` says
otherwise; the service decides what that user may see and review.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.cli.caller import cli_caller
from rag.settings import Settings
from rag.text import safe_label

if TYPE_CHECKING:
    from rag.review.store import ReviewItem

EXPORT_HELP = (
    "Write the reviewed answers as a `ragchat eval` dataset (JSON Lines: question, sources, "
    "pages, passage, reference_answer): the corrections, and the answers found right, that "
    "cite something. Append them to your regression questions."
)


def add_commands(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """Register ``review list``, ``review mark`` and ``review export``."""
    review = sub.add_parser("review", help="the review queue: list, mark, export as eval data")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    p = review_sub.add_parser("list", help="queued answers with their reasons (open by default)")
    p.add_argument(
        "--status", choices=["open", "right", "wrong", "all"], default="open",
        help="which items (default: open)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.set_defaults(func=lambda a: cmd_list(a, settings_of(a)))
    p = review_sub.add_parser(
        "mark", help="mark an answer right, or wrong with the correct answer and its sources"
    )
    p.add_argument("item", type=int, metavar="ID")
    p.add_argument("verdict", choices=["right", "wrong"])
    p.add_argument("--answer", metavar="TEXT", help="the correct answer (with `wrong`)")
    p.add_argument(
        "--source", action="append", default=[], metavar="CHUNK_ID",
        help="a passage the correct answer cites (repeat; chunk ids from `ragchat search`)",
    )  # fmt: skip
    p.set_defaults(func=lambda a: cmd_mark(a, settings_of(a)))
    p = review_sub.add_parser(
        "export", help="reviewed answers as eval lines", description=EXPORT_HELP
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(func=lambda a: cmd_export(a, settings_of(a)))


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print the queue as the caller may see it."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        status = None if args.status == "all" else args.status
        items = service.review.queue(cli_caller(service, args), status)
    if args.json:
        for item in items:
            print(json.dumps(item.to_json(), ensure_ascii=False))
        return 0
    if not items:
        print("nothing to review" if status == "open" else "no items")
    for item in items:
        print(describe(item))
    return 0


def describe(item: ReviewItem) -> str:
    """One item in two lines: id, status, reasons, who asked when; the question."""
    reasons = ", ".join(r.replace("_", " ") for r in item.reasons)
    head = f"#{item.id}  {item.status}  {reasons}  asked by {safe_label(item.asked_by_name)}"
    return f"{head} {item.asked_at}\n    {safe_label(' '.join(item.question.split()), 200)}"


def cmd_mark(args: argparse.Namespace, settings: Settings) -> int:
    """Review one item."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        item = service.review.review(
            args.item, args.verdict, cli_caller(service, args),
            correction=args.answer, sources=args.source,
        )  # fmt: skip
    served = "served from now on" if item.served else "not served (nothing to cite)"
    print(f"#{item.id} marked {item.status}; {served}")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """Write the reviewed answers as eval lines to ``--out`` or stdout."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        lines = service.review.export(cli_caller(service, args))
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(
        f"{len(lines)} reviewed answer(s) written to {safe_label(str(args.out))}", file=sys.stderr
    )
    return 0
