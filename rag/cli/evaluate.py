"""``ragchat eval``: retrieval (and answer) quality on a labelled dataset."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.cli.caller import cli_caller
from rag.errors import InvalidInputError, RagError
from rag.evaluation import (
    DEPTH,
    AnsweredItem,
    EvalItem,
    Failure,
    ModeReport,
    Retrieved,
    compare_modes,
    evaluate_retrieval,
    format_table,
    load_dataset,
    write_report,
)
from rag.evaluation_baseline import (
    check_baseline,
    compare_reports,
    format_comparison,
    gate_failures,
    load_baseline,
)
from rag.settings import Settings
from rag.text import safe_label

if TYPE_CHECKING:  # the chain and the store load at run time only: `ragchat --help` stays fast
    from rag.chain import ChatEngine
    from rag.service.core import RagService

MODES = ("vector", "keyword", "hybrid")
# Exit code of ``--fail-under`` when a metric is worse than the baseline (errors exit 2).
WORSE_THAN_BASELINE = 3


def add_command(
    sub: Any,
    settings_of: Callable[[argparse.Namespace], Settings],
    add_index_option: Callable[[argparse.ArgumentParser], None],
    add_fusion_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``eval``."""
    p = sub.add_parser(
        "eval",
        help="measure retrieval (and answers) on a labelled JSONL dataset",
        description="Each line: {question, sources, pages?, passage?, reference_answer?, id?}.",
        epilog=f"Exit codes: 0 done; {WORSE_THAN_BASELINE} --fail-under found a metric worse "
        "than the baseline; 2 an error (a bad dataset or baseline file, a missing index...).",
    )
    p.add_argument("dataset", type=Path, metavar="DATASET.jsonl")
    p.add_argument(
        "--mode",
        dest="modes",
        action="append",
        metavar="MODE",
        help="vector, keyword, hybrid or all; repeat or comma-separate to compare "
        "(default: RAG_RETRIEVAL_MODE)",
    )
    p.add_argument(
        "-k", type=int, metavar="N", help="chunks given to the model with --answers, and an "
        "extra recall@N cutoff (overrides RAG_RETRIEVAL_K)",
    )  # fmt: skip
    add_fusion_option(p)
    p.add_argument("--answers", action="store_true", help="also run the full chain on each")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--report", type=Path, metavar="DIR", help="write report.md (+ chart) here")
    p.add_argument(
        "--save", type=Path, metavar="FILE", help="write the results, with every question's "
        "scores, as JSON to FILE (a baseline for a later run)",
    )  # fmt: skip
    p.add_argument(
        "--baseline", type=Path, metavar="FILE", help="compare with an earlier run saved by "
        "--save (or --json): each metric's difference with its 95%% bootstrap interval",
    )  # fmt: skip
    p.add_argument(
        "--fail-under", action="store_true", help=f"with --baseline: exit with code "
        f"{WORSE_THAN_BASELINE} when a metric is worse than the baseline (its interval lies "
        "wholly below zero)",
    )  # fmt: skip
    add_index_option(p)
    p.set_defaults(func=lambda a: cmd_eval(a, settings_of(a)))


def parse_modes(values: list[str] | None, default: str) -> list[str]:
    """Modes from repeated or comma-separated flags ('all' for every mode)."""
    modes: list[str] = []
    for value in values or [default]:
        for mode in value.split(","):
            mode = mode.strip().lower()
            chosen = list(MODES) if mode == "all" else [mode]
            for m in chosen:
                if m not in MODES:
                    raise RagError(f"--mode {mode!r}: choose from {', '.join(MODES)} or all")
                if m not in modes:
                    modes.append(m)
    return modes


