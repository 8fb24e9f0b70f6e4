"""The usage log: one row per finished answer, in its own SQLite file, for the Metrics page.

The Prometheus counters (``rag.observe.metrics``) belong to one process and keep no
history; this log keeps every answer of every process for ``RAG_USAGE_RETENTION_DAYS``
so that an admin can see latency, tokens, cost, cache hits and feedback over time.

A row holds when (UTC), who (user id), the collections searched, the model, prompt and
completion tokens, the estimated cost (``RAG_MODEL_PRICES`` at the time), the total and
first-token milliseconds, whether the documents did not answer, where a stored answer came
from (``"cache"``, ``"review"``), the conversation message id and, once rated, the
feedback. The text of a question is kept only when the answer abstained (the most frequent
ones are the gaps in the documents), with personal data masked as in log lines, and not at
all with ``RAG_USAGE_QUESTIONS=false``.

Several processes may write at once (WAL, a busy timeout); rows older than the retention
are pruned at most once an hour per process by one ``DELETE`` over the time index.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import UsageLogError
from rag.guard.pii import LogDetector, redact
from rag.observe.prices import Price, cost_of, tokens_by_model
from rag.sqlite import open_db
from rag.text import same_question

if TYPE_CHECKING:
    from rag.chain import Answer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,              -- ISO 8601 in UTC, to the microsecond
    user_id TEXT NOT NULL,
    collections TEXT,              -- JSON list; NULL: all the user may read
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost REAL,                     -- dollars; NULL: the price table names no such model
    total_ms REAL NOT NULL,
    first_token_ms REAL NOT NULL,
    abstained INTEGER NOT NULL,
    served_from TEXT,              -- 'cache', 'review'; NULL: the model answered
    message_id INTEGER,            -- the stored answer, in a conversation
    feedback INTEGER,              -- 1 up, 0 down, NULL not rated
    question TEXT,                 -- abstained answers only, personal data masked
    question_key TEXT              -- the question normalised, for counting
);
CREATE INDEX IF NOT EXISTS answers_at ON answers(at);
CREATE INDEX IF NOT EXISTS answers_message ON answers(message_id)
    WHERE message_id IS NOT NULL;
PRAGMA user_version = 1;
"""

PRUNE_EVERY = timedelta(hours=1)
QUESTION_MAX_CHARS = 500


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    The same definition as NumPy's default (``method="linear"``) and Excel's
    ``PERCENTILE.INC``: for sorted values ``x`` and ``h = (n - 1) * q / 100``, the result
    is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. None for none.

    Raises:
        ValueError: ``q`` is outside 0..100.
    """
    return _ranked(np.sort(np.asarray(values, dtype=float)), q)


def _ranked(ordered: np.ndarray, q: float) -> float | None:
    """``percentile`` of values already sorted."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {q}")
    if not len(ordered):
        return None
    h = (len(ordered) - 1) * q / 100
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (h - low) * (ordered[high] - ordered[low]))


