"""Measure retrieval (and optionally answers) on a labelled dataset.

A dataset is JSON Lines, one question per line::

    {"question": "...", "sources": ["manual.pdf"], "pages": [3], "passage": "...",
     "reference_answer": "...", "id": "..."}

``sources`` are file names or path suffixes that count as relevant; ``pages`` (1-based)
and ``passage`` (text the right chunk must contain) narrow it down. A question's targets
are its sources, or each (source, page) pair when pages are given; recall counts targets
covered, and nDCG gives a chunk credit only for a target not covered higher up. ``id``
(optional) names the question for comparisons with an earlier run
(``rag.evaluation_baseline``); without one, the question text does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import RagError
from rag.observe import usage

if TYPE_CHECKING:
    from rag.evaluation_baseline import BaselineComparison

CUTOFFS = (1, 5, 10)
DEPTH = 10


class DatasetError(RagError):
    """A dataset line cannot be used."""

    category = "input"

    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}")


@dataclass(frozen=True)
class EvalItem:
    """One labelled question."""

    question: str
    sources: tuple[str, ...]
    pages: tuple[int, ...] = ()
    passage: str | None = None
    reference_answer: str | None = None
    line: int = 0
    id: str | None = None


def load_dataset(path: Path) -> list[EvalItem]:
    """Read and validate a JSONL dataset.

    Raises:
        DatasetError: naming the file and line of the first bad entry.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(path, 0, f"cannot read: {exc.strerror or exc}") from exc
    items = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(path, n, f"not JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise DatasetError(path, n, "each line must be a JSON object")
        question, sources = data.get("question"), data.get("sources")
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(path, n, '"question" must be a non-empty string')
        if (
            not isinstance(sources, list)
            or not sources
            or not all(isinstance(s, str) and s for s in sources)
        ):
            raise DatasetError(path, n, '"sources" must be a non-empty list of file names')
        pages = data.get("pages") or []
        if not isinstance(pages, list) or not all(isinstance(p, int) and p >= 1 for p in pages):
            raise DatasetError(path, n, '"pages" must be a list of 1-based page numbers')
        passage = data.get("passage")
        if passage is not None and not isinstance(passage, str):
            raise DatasetError(path, n, '"passage" must be a string')
        item_id = data.get("id")
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)
        if item_id is not None and (not isinstance(item_id, str) or not item_id.strip()):
            raise DatasetError(path, n, '"id" must be a non-empty string or a number')
        items.append(
            EvalItem(
                question=question.strip(),
                sources=tuple(sources),
                pages=tuple(pages),
                passage=passage or None,
                reference_answer=data.get("reference_answer"),
                line=n,
                id=item_id.strip() if item_id else None,
            )
        )
    if not items:
        raise DatasetError(path, 0, "no questions")
    return items


@dataclass(frozen=True)
class Retrieved:
    """What a judged chunk needs: where it comes from and what it says."""

    source: str
    page: int | None
    text: str
    title: str | None = None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def source_matches(chunk: Retrieved, pattern: str) -> bool:
    """A file name or path suffix names the chunk's source (or its title)."""
    source = chunk.source.replace("\\", "/")
    pattern = pattern.replace("\\", "/")
    return (
        source == pattern
        or source.endswith("/" + pattern.lstrip("/"))
        or (chunk.title is not None and chunk.title == pattern)
    )


def targets(item: EvalItem) -> list[tuple[str, int | None]]:
    """What a question needs found: its sources, or each (source, page)."""
    if item.pages:
        return [(s, p) for s in item.sources for p in item.pages]
    return [(s, None) for s in item.sources]


def covered(item: EvalItem, chunk: Retrieved) -> set[int]:
    """Indices of the item's targets this chunk covers."""
    if item.passage and _norm(item.passage) not in _norm(chunk.text):
        return set()
    return {
        i
        for i, (source, page) in enumerate(targets(item))
        if source_matches(chunk, source) and (page is None or chunk.page == page)
    }