@contextmanager
def _progress(enabled: bool, label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    if not enabled:
        yield lambda done, total: None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="question", leave=False)

    def update(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _search(
    service: RagService, mode: str, depth: int, within: frozenset[str] | None
) -> tuple[Callable[[str], list[Retrieved]], dict[str, Any]]:
    """A search function for ``evaluate_retrieval`` and the settings its retriever uses.

    ``within``: the collections the caller may read (None: the operator's whole index).
    """
    retriever = service.retriever(mode=mode, k=depth, unfiltered=True)

    def search(question: str) -> list[Retrieved]:
        return [
            Retrieved(d.metadata["source"], d.metadata["page"], d.page_content,
                      d.metadata.get("title"))
            for d, _ in retriever.search(question, within=within)
        ]  # fmt: skip

    return search, retriever.describe()


def _answer_all(
    engine: ChatEngine,
    items: list[EvalItem],
    report: ModeReport,
    progress: Callable[[int, int], None],
    within: frozenset[str] | None,
) -> None:
    answered: list[tuple[EvalItem, AnsweredItem]] = []
    for n, item in enumerate(items, 1):
        try:
            # Within what the caller may read; batch: nothing shown midway.
            stream = engine.ask(item.question, within=within, buffered=True)
            for _ in stream:
                pass
        except RagError as exc:
            report.failures.append(Failure(item.line, item.question, f"answer: {exc}"))
        else:
            result = stream.result
            if result is not None:
                cites = [
                    Retrieved(c.source.source, c.source.page, c.source.text, c.source.title)
                    for c in result.citations
                ]
                answered.append(
                    (item, AnsweredItem(cites, result.abstained, result.timings["total_ms"],
                                        result.timings["first_token_ms"]))
                )  # fmt: skip
        progress(n, len(items))
    report.add_answers(answered)


def cmd_eval(args: argparse.Namespace, settings: Settings, over: RagService | None = None) -> int:
    """Evaluate each mode; print a table (or JSON), optionally compare with a baseline.

    ``over``: evaluate over this service (the caller closes it) instead of opening one.
    Returns ``WORSE_THAN_BASELINE`` when ``--fail-under`` finds a metric worse, else 0.
    """
    items = load_dataset(args.dataset)
    modes = parse_modes(args.modes, settings.retrieval_mode)
    if args.k is not None and args.k < 1:
        raise RagError("-k must be at least 1")
    if args.fail_under and not args.baseline:
        raise InvalidInputError("--fail-under", "needs --baseline FILE to compare with")
    if args.save and not args.save.parent.is_dir():
        raise InvalidInputError("--save", f"no folder {args.save.parent} to write it in")
    baseline = None
    if args.baseline:  # a bad baseline fails now, before any question is asked
        baseline = load_baseline(args.baseline)
        check_baseline(baseline, items, modes, args.dataset)
    cutoffs = [1, 5, 10] + ([args.k] if args.k else [])
    show = sys.stderr.isatty() and not args.json
    reports = []
    with _opened(settings, over) as service:
        service.store.snapshot()
        within = service.scope(cli_caller(service, args)).collections  # --user NAME's only
        service.store.embeddings.embed_query("warm up")
        for mode in modes:
            search, config = _search(service, mode, max(DEPTH, args.k or 0), within)
            with _progress(show, f"retrieval ({mode})", len(items)) as progress:
                report = evaluate_retrieval(items, search, mode=mode, cutoffs=cutoffs,
                                            progress=progress)  # fmt: skip
            report.config = config
            reports.append(report)
        compare_modes(reports)
        if args.answers:
            for report in reports:
                engine = service.engine(mode=report.mode)
                with _progress(show, f"answers ({report.mode})", len(items)) as progress:
                    _answer_all(engine, items, report, progress, within)
    if baseline is not None:
        compare_reports(reports, baseline)
    if args.report:
        path = write_report(reports, args.dataset, args.report)
        print(f"report written to {path}", file=sys.stderr)
    data = reports[0].to_json() if len(reports) == 1 else {r.mode: r.to_json() for r in reports}
    if args.save:
        _save(args.save, data)
        print(f"results saved to {args.save}", file=sys.stderr)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_table(reports))
        for report in reports:
            if report.baseline is not None:
                print()
                print(format_comparison(report.baseline))
            elif baseline is not None:
                print(f"\n{report.mode}: not in the baseline, not compared")
        for report in reports:
            for failure in report.failures:
                print(f"failed ({report.mode}): line {failure.line}: {failure.reason}",
                      file=sys.stderr)  # fmt: skip
    failures = gate_failures(reports)
    if args.fail_under and failures:
        print(f"worse than the baseline {safe_label(str(args.baseline))}: "
              f"{'; '.join(failures)}", file=sys.stderr)  # fmt: skip
        return WORSE_THAN_BASELINE
    return 0


@contextmanager
def _opened(settings: Settings, service: RagService | None) -> Iterator[RagService]:
    if service is not None:
        yield service
        return
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as opened:
        yield opened


def _save(path: Path, data: dict[str, Any]) -> None:
    """Write the results whole or not at all (a file beside it, then renamed over it)."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InvalidInputError("--save", f"cannot write {path}: {exc.strerror or exc}") from exc