@dataclass(frozen=True)
class UsageEntry:
    """What the log keeps of one finished answer (see the module's docstring)."""

    user_id: str
    model: str
    collections: frozenset[str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_ms: float = 0.0
    first_token_ms: float = 0.0
    abstained: bool = False
    served_from: str | None = None
    message_id: int | None = None
    question: str = ""  # kept for abstained answers only
    # Prompt and completion tokens per model when several worked on it (a small model
    # condensing): the cost is the sum of each model's.
    by_model: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def of(cls, answer: Answer, user_id: str, collections: frozenset[str] | None) -> UsageEntry:
        """The entry of an answer ``user_id`` was given from ``collections``.

        A stored answer (``served_from``) cost no tokens. The question is the standalone
        one the documents were searched with (a follow-up rewritten to stand alone).
        """
        model = answer.model or "unknown"
        served = answer.served_from
        by_model = {} if served else tokens_by_model(answer.tokens, model)
        return cls(
            user_id=user_id,
            model=model,
            collections=collections,
            prompt_tokens=sum(p for p, _ in by_model.values()),
            completion_tokens=sum(c for _, c in by_model.values()),
            total_ms=float(answer.timings.get("total_ms", 0.0)),
            first_token_ms=float(answer.timings.get("first_token_ms", 0.0)),
            abstained=answer.abstained,
            served_from=served,
            message_id=answer.message_id,
            question=answer.standalone or answer.question,
            by_model=tuple((name, p, c) for name, (p, c) in by_model.items()),
        )


@dataclass(frozen=True)
class UsageStats:
    """Answers of a group (a period, a day, a model): counts, latency, tokens, cost.

    Latencies are of every answer users were given, those served from the cache or the
    review queue included (``cache_hit_rate`` says how many were).
    """

    questions: int = 0
    answer_p50_ms: float | None = None
    answer_p95_ms: float | None = None
    first_token_p50_ms: float | None = None
    first_token_p95_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None  # dollars; None: no answer's model had a price
    cache_hits: int = 0
    reviewed: int = 0  # answers a reviewer's correction served
    abstained: int = 0
    up: int = 0
    down: int = 0

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of answers served from the response cache (None without answers)."""
        return self.cache_hits / self.questions if self.questions else None

    @property
    def feedback_ratio(self) -> float | None:
        """Share of rated answers rated up: up / (up + down) (None without ratings)."""
        rated = self.up + self.down
        return self.up / rated if rated else None

    @property
    def abstention_rate(self) -> float | None:
        """Share of answers the documents did not cover (None without answers)."""
        return self.abstained / self.questions if self.questions else None

    def to_json(self) -> dict[str, Any]:
        """The stats with the derived rates."""
        return {
            **asdict(self),
            "cache_hit_rate": self.cache_hit_rate,
            "feedback_ratio": self.feedback_ratio,
            "abstention_rate": self.abstention_rate,
        }


@dataclass(frozen=True)
class DayUsage:
    """The answers of one UTC day (of one model, or of all when ``model`` is None)."""

    day: date
    stats: UsageStats
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"day": "YYYY-MM-DD", "model": ..., **stats}``."""
        return {"day": self.day.isoformat(), "model": self.model, **self.stats.to_json()}


@dataclass(frozen=True)
class ModelUsage:
    """The answers of one model over the period."""

    model: str
    stats: UsageStats

    def to_json(self) -> dict[str, Any]:
        """``{"model": ..., **stats}``."""
        return {"model": self.model, **self.stats.to_json()}


@dataclass(frozen=True)
class AbstainedQuestion:
    """A question the documents did not answer: as last asked, how often, when last."""

    key: str  # the normalised text the count is over
    text: str  # the latest wording (personal data masked)
    count: int
    last_asked: datetime

    def to_json(self) -> dict[str, Any]:
        """The question with its count and the ISO time it was last asked."""
        return {**asdict(self), "last_asked": self.last_asked.isoformat()}


@dataclass(frozen=True)
class UsageReport:
    """The usage of the last ``days`` UTC days, today included."""

    first_day: date
    last_day: date
    total: UsageStats
    days: list[DayUsage]  # every day of the period, oldest first, empty days included
    models: list[ModelUsage]  # the period per model, most questions first
    days_by_model: list[DayUsage] = field(default_factory=list)  # when asked for
    abstained_questions: list[AbstainedQuestion] = field(default_factory=list)
    questions_kept: bool = True  # False: RAG_USAGE_QUESTIONS=false, no texts are kept

    @property
    def empty(self) -> bool:
        """No answer in the period."""
        return self.total.questions == 0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (``GET /api/v1/usage``)."""
        return {
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "total": self.total.to_json(),
            "days": [d.to_json() for d in self.days],
            "models": [m.to_json() for m in self.models],
            "days_by_model": [d.to_json() for d in self.days_by_model],
            "abstained_questions": [q.to_json() for q in self.abstained_questions],
            "questions_kept": self.questions_kept,
        }


@dataclass
class _Group:
    """Answers of one day and model, or of several such merged.

    Counts add up; percentiles do not, so the latencies themselves are kept.
    """

    questions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    cache_hits: int = 0
    reviewed: int = 0
    abstained: int = 0
    up: int = 0
    down: int = 0
    totals: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)

    def add(self, other: _Group) -> None:
        self.questions += other.questions
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if other.cost is not None:
            self.cost = (self.cost or 0.0) + other.cost
        self.cache_hits += other.cache_hits
        self.reviewed += other.reviewed
        self.abstained += other.abstained
        self.up += other.up
        self.down += other.down
        self.totals.extend(other.totals)
        self.firsts.extend(other.firsts)

    def stats(self) -> UsageStats:
        totals = np.sort(np.asarray(self.totals, dtype=float))
        firsts = np.sort(np.asarray(self.firsts, dtype=float))
        return UsageStats(
            questions=self.questions,
            answer_p50_ms=_ranked(totals, 50),
            answer_p95_ms=_ranked(totals, 95),
            first_token_p50_ms=_ranked(firsts, 50),
            first_token_p95_ms=_ranked(firsts, 95),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost=self.cost,
            cache_hits=self.cache_hits,
            reviewed=self.reviewed,
            abstained=self.abstained,
            up=self.up,
            down=self.down,
        )


def _merged(groups: Iterable[_Group]) -> _Group:
    out = _Group()
    for group in groups:
        out.add(group)
    return out


def _period(days: int, now: datetime) -> tuple[date, date]:
    last = now.astimezone(UTC).date()
    return last - timedelta(days=days - 1), last


def _build_report(
    groups: Mapping[tuple[date, str], _Group],
    days: int,
    now: datetime,
    *,
    by_model: bool = False,
    abstained: Sequence[AbstainedQuestion] = (),
    questions_kept: bool = True,
) -> UsageReport:
    """The report of the ``days`` UTC days ending with the day of ``now``.

    ``groups``: the answers of each (day, model); days outside the period are left out.
    """
    first, last = _period(days, now)
    kept = {key: group for key, group in groups.items() if first <= key[0] <= last}
    per_day: dict[date, list[_Group]] = defaultdict(list)
    per_model: dict[str, list[_Group]] = defaultdict(list)
    for (day, model), group in kept.items():
        per_day[day].append(group)
        per_model[model].append(group)
    models = [ModelUsage(model, _merged(found).stats()) for model, found in per_model.items()]
    models.sort(key=lambda m: (-m.stats.questions, m.model))
    period = [first + timedelta(days=i) for i in range(days)]
    return UsageReport(
        first_day=first,
        last_day=last,
        total=_merged(kept.values()).stats(),
        days=[DayUsage(day, _merged(per_day.get(day, [])).stats()) for day in period],
        models=models,
        days_by_model=[
            DayUsage(day, group.stats(), model) for (day, model), group in sorted(kept.items())
        ]
        if by_model
        else [],
        abstained_questions=list(abstained),
        questions_kept=questions_kept,
    )


def _now() -> datetime:
    return datetime.now(UTC)


class UsageLog:
    """Record answers and their feedback; report on a period. Safe across threads and processes.

    ``prices``: the cost table (``RAG_MODEL_PRICES``). ``keep_questions``: keep the text
    of abstained questions (``RAG_USAGE_QUESTIONS``). ``retention_days``: rows older are
    pruned (``RAG_USAGE_RETENTION_DAYS``). ``clock``: the time now, in UTC (tests set it).

    Raises:
        UsageLogError: the file cannot be opened or created.
    """

    def __init__(
        self,
        path: Path,
        *,
        prices: Mapping[str, Price] | None = None,
        keep_questions: bool = True,
        retention_days: int = 90,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self.path = path
        self.prices = dict(prices or {})
        self.keep_questions = keep_questions
        self.retention = timedelta(days=retention_days)
        self._clock = clock
        self._detector = LogDetector()
        self._lock = threading.Lock()
        self._next_prune: datetime | None = None
        try:
            # A power cut may lose the last answers' rows, never the file: not durable.
            self._db = open_db(path, _SCHEMA, timeout_s=30, autocommit=True, durable=False)
        except (OSError, sqlite3.Error) as exc:
            raise UsageLogError(path, str(exc)) from exc

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _cost(self, entry: UsageEntry) -> float | None:
        """Estimated dollars of an entry (None: no price for its model)."""
        parts = entry.by_model or ((entry.model, entry.prompt_tokens, entry.completion_tokens),)
        costs = [cost_of(self.prices, name, p, c) for name, p, c in parts]
        known = [c for c in costs if c is not None]
        return sum(known) if known else None

    def record(self, entry: UsageEntry) -> None:
        """Add one answer (and prune old rows when an hour has passed since the last time).

        Raises:
            UsageLogError: the row could not be written.
        """
        now = self._clock()
        question = key = None
        if entry.abstained and self.keep_questions:
            question = redact(entry.question, self._detector).strip()[:QUESTION_MAX_CHARS]
            key = same_question(question) or None
            if key is None:
                question = None
        collections = None if entry.collections is None else json.dumps(sorted(entry.collections))
        row = (
            now.astimezone(UTC).isoformat(timespec="microseconds"),
            entry.user_id,
            collections,
            entry.model,
            entry.prompt_tokens,
            entry.completion_tokens,
            self._cost(entry),
            entry.total_ms,
            entry.first_token_ms,
            int(entry.abstained),
            entry.served_from,
            entry.message_id,
            question,
            key,
        )
        with self._lock, self._errors():
            self._db.execute(
                "INSERT INTO answers (at, user_id, collections, model, prompt_tokens, "
                "completion_tokens, cost, total_ms, first_token_ms, abstained, served_from, "
                "message_id, question, question_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        if self._next_prune is None or now >= self._next_prune:
            self.prune()

    def rate(self, message_id: int, user_id: str, score: int | None) -> bool:
        """Set the feedback (1 up, 0 down, None cleared) of ``user_id``'s answer.

        A message id names the latest row with it (an answer given again replaces the
        stored one). Returns whether a row was found.

        Raises:
            UsageLogError: the row could not be written.
        """
        with self._lock, self._errors():
            changed = self._db.execute(
                "UPDATE answers SET feedback = ? WHERE id = (SELECT max(id) FROM answers "
                "WHERE message_id = ? AND user_id = ?)",
                (score, message_id, user_id),
            ).rowcount
        return bool(changed)

    def prune(self) -> int:
        """Delete rows older than the retention; how many.

        Raises:
            UsageLogError: the rows could not be deleted.
        """
        now = self._clock()
        cutoff = (now - self.retention).astimezone(UTC).isoformat(timespec="microseconds")
        with self._lock, self._errors():
            removed = self._db.execute("DELETE FROM answers WHERE at < ?", (cutoff,)).rowcount
        self._next_prune = now + PRUNE_EVERY
        return int(removed)

    def report(self, days: int = 30, *, by_model: bool = False, top: int = 20) -> UsageReport:
        """The last ``days`` UTC days (today included): per day, per model, top abstained.

        ``by_model``: also each day per model. ``top``: how many abstained questions.

        Raises:
            UsageLogError: the log could not be read.
        """
        now = self._clock()
        first, _ = _period(days, now)
        since = first.isoformat()  # "YYYY-MM-DD" sorts before any time of that day
        groups: defaultdict[tuple[str, str], _Group] = defaultdict(_Group)
        with self._lock, self._errors():
            rows = self._db.execute(
                "SELECT substr(at, 1, 10), model, prompt_tokens, completion_tokens, cost, "
                "served_from, abstained, feedback, total_ms, first_token_ms FROM answers "
                "WHERE at >= ?",
                (since,),
            ).fetchall()
            # The latest wording of each of the most frequent normalised questions.
            found = (
                self._db.execute(
                    "SELECT g.question_key, a.question, g.n, a.at FROM ("
                    "  SELECT question_key, count(*) AS n, max(id) AS last FROM answers"
                    "  WHERE abstained = 1 AND question_key IS NOT NULL AND at >= ?"
                    "  GROUP BY question_key ORDER BY n DESC, last DESC LIMIT ?"
                    ") AS g JOIN answers AS a ON a.id = g.last ORDER BY g.n DESC, g.last DESC",
                    (since, top),
                ).fetchall()
                if top > 0
                else []
            )
        for (
            day,
            model,
            prompt,
            completion,
            cost,
            served,
            abstained_,
            feedback,
            total,
            first,
        ) in rows:
            group = groups[(day, model)]
            group.questions += 1
            group.prompt_tokens += prompt
            group.completion_tokens += completion
            if cost is not None:  # None: no price for any of the group's answers
                group.cost = (group.cost or 0.0) + cost
            group.cache_hits += served == "cache"
            group.reviewed += served == "review"
            group.abstained += abstained_
            group.up += feedback == 1
            group.down += feedback == 0
            group.totals.append(total)
            group.firsts.append(first)
        abstained = [
            AbstainedQuestion(str(k), str(text), int(n), datetime.fromisoformat(at))
            for k, text, n, at in found
        ]
        return _build_report(
            {(date.fromisoformat(day), model): group for (day, model), group in groups.items()},
            days,
            now,
            by_model=by_model,
            abstained=abstained,
            questions_kept=self.keep_questions,
        )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as ``UsageLogError``."""
        try:
            yield
        except sqlite3.Error as exc:
            raise UsageLogError(self.path, str(exc)) from exc


def empty_report(days: int, *, questions_kept: bool, now: datetime | None = None) -> UsageReport:
    """The report of a period without answers (a service with no usage log)."""
    return _build_report({}, days, now or _now(), questions_kept=questions_kept)
