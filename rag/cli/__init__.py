"""The ``ragchat`` command: one entry point whose subcommands cover both sides."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from rag.cli.caller import cli_caller
from rag.errors import RagError, with_id
from rag.settings import Settings, load_settings
from rag.text import safe_label

logger = logging.getLogger(__name__)


# Command-line flags that override settings, by settings field.
_FLAGS = {
    "index": "index_dir",
    "chunk_size": "chunk_size",
    "chunk_overlap": "chunk_overlap",
    "k": "retrieval_k",
    "base_url": "llm_base_url",
    "model": "llm_model",
    "mode": "retrieval_mode",
    "fusion": "fusion",
}


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, field in _FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    return load_settings(**overrides)


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their flags."""
    from rag.cli.ingest import add_commands, add_index_option

    parser = argparse.ArgumentParser(
        prog="ragchat",
        description="Chat with your documents. Settings come from RAG_* environment "
        "variables; flags override them.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument(
        "--user",
        metavar="NAME",
        help="act as this user: read only what NAME may read (default: the operator, an admin)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub, _settings)
    from rag.cli.chat import add_commands as add_chat_commands

    add_chat_commands(sub, _settings, add_index_option, add_mode_option)
    from rag.cli.evaluate import add_command as add_eval_command

    add_eval_command(sub, _settings, add_index_option, add_fusion_option)
    from rag.cli.index import add_commands as add_index_commands

    add_index_commands(sub, _settings)
    from rag.cli.batch import add_commands as add_batch_commands

    add_batch_commands(sub, _settings, add_index_option)
    from rag.cli.admin import add_commands as add_admin_commands

    add_admin_commands(sub, _settings)
    from rag.cli.review import add_commands as add_review_commands

    add_review_commands(sub, _settings)

    p = sub.add_parser(
        "search",
        help="show the chunks most similar to a query",
        description=SEARCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", help="the question or keywords")
    p.add_argument("-k", type=int, default=5, metavar="N", help="how many chunks (default 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_mode_option(p)
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_search(a, _settings(a)))
    return parser


SEARCH_HELP = """\
Show the chunks retrieval ranks highest for a query, best first.

Each line shows the chunk's relevance: a number from 0 to 1 saying how close the
chunk's meaning is to the query's (the cosine similarity of their embeddings mapped
from -1..1 to 0..1, so 0.5 is unrelated and 1 identical; in every mode). Answers use
only chunks at or above RAG_MIN_RELEVANCE; this probe lists the top chunks whatever
their relevance.

--json prints both numbers for each chunk: "relevance" (the 0..1 figure above) and
"score" (the raw ranking score of the retrieval method: a fused z-score in hybrid
mode, which can be negative, or a similarity or BM25 score; it orders the list
but has no fixed scale)."""


def add_mode_option(p: argparse.ArgumentParser) -> None:
    """The ``--mode`` flag of the retrieving commands."""
    p.add_argument(
        "--mode",
        choices=["vector", "keyword", "hybrid"],
        help="retrieval method (overrides RAG_RETRIEVAL_MODE; default hybrid)",
    )
    add_fusion_option(p)


def add_fusion_option(p: argparse.ArgumentParser) -> None:
    """The ``--fusion`` flag of the retrieving commands."""
    p.add_argument(
        "--fusion",
        choices=["zscore", "rrf"],
        help="how hybrid mode fuses the rankings (overrides RAG_FUSION; default zscore)",
    )


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    """Print the top chunks for a query: our retrieval probe (no relevance threshold)."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        service.store.snapshot()  # a missing index fails here, before the model loads
        hits = service.search(args.query, caller=cli_caller(service, args), k=args.k)
    if args.json:
        print(json.dumps([h.to_json() for h in hits], indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print("no chunks in the index")
    for n, hit in enumerate(hits, 1):
        page = f" p. {hit.page}" if hit.page else ""
        text = safe_label(" ".join(hit.text.split()))
        flagged = f"  flagged: {', '.join(hit.flags)}" if hit.flags else ""
        print(
            f"[{n}] relevance {hit.relevance:.2f}  {safe_label(hit.source)}{page}  "
            f"({hit.chunk_id}){flagged}"
        )
        print(f"    {text[:300]}{'...' if len(text) > 300 else ''}")
    return 0


def _configure_logging(verbosity: int) -> None:
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("pypdf", "httpx", "sentence_transformers", "transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if verbosity < 2:
        logging.getLogger("pypdf").setLevel(logging.ERROR)
    from rag.service.components import redact_logs

    redact_logs()  # no personal data in logs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ragchat`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except RagError as exc:
        print(f"error: {safe_label(with_id(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``ragchat search ... | head``): end quietly, as cat does.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except KeyboardInterrupt:
        what = _INTERRUPTED.get(args.command)
        print(f"interrupted; {what}" if what else "interrupted", file=sys.stderr)
        return 130
    return code


# What an interrupted command leaves behind, by command.
_INTERRUPTED = {
    "ingest": "checkpoints already published stay in the index; run the same ingest again "
    "to resume",
    "llm": "stopped the local model server",
    "docs": "the index is as it was before the command or after it, never in between",
    "index": "the index is as it was before the command or after it, never in between",
}
