"""Compare an evaluation with an earlier one (its baseline), question by question.

``ragchat eval --save RUN.json`` keeps every question's own scores (``ModeReport.to_json``);
a later ``ragchat eval --baseline RUN.json`` pairs its questions with the baseline's (by
``id`` when the dataset gives one, else by question text). For each metric it gives the
baseline and current values over the questions both runs scored, the difference with a
95% paired bootstrap interval (seeded: the same two runs always give the same interval)
and a verdict: ``worse`` when the whole interval lies on the bad side of zero, ``better``
when it lies on the good side, else ``same`` (these questions cannot tell the runs apart).
Questions only one run scored are listed and left out.

Latencies are compared too, but never make a run worse: they measure the machine as much
as the model, and a gate must not fail because CI ran on a busy runner.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import BaselineError
from rag.evaluation import DEPTH, EvalItem, ModeReport, bootstrap_interval, resample_indices
from rag.text import safe_label

RESAMPLES = 2000
SEED = 0
# Below this an interval bound counts as zero (float noise of identical runs).
_EPSILON = 1e-9

Row = dict[str, Any]
# A question's value of a metric and its weight in the mean (None: not defined for it).
Reading = tuple[float, float] | None


@dataclass(frozen=True)
class Measure:
    """How a metric is read from one question's scores, and which way is better.

    A run's value is the weighted mean of its questions' values, or their ``quantile``.
    """

    name: str
    read: Callable[[Row], Reading]
    lower_is_better: bool = False
    quantile: float | None = None
    gates: bool = True


def _number(row: Row, key: str) -> Reading:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value), 1.0


def _field(key: str) -> Callable[[Row], Reading]:
    def read(row: Row) -> Reading:
        return _number(row, key)

    return read


def _page(row: Row) -> Reading:
    value = row.get("page_correct")
    return (1.0 if value else 0.0, 1.0) if isinstance(value, bool) else None


def _answer(row: Row) -> dict[str, Any] | None:
    answer = row.get("answer")
    if not isinstance(answer, dict) or not isinstance(answer.get("citations"), int):
        return None
    return answer


def _citation_validity(row: Row) -> Reading:
    """Valid citations over citations: weighted by citations, it pools them as the table."""
    a = _answer(row)
    valid = _number(a, "valid_citations") if a is not None and a["citations"] else None
    return None if a is None or valid is None else (valid[0] / a["citations"], a["citations"])


def _all_valid(row: Row) -> Reading:
    a = _answer(row)
    if a is None or not a["citations"]:
        return None
    return (1.0 if a.get("valid_citations") == a["citations"] else 0.0), 1.0


def _with_citations(row: Row) -> Reading:
    a = _answer(row)
    return None if a is None else ((1.0 if a["citations"] else 0.0), 1.0)


def _abstained(row: Row) -> Reading:
    a = _answer(row)
    return None if a is None else ((1.0 if a.get("abstained") else 0.0), 1.0)


def _timing(key: str) -> Callable[[Row], Reading]:
    def read(row: Row) -> Reading:
        a = _answer(row)
        return None if a is None else _number(a, key)

    return read


_RANKED = re.compile(r"^(hit|recall)@(\d+)$")


def measures(rows: Sequence[Row]) -> list[Measure]:
    """The metrics of the table, in its order, for the cutoffs these rows hold."""
    cutoffs = sorted({int(m.group(2)) for r in rows for k in r if (m := _RANKED.match(k))})
    out = [Measure(f"{n}@{k}", _field(f"{n}@{k}")) for k in cutoffs for n in ("hit", "recall")]
    out += [
        Measure("mrr", _field("mrr")),
        Measure(f"ndcg@{DEPTH}", _field(f"ndcg@{DEPTH}")),
        Measure("page_accuracy@1", _page),
        Measure("citation_validity", _citation_validity),
        Measure("answers_all_citations_valid", _all_valid),
        Measure("answers_with_citations", _with_citations),
        Measure("abstention_rate", _abstained, lower_is_better=True),
    ]
    for name, key in (("latency", "total_ms"), ("ttft", "first_token_ms")):
        for q in (50, 95):
            out.append(Measure(f"{name}_p{q}_ms", _timing(key), lower_is_better=True,
                               quantile=q, gates=False))  # fmt: skip
    return out


def _places(metric: str, places: int = 3) -> int:
    """Decimal places to show a metric with: 0.1 ms for a latency, else ``places``."""
    return 1 if metric.endswith("_ms") else places


@dataclass(frozen=True)
class MetricChange:
    """One metric of the baseline and of this run, and what their difference shows."""

    metric: str
    baseline: float
    current: float
    delta: float
    low: float
    high: float
    questions: int
    verdict: str  # "better", "same" or "worse"
    gates: bool = True

    def to_json(self) -> dict[str, Any]:
        """Values, difference and interval rounded; the verdict; whether it can fail a gate."""
        places = _places(self.metric, 4)
        return {"baseline": round(self.baseline, places), "current": round(self.current, places),
                "delta": round(self.delta, places),
                "ci95": [round(self.low, places), round(self.high, places)],
                "questions": self.questions, "verdict": self.verdict,
                "gates": self.gates}  # fmt: skip


def change(
    measure: Measure,
    pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]],
    draws: Callable[[int], np.ndarray] | None = None,
) -> MetricChange:
    """Baseline and current value over ``pairs`` and their paired bootstrap difference.

    ``pairs`` holds each question's ``(value, weight)`` in the baseline and in this run.
    The questions are resampled together (``draws(n)``: by default ``resample_indices``,
    seeded); the interval is the 2.5th to 97.5th percentile of the resampled differences
    (``rag.evaluation.bootstrap_interval``).
    """
    base = np.asarray([b for b, _ in pairs], dtype="float64")
    cur = np.asarray([c for _, c in pairs], dtype="float64")
    rows = (draws or _draw)(len(pairs))

    def statistic(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The run's value on each resample (a row of question indices)."""
        values, weights = table[rows, 0], table[rows, 1]
        if measure.quantile is not None:
            return np.asarray(np.percentile(values, measure.quantile, axis=-1))
        return np.asarray((values * weights).sum(axis=-1) / weights.sum(axis=-1))

    everything = np.arange(len(pairs))[None, :]
    before, after = float(statistic(base, everything)[0]), float(statistic(cur, everything)[0])
    low, high = bootstrap_interval(
        lambda block: statistic(cur, block) - statistic(base, block), rows
    )
    sign = -1.0 if measure.lower_is_better else 1.0
    good_low, good_high = sorted((sign * low, sign * high))
    verdict = "worse" if good_high < -_EPSILON else "better" if good_low > _EPSILON else "same"
    return MetricChange(measure.name, before, after, after - before, low, high,
                        len(pairs), verdict, measure.gates)  # fmt: skip