@dataclass(frozen=True)
class AnswerScore:
    """What one answer cited, whether it abstained, and how long it took."""

    citations: int
    valid_citations: int
    abstained: bool
    total_ms: float
    first_token_ms: float

    def to_json(self) -> dict[str, Any]:
        """The fields, latencies rounded to 0.1 ms."""
        return {"citations": self.citations, "valid_citations": self.valid_citations,
                "abstained": self.abstained, "total_ms": round(self.total_ms, 1),
                "first_token_ms": round(self.first_token_ms, 1)}  # fmt: skip


@dataclass
class ItemScore:
    """Metrics of one question (and of its answer, when answers were asked for)."""

    first_rank: int | None
    recall: dict[int, float]
    ndcg: float
    page_correct: bool | None
    line: int = 0
    question: str = ""
    id: str | None = None
    answer: AnswerScore | None = None

    def to_json(self) -> dict[str, Any]:
        """The question, its line and id, and every metric of it (rounded to 6 places).

        ``ragchat eval --baseline`` reads these back to compare two runs question by
        question.
        """
        data: dict[str, Any] = {"line": self.line, "question": self.question}
        if self.id is not None:
            data["id"] = self.id
        data["first_rank"] = self.first_rank
        for k in sorted(self.recall):
            data[f"hit@{k}"] = self.value(f"hit@{k}")
            data[f"recall@{k}"] = round(self.recall[k], 6)
        data["mrr"] = round(self.value("mrr"), 6)
        data[f"ndcg@{DEPTH}"] = round(self.ndcg, 6)
        data["page_correct"] = self.page_correct
        if self.answer is not None:
            data["answer"] = self.answer.to_json()
        return data

    def value(self, metric: str) -> float:
        """One of ``recall@K``, ``hit@K``, ``mrr`` or ``ndcg@10`` for this question."""
        name, _, cutoff = metric.partition("@")
        if name == "recall":
            return self.recall[int(cutoff)]
        if name == "hit":
            return 1.0 if self.first_rank and self.first_rank <= int(cutoff) else 0.0
        if metric == "mrr":
            return 1.0 / self.first_rank if self.first_rank and self.first_rank <= DEPTH else 0.0
        if metric == f"ndcg@{DEPTH}":
            return self.ndcg
        raise ValueError(f"unknown metric {metric!r}")


def score_item(item: EvalItem, ranked: Sequence[Retrieved], cutoffs: Iterable[int]) -> ItemScore:
    """Rank metrics of one question's retrieved list (best first)."""
    n_targets = len(targets(item))
    seen: set[int] = set()
    first_rank = None
    dcg = 0.0
    found_at: list[set[int]] = []
    for rank, chunk in enumerate(ranked, 1):
        hit = covered(item, chunk)
        found_at.append(hit)
        if hit and first_rank is None:
            first_rank = rank
        new = hit - seen
        if new and rank <= DEPTH:
            dcg += 1.0 / math.log2(rank + 1)
        seen |= hit
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(n_targets, DEPTH) + 1))
    recall = {}
    for k in cutoffs:
        got: set[int] = set().union(*found_at[:k]) if found_at[:k] else set()
        recall[k] = len(got) / n_targets
    page_correct = None
    if item.pages:
        top = ranked[0] if ranked else None
        page_correct = bool(
            top and top.page in item.pages and any(source_matches(top, s) for s in item.sources)
        )
    return ItemScore(
        first_rank, recall, dcg / ideal if ideal else 0.0, page_correct, item.line,
        item.question, item.id,
    )  # fmt: skip


