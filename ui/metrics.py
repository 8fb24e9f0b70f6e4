"""The Metrics page (admins): the answers of a period, from the usage log, with charts.

Answer time and time to first token (p50, p95), questions, tokens and cost per day (and
per model), cache hit rate, feedback, and the questions the documents most often did not
answer. The report comes from ``RagService.usage_report``, which refuses anyone but an
admin; the navigation lists this page for admins only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from rag.errors import RagError
from rag.observe.usage import DayUsage, UsageReport, UsageStats
from rag.text import safe_label
from ui.render import show_error
from ui.resources import Resources

PERIODS = {1: "Today", 7: "7 days", 30: "30 days", 90: "90 days", 365: "365 days"}
DEFAULT_DAYS = 30
NONE = "n/a"  # a value with nothing to compute it from
Stat = Callable[[UsageStats], Any]  # one value of a day's stats


def page(res: Resources) -> None:
    """Render the metrics page: period, summary, charts, models and unanswered questions."""
    st.title("Metrics")
    days = st.segmented_control(
        "Period",
        list(PERIODS),
        format_func=PERIODS.__getitem__,
        default=DEFAULT_DAYS,
        required=True,
        key="metrics-days",
    )
    by_model = st.toggle("Split by model", key="metrics-by-model")
    try:
        report = res.service.usage_report(res.caller, days or DEFAULT_DAYS, by_model=by_model)
    except RagError as exc:
        show_error(exc, res.service.record_error, icon=":material/block:")
        return
    st.caption(
        f"{report.first_day:%d %b %Y} to {report.last_day:%d %b %Y} (days in UTC). "
        "Times are of every answer given, those served from the cache included."
    )
    if report.empty:
        st.info(
            f"No answers in this period yet. Every answer given in Chat, through the API, "
            f"the CLI or a batch run is counted here, and kept "
            f"{res.settings.usage_retention_days} days (RAG_USAGE_RETENTION_DAYS).",
            icon=":material/monitoring:",
        )
        return
    _summary(report.total)
    _charts(report, by_model)
    _models(report)
    _gaps(report)


# Formatting --------------------------------------------------------------------------------


def _duration(ms: float | None) -> str:
    if ms is None:
        return NONE
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _durations(low: float | None, high: float | None) -> str:
    """Two times in one unit, e.g. ``240 / 530 ms`` or ``1.1 / 3.2 s``."""
    if low is None or high is None:
        return NONE
    if max(low, high) < 1000:
        return f"{low:.0f} / {high:.0f} ms"
    return f"{low / 1000:.1f} / {high / 1000:.1f} s"


def _share(value: float | None) -> str:
    return NONE if value is None else f"{value:.0%}"


def _dollars(value: float | None) -> str:
    if value is None:
        return NONE
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _count(value: int) -> str:
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1000, "k")):
        if value >= size:
            scaled = value / size
            return f"{scaled:.1f}{suffix}" if scaled < 10 else f"{scaled:.0f}{suffix}"
    return str(value)


# Sections ----------------------------------------------------------------------------------


def _summary(total: UsageStats) -> None:
    row = st.columns(4)
    row[0].metric("Questions", f"{total.questions:,}", border=True)
    row[1].metric(
        "Answer time p50 / p95",
        _durations(total.answer_p50_ms, total.answer_p95_ms),
        border=True,
    )
    row[2].metric(
        "First token p50 / p95",
        _durations(total.first_token_p50_ms, total.first_token_p95_ms),
        border=True,
    )
    row[3].metric(
        "Abstained",
        _share(total.abstention_rate),
        help="Share of questions the documents did not answer.",
        border=True,
    )
    row = st.columns(4)
    row[0].metric(
        "Tokens in / out",
        f"{_count(total.prompt_tokens)} / {_count(total.completion_tokens)}",
        border=True,
    )
    row[1].metric(
        "Estimated cost",
        _dollars(total.cost),
        help="From RAG_MODEL_PRICES; none when it prices none of the models used.",
        border=True,
    )
    row[2].metric(
        "Cache hit rate",
        _share(total.cache_hit_rate),
        help="Share of answers served from the response cache.",
        border=True,
    )
    rated = total.up + total.down
    row[3].metric(
        "Rated helpful",
        _share(total.feedback_ratio),
        help=f"Thumbs up among rated answers: {total.up} up, {total.down} down.",
        border=True,
    )
    notes = [f"{rated:,} answers rated: {total.up:,} up, {total.down:,} down."] if rated else []
    if total.reviewed:
        notes.append(f"{total.reviewed:,} answers were a reviewer's correction.")
    if notes:
        st.caption(" ".join(notes))


def _frame(days: Sequence[DayUsage], columns: dict[str, Stat]) -> Any:
    """A table with a ``day`` column and one column per name, from each day's stats."""
    data: dict[str, list[Any]] = {"day": [pd.Timestamp(d.day) for d in days]}
    for name, value in columns.items():
        data[name] = [value(d.stats) for d in days]
    if any(d.model is not None for d in days):
        data["model"] = [d.model or "" for d in days]
    return pd.DataFrame(data)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _tokens(stats: UsageStats) -> int:
    return stats.prompt_tokens + stats.completion_tokens


