"""``ragchat ask``, ``ragchat chat`` and ``ragchat llm serve``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rag.cli.caller import cli_caller
from rag.errors import RagError, with_id
from rag.settings import Settings
from rag.text import safe_label, safe_text

logger = logging.getLogger(__name__)

# The chain, the store and the model clients are imported by the commands that run them:
# ``ragchat --help`` and the commands that only read the index never load them.
if TYPE_CHECKING:
    from rag.chain import Answer, AnswerStream
    from rag.service.core import RagService


def add_commands(
    sub: Any,
    settings_of: Callable[[argparse.Namespace], Settings],
    add_index_option: Callable[[argparse.ArgumentParser], None],
    add_mode_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``ask``, ``chat`` and ``llm`` on a subparsers object."""
    p = sub.add_parser("ask", help="answer one question from the documents")
    p.add_argument("question")
    p.add_argument("--json", action="store_true", help="print one JSON object when done")
    p.add_argument(
        "--compare",
        metavar="A,B",
        help="answer with each of these models, side by side (names on the configured "
        "endpoint, or NAME@URL for another OpenAI-compatible endpoint)",
    )
    p.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="answer from this collection only (repeatable; default: all you may read)",
    )
    _add_llm_options(p)
    add_mode_option(p)
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_ask(a, settings_of(a)))

    p = sub.add_parser("chat", help="an interactive conversation that remembers earlier turns")
    p.add_argument("--conversation", metavar="ID", help="continue a saved conversation")
    p.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="answer from this collection only (repeatable; default: all you may read)",
    )
    _add_llm_options(p)
    add_mode_option(p)
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_chat(a, settings_of(a)))

    llm = sub.add_parser("llm", help="the bundled local model")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True)
    p = llm_sub.add_parser("serve", help="serve the bundled model (OpenAI-compatible) here")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    p.set_defaults(func=lambda a: cmd_llm_serve(a, settings_of(a)))


def _add_llm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-k",
        type=int,
        metavar="N",
        help="chunks retrieved per question (overrides RAG_RETRIEVAL_K)",
    )
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="OpenAI-compatible endpoint (overrides RAG_LLM_BASE_URL; unset: the bundled model)",
    )
    p.add_argument("--model", metavar="NAME", help="model name (overrides RAG_LLM_MODEL)")


@contextlib.contextmanager
def _open(settings: Settings) -> Iterator[RagService]:
    """The service for a question command: the index checked, the models started."""
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        service.store.snapshot()  # fails fast, before a model server starts, with no index
        service.warm()  # the embedding model loads while the local model server starts
        yield service


def _passage(text: str, width: int = 100, lines: int = 3) -> str:
    return textwrap.indent(
        textwrap.shorten(" ".join(text.split()), width=width * lines, placeholder=" ..."), "    "
    )


def print_sources(answer: Answer) -> None:
    """The cited sources under an answer."""
    if not answer.citations:
        return
    print("\nSources:")
    for c in answer.citations:
        page = f", page {c.source.page}" if c.source.page is not None else ""
        matched = "  (matched by ragchat: the model cited nothing)" if c.inferred else ""
        flagged = ""
        if c.source.flags:
            flagged = f"  (flagged at ingestion: {', '.join(c.source.flags)})"
        print(f"  [{c.n}] {safe_label(c.source.source)}{page}{matched}{flagged}")
        passage = safe_text(_passage(c.source.text))
        print(textwrap.fill(passage, width=104, subsequent_indent="    "))


def _stream_to_terminal(stream: AnswerStream) -> Answer:
    try:
        for piece in stream:
            # Model output may hold terminal escapes (colours, hyperlinks, cursor moves):
            # they are printed as visible text, never acted on.
            sys.stdout.write(safe_text(piece))
            sys.stdout.flush()
    except RagError:
        sys.stdout.write("\n")
        raise
    sys.stdout.write("\n")
    sys.stdout.flush()
    if stream.result is None:
        raise RagError("the answer ended early")
    if stream.result.cut:
        print(f"[answer cut: {stream.result.cut}; what arrived is shown]", file=sys.stderr)
    if stream.result.served_from == "cache":
        print("[from the cache: written earlier for the same question]", file=sys.stderr)
    return stream.result


def _collections(args: argparse.Namespace) -> list[str] | None:
    """``--collection A --collection B``: only those collections."""
    return getattr(args, "collection", None) or None


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    """Stream one answer, then its sources (or print one JSON object with --json)."""
    with _open(settings) as service:
        if args.compare:
            return _compare(service, args)
        # With --json nothing is shown before the end, so a stream that drops midway
        # falls back to the next endpoint rather than cutting the answer.
        stream = service.ask(
            args.question,
            caller=cli_caller(service, args),
            collections=_collections(args),
            buffered=args.json,
        )
        if args.json:
            for _ in stream:
                pass
            if stream.result is None:
                raise RagError("the answer ended early")
            print(json.dumps(stream.result.to_json(), ensure_ascii=False, indent=2))
            return 0
        answer = _stream_to_terminal(stream)
        print_sources(answer)
    return 0


def _compare(service: RagService, args: argparse.Namespace) -> int:
    """``ask --compare``: every model's answer (or error), one after the other."""
    answers = service.compare(
        args.question,
        args.compare,
        caller=cli_caller(service, args),
        collections=_collections(args),
    )
    if args.json:
        print(
            json.dumps(
                {
                    model: a.to_json() if not isinstance(a, RagError) else {"error": str(a)}
                    for model, a in answers.items()
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for model, a in answers.items():
            print(f"== {model}")
            if isinstance(a, RagError):
                print(f"error: {a}")
                continue
            print(safe_text(a.text))
            print_sources(a)
            print()
    return 1 if any(isinstance(a, RagError) for a in answers.values()) else 0


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    """A terminal conversation; /new starts another, /quit or Ctrl-D ends."""
    with _open(settings) as service:
        caller = cli_caller(service, args)
        conversation = (
            service.conversation(args.conversation, caller=caller)
            if args.conversation
            else service.create_conversation(caller=caller)
        )
        print(f"conversation {conversation.id} - /new for a new one, /quit to leave")
        for message in service.messages(conversation.id, caller=caller):
            if message.content:  # a failed question's answer has none
                who = "you" if message.role == "user" else "ragchat"
                print(f"{who}> {safe_text(message.content)}")
        while True:
            try:
                question = input("you> ").strip()
            except EOFError:
                print()
                break
            if question in ("/quit", "/exit"):
                break
            if question == "/new":
                conversation = service.create_conversation(caller=caller)
                print(f"conversation {conversation.id}")
                continue
            if not question:
                continue
            sys.stdout.write("ragchat> ")
            try:
                stream = service.ask(
                    question,
                    caller=caller,
                    collections=_collections(args),
                    conversation_id=conversation.id,
                )
                answer = _stream_to_terminal(stream)
            except RagError as exc:
                print(f"error: {with_id(exc)}", file=sys.stderr)
                continue
            print_sources(answer)
    return 0


def cmd_llm_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the bundled model until interrupted (Ctrl-C: "stopped the local model server")."""
    from rag.service.components import build_local_server

    server = build_local_server(settings, port=args.port)
    print(f"starting the local model server ({server.model_path.name}) ...", flush=True)
    try:
        server.start()
        print(f"serving {server.model_path.name} at {server.base_url} (model name 'smollm2')")
        print("use it with RAG_LLM_BASE_URL=" + server.base_url + "; Ctrl-C stops it", flush=True)
        return server.wait()
    finally:
        server.stop()