def _draw(n: int) -> np.ndarray:
    return resample_indices(n, RESAMPLES, SEED)


@dataclass(frozen=True)
class Baseline:
    """The reports of an earlier run, by mode, as its JSON holds them."""

    path: str
    reports: dict[str, dict[str, Any]]


def _check_rows(path: Path, mode: str, report: Any) -> None:
    where = f"mode {mode!r}: " if mode else ""
    questions = report.get("questions") if isinstance(report, dict) else None
    if questions is None:
        raise BaselineError(
            path,
            f"{where}no per-question scores (it was saved by an older ragchat eval, or is "
            "no eval result); run the baseline again with --save FILE",
        )
    if not isinstance(questions, list) or not all(
        isinstance(q, dict) and isinstance(q.get("question"), str) for q in questions
    ):
        raise BaselineError(path, f'{where}"questions" must be a list of scored questions')


def load_baseline(path: Path) -> Baseline:
    """Read what ``ragchat eval --save`` (or ``--json``) wrote: one mode, or several by mode.

    Raises:
        BaselineError: naming the file and what is wrong with it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaselineError(path, f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BaselineError(path, "not JSON: not UTF-8 text") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(path, f"not JSON: {exc.msg} (line {exc.lineno})") from exc
    if not isinstance(data, dict) or not data:
        raise BaselineError(path, "not a ragchat eval result (expected a JSON object)")
    if isinstance(data.get("mode"), str):
        reports = {data["mode"]: data}
    elif all(isinstance(v, dict) and v.get("mode") == k for k, v in data.items()):
        reports = data
    else:
        raise BaselineError(path, 'not a ragchat eval result (no "mode")')
    for mode, report in reports.items():
        _check_rows(path, mode if len(reports) > 1 else "", report)
    return Baseline(str(path), reports)


def _key(question: str, item_id: Any) -> str:
    if item_id is not None:
        return f"id {item_id}"
    return " ".join(question.split())


def _keyed(rows: Sequence[Row]) -> dict[str, Row]:
    """Rows by id or question text; a repeated question is told apart by its occurrence."""
    out: dict[str, Row] = {}
    seen: dict[str, int] = {}
    for row in rows:
        key = _key(str(row.get("question", "")), row.get("id"))
        seen[key] = seen.get(key, 0) + 1
        out[key if seen[key] == 1 else f"{key} #{seen[key]}"] = row
    return out


def pair_modes(modes: Sequence[str], baseline: Baseline) -> list[tuple[str, str]]:
    """(mode of this run, baseline mode) to compare: one each, or the modes both ran.

    Raises:
        BaselineError: the baseline has none of this run's modes.
    """
    if len(modes) == 1 and len(baseline.reports) == 1:
        return [(modes[0], next(iter(baseline.reports)))]
    pairs = [(m, m) for m in modes if m in baseline.reports]
    if not pairs:
        raise BaselineError(
            baseline.path,
            f"it holds mode {', '.join(baseline.reports)}; this run: {', '.join(modes)} "
            "(no mode in common)",
        )
    return pairs


def check_baseline(baseline: Baseline, items: Sequence[EvalItem], modes: Sequence[str],
                   dataset: Path) -> None:  # fmt: skip
    """Fail before any work when the baseline cannot be compared with this run.

    Raises:
        BaselineError: no mode in common, or none of the dataset's questions in it.
    """
    keys = set(_keyed([{"question": i.question, "id": i.id} for i in items]))
    for _, base_mode in pair_modes(modes, baseline):
        if keys & set(_keyed(baseline.reports[base_mode]["questions"])):
            return
    raise BaselineError(
        baseline.path,
        f"no question in common with {dataset.name} (is it from another dataset?)",
    )


def _question(row: Row) -> dict[str, Any]:
    out = {"line": row.get("line"), "question": row.get("question")}
    if row.get("id") is not None:
        out["id"] = row["id"]
    return out


@dataclass
class BaselineComparison:
    """One mode of this run against its baseline."""

    path: str
    mode: str
    baseline_mode: str
    questions: int
    metrics: list[MetricChange] = field(default_factory=list)
    only_in_baseline: list[dict[str, Any]] = field(default_factory=list)
    only_in_current: list[dict[str, Any]] = field(default_factory=list)
    settings_changed: dict[str, list[Any]] = field(default_factory=dict)
    not_compared: list[str] = field(default_factory=list)

    @property
    def worse(self) -> list[str]:
        """The metrics that fail a gate: worse, with the whole interval below zero."""
        return [m.metric for m in self.metrics if m.gates and m.verdict == "worse"]

    def to_json(self) -> dict[str, Any]:
        """Everything compared, by metric, with the questions and settings that differ."""
        return {
            "file": self.path,
            "mode": self.baseline_mode,
            "questions": self.questions,
            "metrics": {m.metric: m.to_json() for m in self.metrics},
            "worse": self.worse,
            "settings_changed": self.settings_changed,
            "only_in_baseline": self.only_in_baseline,
            "only_in_current": self.only_in_current,
            "not_compared": self.not_compared,
        }


def compare(current: dict[str, Any], base: dict[str, Any], path: str) -> BaselineComparison:
    """This run's report (its JSON) against the baseline's, question by question.

    Both sides are read from their JSON form, rounded alike, so an unchanged setup gives
    differences of exactly zero.
    """
    mine, theirs = _keyed(current["questions"]), _keyed(base["questions"])
    common = [k for k in mine if k in theirs]
    result = BaselineComparison(
        path, current["mode"], str(base.get("mode")), len(common),
        only_in_baseline=[_question(theirs[k]) for k in theirs if k not in mine],
        only_in_current=[_question(mine[k]) for k in mine if k not in theirs],
    )  # fmt: skip
    if result.baseline_mode != result.mode:
        result.settings_changed["mode"] = [result.baseline_mode, result.mode]
    before, after = base.get("config") or {}, current.get("config") or {}
    for key in dict.fromkeys([*before, *after]):
        if before.get(key) != after.get(key):
            result.settings_changed[key] = [before.get(key), after.get(key)]
    # One draw per number of questions, for all metrics; local, so it goes with this call.
    draws = functools.cache(_draw)
    for measure in measures([*mine.values(), *theirs.values()]):
        readings = [(measure.read(theirs[k]), measure.read(mine[k])) for k in common]
        pairs = [(b, c) for b, c in readings if b is not None and c is not None]
        if pairs:
            result.metrics.append(change(measure, pairs, draws))
        elif any(b is not None or c is not None for b, c in readings):
            result.not_compared.append(measure.name)
    return result


def compare_reports(reports: Sequence[ModeReport], baseline: Baseline) -> None:
    """Give each report that has a counterpart in the baseline its comparison with it."""
    by_mode = {r.mode: r for r in reports}
    for mode, base_mode in pair_modes(list(by_mode), baseline):
        report = by_mode[mode]
        report.baseline = compare(report.to_json(), baseline.reports[base_mode], baseline.path)


def gate_failures(reports: Sequence[ModeReport]) -> list[str]:
    """Why a gate fails: per compared mode, its worse metrics or that nothing was compared."""
    out = []
    for r in reports:
        if r.baseline is None:
            continue
        if r.baseline.questions == 0:
            out.append(f"{r.mode}: no question scored in both runs")
        elif r.baseline.worse:
            out.append(f"{r.mode}: {', '.join(r.baseline.worse)}")
    return out


def _listing(label: str, questions: list[dict[str, Any]], shown: int = 5) -> list[str]:
    if not questions:
        return []
    lines = [f"{label} (left out): {len(questions)}"]
    for q in questions[:shown]:
        lines.append(f"  line {q.get('line')}: {safe_label(str(q.get('question')), 100)}")
    if len(questions) > shown:
        lines.append(f"  ... and {len(questions) - shown} more")
    return lines


def _setting(value: Any) -> str:
    return "(unset)" if value is None else safe_label(str(value))


def format_comparison(comparison: BaselineComparison) -> str:
    """A plain-text table: baseline, current, difference [95% interval], verdict."""
    c = comparison
    lines = [
        f"{c.mode} against baseline {safe_label(c.path)} ({c.baseline_mode}): "
        f"{c.questions} questions in both runs"
    ]
    if c.metrics:
        width = max(len(m.metric) for m in c.metrics) + 2
        lines.append(
            f"{'':<{width}}{'baseline':>10}{'current':>10}{'difference':>12}  "
            f"{'95% interval':<20}verdict"
        )
    for m in c.metrics:
        places = _places(m.metric)
        interval = f"[{m.low:+.{places}f}, {m.high:+.{places}f}]"
        note = "" if m.gates else " (not gated)"
        lines.append(
            f"{m.metric:<{width}}{m.baseline:>10.{places}f}{m.current:>10.{places}f}"
            f"{m.delta:>+12.{places}f}  {interval:<20}{m.verdict}{note}"
        )
    if c.settings_changed:
        changed = "; ".join(
            f"{k} {_setting(b)} -> {_setting(a)}" for k, (b, a) in c.settings_changed.items()
        )
        lines.append(f"settings changed: {changed}")
    if c.not_compared:
        lines.append(f"not compared (one run lacks them): {', '.join(c.not_compared)}")
    lines += _listing("only in the baseline", c.only_in_baseline)
    lines += _listing("only in this run", c.only_in_current)
    return "\n".join(lines)


def markdown_comparison(b: BaselineComparison) -> list[str]:
    """The comparison as a section of the Markdown report (``--report DIR``)."""
    lines = [
        "",
        f"## {b.mode} against the baseline",
        "",
        f"Baseline `{b.path}` ({b.baseline_mode}), {b.questions} questions in both runs. "
        "The difference is this run minus the baseline, with its 95% paired bootstrap "
        "interval; a verdict is `worse` or `better` only when the whole interval lies on "
        "one side of zero. Latencies are not gated.",
        "",
        "| metric | baseline | current | difference | 95% interval | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for m in b.metrics:
        f = f".{_places(m.metric)}f"
        lines.append(
            f"| {m.metric} | {m.baseline:{f}} | {m.current:{f}} | {m.delta:+{f}} | "
            f"[{m.low:+{f}}, {m.high:+{f}}] | {m.verdict} |"
        )
    if b.settings_changed:
        lines += ["", "Settings changed: " + "; ".join(
            f"{k} {_setting(old)} → {_setting(new)}"
            for k, (old, new) in b.settings_changed.items())]  # fmt: skip
    left_out = len(b.only_in_baseline) + len(b.only_in_current)
    if left_out:
        lines += ["", f"Left out: {len(b.only_in_baseline)} questions only in the baseline, "
                  f"{len(b.only_in_current)} only in this run."]  # fmt: skip
    return lines