def _percent(share: float | None) -> float | None:
    return None if share is None else share * 100


def _latency(title: str, days: Sequence[DayUsage], p50: Stat, p95: Stat) -> None:
    st.subheader(title)
    frame = _frame(days, {"p50": lambda s: _seconds(p50(s)), "p95": lambda s: _seconds(p95(s))})
    st.line_chart(frame, x="day", y=["p50", "p95"], x_label="", y_label="seconds")


def _amount(title: str, report: UsageReport, split: bool, name: str, value: Stat) -> None:
    """Bars of one amount a day, in a colour per model when ``split``."""
    st.subheader(title)
    if split:
        frame = _frame(report.days_by_model, {name: value})
        st.bar_chart(frame, x="day", y=name, color="model", x_label="")
    else:
        st.bar_chart(_frame(report.days, {name: value}), x="day", y=name, x_label="")


def _charts(report: UsageReport, by_model: bool) -> None:
    days = report.days
    split = by_model and bool(report.days_by_model)
    left, right = st.columns(2)
    with left:
        _latency("Answer time (s)", days, lambda s: s.answer_p50_ms, lambda s: s.answer_p95_ms)
    with right:
        _latency(
            "Time to first token (s)",
            days,
            lambda s: s.first_token_p50_ms,
            lambda s: s.first_token_p95_ms,
        )
    left, right = st.columns(2)
    with left:
        _amount("Questions per day", report, split, "questions", lambda s: s.questions)
    with right:
        if split:
            _amount("Tokens per day", report, split, "tokens", _tokens)
        else:
            st.subheader("Tokens per day")
            frame = _frame(
                days, {"in": lambda s: s.prompt_tokens, "out": lambda s: s.completion_tokens}
            )
            st.area_chart(frame, x="day", y=["in", "out"], x_label="", y_label="tokens")
    left, right = st.columns(2)
    with left:
        st.subheader("Cache hit rate (%)")
        frame = _frame(days, {"cache hits": lambda s: _percent(s.cache_hit_rate)})
        st.line_chart(frame, x="day", y="cache hits", x_label="", y_label="% of answers")
    with right:
        st.subheader("Feedback per day")
        frame = _frame(days, {"up": lambda s: s.up, "down": lambda s: s.down})
        st.bar_chart(frame, x="day", y=["up", "down"], x_label="", y_label="answers rated")
    if report.total.cost is not None:
        _amount("Estimated cost per day ($)", report, split, "dollars", lambda s: s.cost or 0.0)


def _models(report: UsageReport) -> None:
    st.subheader("Per model")
    st.dataframe(
        [
            {
                "model": safe_label(m.model),
                "questions": m.stats.questions,
                "answer p50": _duration(m.stats.answer_p50_ms),
                "answer p95": _duration(m.stats.answer_p95_ms),
                "first token p50": _duration(m.stats.first_token_p50_ms),
                "first token p95": _duration(m.stats.first_token_p95_ms),
                "tokens in": m.stats.prompt_tokens,
                "tokens out": m.stats.completion_tokens,
                "cost": _dollars(m.stats.cost),
                "cache hits": _share(m.stats.cache_hit_rate),
                "rated helpful": _share(m.stats.feedback_ratio),
            }
            for m in report.models
        ],
        hide_index=True,
    )


def _gaps(report: UsageReport) -> None:
    st.subheader("Questions the documents did not answer")
    if not report.questions_kept:
        st.caption(
            f"{report.total.abstained:,} questions were not answered; their text is not "
            "kept (RAG_USAGE_QUESTIONS=false)."
        )
        return
    if not report.abstained_questions:
        st.caption("Every question of this period was answered from the documents.")
        return
    st.caption(
        "The most frequent first: the gaps in the documents. Questions are counted "
        "regardless of case and end punctuation; personal data is masked."
    )
    st.dataframe(
        [
            {
                "question": safe_label(q.text),
                "times asked": q.count,
                "last asked": q.last_asked,
            }
            for q in report.abstained_questions
        ],
        hide_index=True,
        column_config={
            "question": st.column_config.TextColumn(width="large"),
            "last asked": st.column_config.DatetimeColumn(format="D MMM YYYY, HH:mm"),
        },
    )