def aggregate(scores: Sequence[ItemScore], cutoffs: Iterable[int]) -> dict[str, float]:
    """Mean metrics over questions (page accuracy over those with pages)."""
    n = len(scores)
    out: dict[str, float] = {}
    if n == 0:
        return out
    for k in sorted(set(cutoffs)):
        out[f"hit@{k}"] = sum(1 for s in scores if s.first_rank and s.first_rank <= k) / n
        out[f"recall@{k}"] = sum(s.recall[k] for s in scores) / n
    out["mrr"] = (
        sum(1.0 / s.first_rank for s in scores if s.first_rank and s.first_rank <= DEPTH) / n
    )
    out["ndcg@10"] = sum(s.ndcg for s in scores) / n
    paged = [s.page_correct for s in scores if s.page_correct is not None]
    if paged:
        out["page_accuracy@1"] = sum(1 for p in paged if p) / len(paged)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), as ``rag.observe.usage.percentile``; 0.0 for none."""
    return usage.percentile(values, q) or 0.0


@dataclass
class Failure:
    """A question that could not be evaluated."""

    line: int
    question: str
    reason: str


@dataclass
class ModeReport:
    """Everything measured for one retrieval mode."""

    mode: str
    items: int
    metrics: dict[str, float]
    failures: list[Failure] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    scores: list[ItemScore] = field(default_factory=list)
    differences: dict[str, dict[str, Difference]] = field(default_factory=dict)
    baseline: BaselineComparison | None = None

    def add_answers(self, answered: Sequence[tuple[EvalItem, AnsweredItem]]) -> None:
        """Record the answers: their metrics, and each one on its question's score."""
        if not answered:
            return
        # Scored once: each citation is checked once, for the metrics and the question alike.
        answers = [(item, score_answer(item, result)) for item, result in answered]
        self.metrics.update(scored_answer_metrics([a for _, a in answers]))
        by_line = {s.line: s for s in self.scores}
        for item, answer in answers:
            score = by_line.get(item.line)
            if score is not None:
                score.answer = answer

    def to_json(self) -> dict[str, Any]:
        """Metrics with the mode, its settings, counts, differences, failures and questions.

        ``questions`` holds each scored question's own metrics (``ItemScore.to_json``);
        ``baseline`` the comparison with an earlier run, when one was made.
        """
        data: dict[str, Any] = {
            "mode": self.mode,
            "config": self.config,
            "items": self.items,
            **{k: round(v, 4) for k, v in self.metrics.items()},
        }
        if self.differences:
            data["differences"] = {
                other: {m: d.to_json() for m, d in diffs.items()}
                for other, diffs in self.differences.items()
            }
        if self.baseline is not None:
            data["baseline"] = self.baseline.to_json()
        data["failed"] = [
            {"line": f.line, "question": f.question, "reason": f.reason} for f in self.failures
        ]
        data["questions"] = [s.to_json() for s in self.scores]
        return data


