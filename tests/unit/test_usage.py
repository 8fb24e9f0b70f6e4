"""The usage log and its report: percentiles, days and models, cache, feedback, gaps."""

from __future__ import annotations

import dataclasses
import logging
import random
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rag.access.principal import LOCAL, Principal, Role
from rag.chain import Answer
from rag.errors import ConfigError, InvalidInputError, PermissionDeniedError
from rag.observe.prices import Price
from rag.observe.usage import UsageEntry, UsageLog, percentile
from rag.service import usage as service_usage
from rag.settings import load_settings
from rag.text import same_question as question_key
from tests.api_fakes import FakeJobs, fake_service

ROOT = Path(__file__).resolve().parents[2]
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MEMBER = Principal(user_id="u1", name="member", role=Role.MEMBER, via="key")


class Clock:
    """The time the log sees; tests move it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def log_at(tmp_path: Path, clock: Clock, **kwargs) -> UsageLog:
    return UsageLog(tmp_path / "usage.sqlite", clock=clock, **kwargs)


def entry(model: str = "m", total_ms: float = 100.0, **kwargs) -> UsageEntry:
    return UsageEntry(user_id=kwargs.pop("user_id", "ann"), model=model, total_ms=total_ms,
                      **kwargs)  # fmt: skip


def raw_questions(log: UsageLog) -> list[tuple]:
    with sqlite3.connect(log.path) as db:
        return db.execute("SELECT abstained, question, question_key FROM answers").fetchall()


# Percentiles -----------------------------------------------------------------------------


def test_percentiles_interpolate_between_closest_ranks() -> None:
    ten = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile(ten, 50) == pytest.approx(5.5)
    assert percentile(ten, 95) == pytest.approx(9.55)
    assert percentile(ten, 0) == 1.0 and percentile(ten, 100) == 10.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    assert percentile([100.0, 200.0, 300.0, 400.0], 95) == pytest.approx(385.0)
    rng = random.Random(7)
    values = [rng.lognormvariate(6, 1) for _ in range(501)]
    for q in (1, 25, 50, 90, 95, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile(ten, 101)


# The report --------------------------------------------------------------------------------


def test_a_report_has_every_day_each_model_and_the_latency_percentiles(tmp_path: Path) -> None:
    clock = Clock(NOON - timedelta(days=2))
    log = log_at(tmp_path, clock, prices={"big": Price(2.0, 8.0)})
    for ms in (100, 200, 300, 400):  # two days ago: four answers of "big"
        log.record(entry("big", ms, first_token_ms=ms / 10, prompt_tokens=1000,
                         completion_tokens=500))  # fmt: skip
    clock.now = NOON
    log.record(entry("small", 1000, first_token_ms=50, prompt_tokens=10, completion_tokens=5))
    log.record(entry("big", 3000, first_token_ms=70, prompt_tokens=1000, completion_tokens=500))
    clock.now = NOON - timedelta(days=40)  # outside a 30-day report
    log.record(entry("big", 99_000))
    clock.now = NOON

    report = log.report(days=3, by_model=True)

    assert (report.first_day, report.last_day) == (date(2026, 3, 8), date(2026, 3, 10))
    assert [d.day for d in report.days] == [date(2026, 3, 8), date(2026, 3, 9), date(2026, 3, 10)]
    first, empty, today = (d.stats for d in report.days)
    assert (first.questions, empty.questions, today.questions) == (4, 0, 2)
    assert first.answer_p50_ms == pytest.approx(250.0)
    assert first.answer_p95_ms == pytest.approx(385.0)
    assert first.first_token_p95_ms == pytest.approx(38.5)
    assert empty.answer_p50_ms is None and empty.cost is None
    assert today.answer_p50_ms == pytest.approx(2000.0)
    assert report.total.questions == 6
    assert report.total.prompt_tokens == 5 * 1000 + 10
    assert report.total.answer_p95_ms == pytest.approx(float(np.percentile(
        [100, 200, 300, 400, 1000, 3000], 95)))  # fmt: skip
    # 1000 prompt and 500 completion tokens of "big" cost 0.002 + 0.004 dollars; "small"
    # has no price.
    assert first.cost == pytest.approx(4 * 0.006)
    assert report.total.cost == pytest.approx(5 * 0.006)
    assert [(m.model, m.stats.questions) for m in report.models] == [("big", 5), ("small", 1)]
    assert report.models[1].stats.cost is None
    split = [(d.day, d.model, d.stats.questions) for d in report.days_by_model]
    assert split == [
        (date(2026, 3, 8), "big", 4),
        (date(2026, 3, 10), "big", 1),
        (date(2026, 3, 10), "small", 1),
    ]
    assert log.report(days=3).days_by_model == []  # only when asked
    assert log.report(days=30).total.questions == 6  # the 40-day-old answer is left out
    assert log.report(days=41).total.questions == 7


def test_cache_hits_and_reviewed_answers_count_but_cost_nothing(tmp_path: Path) -> None:
    clock = Clock(NOON)
    log = log_at(tmp_path, clock, prices={"*": Price(1.0, 1.0)})
    answer = Answer(
        question="q", standalone="q", text="a", citations=[], sources=[], prompt_version="v",
        model="m", timings={"total_ms": 12.0, "first_token_ms": 3.0},
        tokens={"prompt": 900, "completion": 100}, abstained=False,
    )  # fmt: skip
    log.record(UsageEntry.of(answer, "ann", None))
    answer.served_from = "cache"
    cached = UsageEntry.of(answer, "ann", frozenset({"c1"}))
    assert (cached.prompt_tokens, cached.completion_tokens) == (0, 0)
    for _ in range(2):
        log.record(cached)
    answer.served_from = "review"
    log.record(UsageEntry.of(answer, "ann", None))

    total = log.report(days=1).total
    assert total.questions == 4 and total.cache_hits == 2 and total.reviewed == 1
    assert total.cache_hit_rate == pytest.approx(0.5)
    assert total.prompt_tokens == 900 and total.cost == pytest.approx(0.001)
    assert total.answer_p50_ms == pytest.approx(12.0)
    assert log.report(days=1).days[0].stats.cache_hit_rate == pytest.approx(0.5)


def test_feedback_goes_to_the_latest_answer_of_that_message_and_user(tmp_path: Path) -> None:
    log = log_at(tmp_path, Clock(NOON))
    for message_id in (1, 2, 3, 4):
        log.record(entry(message_id=message_id))
    log.record(entry(message_id=4))  # answered again: the stored answer replaced
    log.record(entry(message_id=9, user_id="bob"))
    assert log.rate(1, "ann", 1) and log.rate(2, "ann", 1) and log.rate(3, "ann", 0)
    assert log.rate(4, "ann", 0)
    assert not log.rate(9, "ann", 1)  # bob's answer: ann cannot rate it
    assert not log.rate(77, "ann", 1)
    total = log.report(days=1).total
    assert (total.up, total.down) == (2, 2) and total.feedback_ratio == pytest.approx(0.5)
    with sqlite3.connect(log.path) as db:
        rated = db.execute("SELECT message_id, feedback FROM answers ORDER BY id").fetchall()
    assert rated == [(1, 1), (2, 1), (3, 0), (4, None), (4, 0), (9, None)]
    log.rate(3, "ann", None)  # cleared
    total = log.report(days=1).total
    assert (total.up, total.down) == (2, 1) and total.feedback_ratio == pytest.approx(2 / 3)
    assert log_at(tmp_path / "other", Clock(NOON)).report(days=1).total.feedback_ratio is None


def test_abstained_questions_are_ranked_by_how_often_they_come(tmp_path: Path) -> None:
    clock = Clock(NOON - timedelta(days=1))
    log = log_at(tmp_path, clock)
    asked = [
        "What is the refund policy?", "what is the  refund policy", "WHAT IS THE REFUND POLICY!",
        "Who approves travel?", "who approves travel ?",
        "Where is the VPN guide?",
    ]  # fmt: skip
    for text in asked:
        log.record(entry(abstained=True, question=text))
    log.record(entry(question="How do backups run?"))  # answered: its text is not kept
    clock.now = NOON
    log.record(entry(abstained=True, question="Where is the VPN guide"))
    log.record(entry(abstained=True, question="Mail jane.doe@example.com about VPN?"))

    report = log.report(days=7, top=3)
    ranked = [(q.key, q.count) for q in report.abstained_questions]
    assert ranked == [
        ("what is the refund policy", 3),
        ("where is the vpn guide", 2),  # asked as often as travel, but later
        ("who approves travel", 2),
    ]
    refund, vpn, _ = report.abstained_questions
    assert refund.text == "WHAT IS THE REFUND POLICY!"  # the latest wording
    assert refund.last_asked.date() == date(2026, 3, 9)
    assert vpn.last_asked.date() == date(2026, 3, 10)
    assert report.total.abstained == 8 and report.total.abstention_rate == pytest.approx(8 / 9)
    stored = raw_questions(log)
    assert (0, None, None) in stored  # the answered question left no text
    assert any(q and "<EMAIL_ADDRESS>" in q for _, q, _ in stored)
    assert not any(q and "jane.doe" in q for _, q, _ in stored)
    assert len(log.report(days=7, top=50).abstained_questions) == 4
    assert [q.key for q in log.report(days=1).abstained_questions] == [
        "mail <email_address> about vpn",
        "where is the vpn guide",
    ]  # a count of 1 each: the latest first


def test_question_keys_ignore_case_spacing_and_end_marks() -> None:
    assert question_key("  What is  X? ") == "what is x"
    assert question_key("¿Qué es X?") == "qué es x"
    assert question_key("\uff26\uff35\uff2c\uff2c") == "full"  # full-width letters
    assert question_key("???") == ""


def test_with_the_setting_off_no_question_text_is_kept(tmp_path: Path) -> None:
    log = log_at(tmp_path, Clock(NOON), keep_questions=False)
    log.record(entry(abstained=True, question="What is the refund policy?"))
    log.record(entry(question="How do backups run?"))
    assert [(a, q, k) for a, q, k in raw_questions(log)] == [(1, None, None), (0, None, None)]
    report = log.report(days=1)
    assert report.questions_kept is False and report.abstained_questions == []
    assert report.total.abstained == 1


def test_rows_past_the_retention_are_pruned_at_most_hourly(tmp_path: Path) -> None:
    clock = Clock(NOON - timedelta(days=10))
    log = log_at(tmp_path, clock, retention_days=7)
    log.record(entry())  # the first record prunes (nothing yet)
    clock.now = NOON - timedelta(days=8)
    log.record(entry())
    clock.now = NOON
    log.record(entry())  # the last prune was days ago: both old rows go
    assert log.report(days=30).total.questions == 1
    clock.now = NOON - timedelta(days=7) + timedelta(minutes=15)
    log.record(entry())  # kept: 6 days 23:45 old at the last prune
    clock.now = NOON + timedelta(minutes=30)
    log.record(entry())  # that row is over 7 days old now, but the last prune was at noon
    assert log.report(days=30).total.questions == 3
    clock.now = NOON + timedelta(hours=1)
    log.record(entry())  # an hour on: pruned
    assert log.report(days=30).total.questions == 3
    assert [d.day for d in log.report(days=30).days if d.stats.questions] == [NOON.date()]
    clock.now = NOON + timedelta(days=8)
    assert log.prune() == 3  # an explicit prune does it at once
    with pytest.raises(ValueError, match="at least 1"):
        UsageLog(tmp_path / "x.sqlite", retention_days=0)


_WRITER = """
import sys
from pathlib import Path
from rag.observe.usage import UsageEntry, UsageLog
log = UsageLog(Path(sys.argv[1]))
for i in range(100):
    log.record(UsageEntry(user_id=sys.argv[2], model="m", total_ms=float(i)))