def evaluate_retrieval(
    items: Sequence[EvalItem],
    search: Callable[[str], Sequence[Retrieved]],
    *,
    mode: str,
    cutoffs: Iterable[int] = CUTOFFS,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> ModeReport:
    """Run every question through ``search`` and measure the rankings."""
    cutoffs = sorted(set(cutoffs) | set(CUTOFFS))
    scores, failures = [], []
    for n, item in enumerate(items, 1):
        try:
            ranked = list(search(item.question))
        except RagError as exc:
            failures.append(Failure(item.line, item.question, str(exc)))
        else:
            scores.append(score_item(item, ranked, cutoffs))
        progress(n, len(items))
    return ModeReport(mode, len(scores), aggregate(scores, cutoffs), failures, scores=scores)


COMPARED = ("recall@5", "ndcg@10", "mrr")


@dataclass(frozen=True)
class Difference:
    """Mean per-question difference of a metric between two modes, with a 95% interval."""

    delta: float
    low: float
    high: float
    questions: int

    def to_json(self) -> dict[str, Any]:
        """``delta`` and ``ci95`` rounded, with the number of questions compared."""
        return {"delta": round(self.delta, 4), "ci95": [round(self.low, 4), round(self.high, 4)],
                "questions": self.questions}  # fmt: skip


def paired_difference(
    a: Sequence[ItemScore],
    b: Sequence[ItemScore],
    metric: str,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> Difference:
    """``a - b`` on the questions both scored, with a paired bootstrap 95% interval.

    The questions are resampled with replacement ``resamples`` times; the interval is the
    2.5th to 97.5th percentile of the resampled mean differences. An interval that holds 0
    means the data cannot tell the two apart.
    """
    by_line = {s.line: s for s in b}
    pairs = [(s.value(metric), by_line[s.line].value(metric)) for s in a if s.line in by_line]
    if not pairs:
        return Difference(0.0, 0.0, 0.0, 0)
    diffs = np.asarray([x - y for x, y in pairs], dtype="float64")
    low, high = bootstrap_interval(
        lambda rows: diffs[rows].mean(axis=-1), resample_indices(len(diffs), resamples, seed)
    )
    return Difference(float(diffs.mean()), low, high, len(diffs))


def resample_indices(n: int, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """``resamples`` rows of ``n`` question indices drawn with replacement (seeded).

    The same seed draws the same rows: a bootstrap interval is the same on every run.
    """
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def bootstrap_interval(
    statistic: Callable[[np.ndarray], np.ndarray], rows: np.ndarray
) -> tuple[float, float]:
    """The 95% bootstrap interval of ``statistic``: its 2.5th to 97.5th percentile.

    Both ``paired_difference`` and the comparison with a baseline
    (``rag.evaluation_baseline.change``) compute their interval here.

    Args:
        statistic: The value on each resample, given a block of ``rows`` (one value a row).
        rows: The resamples, one row of question indices each (``resample_indices``).

    Returns:
        The interval's low and high bound.
    """
    # In blocks of resamples: memory stays small on a dataset of thousands of questions.
    values = np.concatenate([statistic(block) for block in np.array_split(rows, 20)])
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def compare_modes(reports: Sequence[ModeReport], metrics: Sequence[str] = COMPARED) -> None:
    """Give the last report its differences to each earlier one (e.g. hybrid vs the others)."""
    if len(reports) < 2:
        return
    last = reports[-1]
    last.differences = {
        other.mode: {m: paired_difference(last.scores, other.scores, m) for m in metrics}
        for other in reports[:-1]
    }


def format_differences(reports: Sequence[ModeReport]) -> list[str]:
    """One line per compared pair: each metric's difference and its 95% interval."""
    lines = []
    for report in reports:
        for other, diffs in report.differences.items():
            cells = ", ".join(
                f"{m} {d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" for m, d in diffs.items()
            )
            lines.append(f"{report.mode} - {other}: {cells}")
    return lines


@dataclass
class AnsweredItem:
    """What answering one question produced."""

    citations: list[Retrieved]
    abstained: bool
    total_ms: float
    first_token_ms: float


def citation_valid(item: EvalItem, cited: Retrieved) -> bool:
    """A citation is valid when its chunk is relevant or holds the reference passage."""
    if covered(item, cited):
        return True
    return bool(item.passage) and _norm(item.passage or "") in _norm(cited.text)


def score_answer(item: EvalItem, answer: AnsweredItem) -> AnswerScore:
    """One answer's citations (and how many are valid), abstention and latencies."""
    return AnswerScore(
        citations=len(answer.citations),
        valid_citations=sum(1 for c in answer.citations if citation_valid(item, c)),
        abstained=answer.abstained,
        total_ms=answer.total_ms,
        first_token_ms=answer.first_token_ms,
    )


def answer_metrics(items: Sequence[EvalItem], answers: Sequence[AnsweredItem]) -> dict[str, float]:
    """Citation validity, abstention rate and latency over answered questions."""
    return scored_answer_metrics([score_answer(i, a) for i, a in zip(items, answers, strict=True)])


def scored_answer_metrics(answers: Sequence[AnswerScore]) -> dict[str, float]:
    """``answer_metrics`` over answers already scored (``score_answer``)."""
    cited = sum(a.citations for a in answers)
    with_citations = [a for a in answers if a.citations]
    totals = [a.total_ms for a in answers]
    firsts = [a.first_token_ms for a in answers]
    return {
        "citation_validity": sum(a.valid_citations for a in answers) / cited if cited else 0.0,
        "answers_all_citations_valid": (
            sum(1 for a in with_citations if a.valid_citations == a.citations) / len(with_citations)
            if with_citations
            else 0.0
        ),
        "answers_with_citations": len(with_citations) / len(answers) if answers else 0.0,
        "abstention_rate": sum(1 for a in answers if a.abstained) / len(answers)
        if answers
        else 0.0,
        "latency_p50_ms": percentile(totals, 50),
        "latency_p95_ms": percentile(totals, 95),
        "ttft_p50_ms": percentile(firsts, 50),
        "ttft_p95_ms": percentile(firsts, 95),
    }


def format_table(reports: Sequence[ModeReport]) -> str:
    """A plain-text table: one row per metric, one column per mode."""
    keys = list(dict.fromkeys(k for r in reports for k in r.metrics))
    width = max([len(k) for k in keys] + [6])
    header = " " * width + "".join(f"{r.mode:>12}" for r in reports)
    rows = [header]
    for key in keys:
        cells = "".join(
            f"{r.metrics[key]:>12.1f}" if key.endswith("_ms") else f"{r.metrics.get(key, 0):>12.3f}"
            for r in reports
        )
        rows.append(f"{key:<{width}}{cells}")
    rows.append(f"{'items':<{width}}" + "".join(f"{r.items:>12d}" for r in reports))
    differences = format_differences(reports)
    if differences:
        rows += ["", "differences, mean per question [95% paired bootstrap interval]:"]
        rows += differences
    return "\n".join(rows)


def write_report(reports: Sequence[ModeReport], dataset: Path, folder: Path) -> Path:
    """A Markdown report, with a bar chart (PNG) comparing the modes when there are several."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Retrieval evaluation: {dataset.name}",
        "",
        f"{reports[0].items + len(reports[0].failures)} questions; modes: "
        + ", ".join(r.mode for r in reports),
        "",
    ]
    for r in reports:
        if r.config:
            settings = ", ".join(f"{k} {v}" for k, v in r.config.items())
            lines += [f"- {r.mode}: {settings}"]
    if any(r.config for r in reports):
        lines.append("")
    keys = list(dict.fromkeys(k for r in reports for k in r.metrics))
    lines.append("| metric | " + " | ".join(r.mode for r in reports) + " |")
    lines.append("|---|" + "---|" * len(reports))
    for key in keys:
        lines.append(
            f"| {key} | " + " | ".join(f"{r.metrics.get(key, 0):.3f}" for r in reports) + " |"
        )
    pairs = [(r, other, diffs) for r in reports for other, diffs in r.differences.items()]
    if pairs:
        lines += [
            "",
            "## Differences",
            "",
            "Mean per-question difference, with its 95% paired bootstrap interval; an "
            "interval that holds 0 means these questions cannot tell the modes apart.",
            "",
            "| compared | metric | difference | 95% interval |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r.mode} - {other} | {m} | {d.delta:+.3f} | [{d.low:+.3f}, {d.high:+.3f}] |"
            for r, other, diffs in pairs
            for m, d in diffs.items()
        ]
    if any(r.baseline is not None for r in reports):
        from rag.evaluation_baseline import markdown_comparison  # it imports this module

        lines += [line for r in reports if r.baseline for line in markdown_comparison(r.baseline)]
    if len(reports) > 1:
        chart = folder / "modes.png"
        _bar_chart(reports, [k for k in keys if not k.endswith("_ms")], chart)
        lines += ["", f"![modes compared]({chart.name})"]
    for r in reports:
        if r.failures:
            lines += ["", f"## Failed questions ({r.mode})", ""]
            lines += [f"- line {f.line}: {f.question} ({f.reason})" for f in r.failures]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _bar_chart(reports: Sequence[ModeReport], keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, len(keys) * 1.1), 4))
    width = 0.8 / len(reports)
    for i, report in enumerate(reports):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [report.metrics.get(k, 0) for k in keys], width, label=report.mode)
    ax.set_xticks([j + width * (len(reports) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels(keys, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Retrieval quality by mode")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