"""


def test_processes_write_one_log_together(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite"
    UsageLog(path).close()
    env = {"PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name], env=env)
        for name in ("a", "b", "c")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    with sqlite3.connect(path) as db:
        counts = dict(db.execute("SELECT user_id, count(*) FROM answers GROUP BY user_id"))
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert counts == {"a": 100, "b": 100, "c": 100} and mode == "wal"


def test_the_usage_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="RAG_USAGE_RETENTION_DAYS"):
        load_settings(usage_retention_days=0)
    assert load_settings(usage_questions=False).usage_questions is False


# Through the service -----------------------------------------------------------------------


def test_a_scripted_session_is_recorded_and_reported_to_admins(tmp_path: Path) -> None:
    service, _ = fake_service(tmp_path)
    try:
        conversation = service.create_conversation(caller=LOCAL)
        for question in ("unknown words only", "default of max_connections?"):
            stream = service.ask(question, caller=LOCAL, conversation_id=conversation.id)
            "".join(stream)
        rated = stream.result
        "".join(service.ask("unknown words only", caller=LOCAL))
        "".join(service.ask("max_connections default?", caller=LOCAL, collections=["default"]))
        assert rated is not None and rated.message_id is not None
        service.set_feedback(rated.message_id, 0, caller=LOCAL)
        service.set_feedback(rated.message_id, 1, caller=LOCAL)  # changed their mind

        report = service.usage_report(LOCAL, days=1, by_model=True)
        # An admin's key limited to one collection: the counts, none of the questions.
        limited = service.usage_report(
            dataclasses.replace(LOCAL, key_id="k1", key_collections=frozenset({"default"}))
        )
        with pytest.raises(PermissionDeniedError, match="only admins"):
            service.usage_report(MEMBER)
        with pytest.raises(InvalidInputError, match="days"):
            service.usage_report(LOCAL, days=0)
        with sqlite3.connect(service.settings.usage_path) as db:
            rows = db.execute(
                "SELECT user_id, model, collections, message_id IS NOT NULL, feedback, "
                "abstained, question, prompt_tokens > 0 FROM answers ORDER BY id"
            ).fetchall()
    finally:
        service.close()
    assert rows == [
        ("local", "fake-model", None, 1, None, 1, "unknown words only", 0),
        ("local", "fake-model", None, 1, 1, 0, None, 1),  # rated down, then up
        ("local", "fake-model", None, 0, None, 1, "unknown words only", 0),
        ("local", "fake-model", '["default"]', 0, None, 0, None, 1),
    ]
    total = report.total
    assert total.questions == 4 and total.abstained == 2
    assert (total.up, total.down, total.feedback_ratio) == (1, 0, 1.0)
    assert total.answer_p50_ms is not None and total.first_token_p95_ms is not None
    assert [(q.key, q.count) for q in report.abstained_questions] == [("unknown words only", 2)]
    assert [(d.model, d.stats.questions) for d in report.days_by_model] == [("fake-model", 4)]
    assert limited.total.questions == 4 and limited.abstained_questions == []


def test_the_usage_report_over_the_api_is_for_admins(tmp_path: Path) -> None:
    from rag.api.app import create_api, serve_api
    from rag.api.metrics import usage

    service, _ = fake_service(tmp_path)
    client = TestClient(
        serve_api(create_api(lambda: service, lambda: FakeJobs())), client=("127.0.0.1", 40000)
    )
    try:
        assert (
            client.post("/api/v1/ask", json={"question": "unknown words only"}).status_code == 200
        )
        r = client.get("/api/v1/usage", params={"days": 7, "by_model": True})
        bad = client.get("/api/v1/usage", params={"days": 0})
        with pytest.raises(PermissionDeniedError):
            usage(service, MEMBER)
    finally:
        service.close()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"]["questions"] == 1 and body["total"]["abstention_rate"] == 1.0
    assert len(body["days"]) == 7 and body["days_by_model"][0]["model"] == "fake-model"
    assert body["abstained_questions"][0]["count"] == 1
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "days"


def test_a_usage_log_that_cannot_be_written_never_fails_an_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read the module's logger itself: an earlier test's logging setup may have changed
    # the root's handlers, the logger registry or disabled existing loggers.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    found = service_usage.logger  # the module's own (a test may have reset the registry)
    monkeypatch.setattr(found, "disabled", False)
    level = found.level
    found.setLevel(logging.WARNING)
    found.addHandler(handler)
    service, _ = fake_service(tmp_path)
    service.settings.usage_path.mkdir(parents=True)  # a folder where the database should be
    try:
        stream = service.ask("default of max_connections?", caller=LOCAL)
        assert "default is 100" in "".join(stream)
    finally:
        service.close()
        found.removeHandler(handler)
        found.setLevel(level)
    # The cause is logged: a traceback, or its redacted text (rag.guard.pii.RedactingFilter).
    assert any(
        "missing from the usage log" in r.getMessage() and (r.exc_info or r.exc_text)
        for r in records
    )
