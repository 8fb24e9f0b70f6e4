"""The Metrics page: charts of the usage log for admins, no page for anyone else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from rag.access.principal import LOCAL
from rag.observe.prices import Price
from rag.observe.usage import UsageEntry, UsageLog
from tests.ui_fakes import fake_resources

NOW = datetime.now(UTC)


def _script(folder: str, user: str, page: str) -> None:
    import streamlit as st

    from tests.ui_fakes import fake_resources
    from ui import metrics
    from ui.app import pages

    res = fake_resources(folder)
    if user != "local":
        res = res.as_caller(res.service.access.as_user(user))
    if page == "metrics page itself":  # what the page does when reached anyway
        metrics.page(res)
        return
    found = pages(res, default=page)
    st.session_state["page titles"] = [p.title for p in found]
    st.navigation(found).run()


def app(folder: Path, user: str = "local", page: str = "metrics") -> AppTest:
    kwargs = {"folder": str(folder), "user": user, "page": page}
    return AppTest.from_function(_script, kwargs=kwargs, default_timeout=30).run()


def fill(folder: Path) -> None:
    """Answers of two models over three weeks, as the service's log records them."""
    settings = fake_resources(str(folder)).settings
    clock = [NOW]
    log = UsageLog(settings.usage_path, prices={"big": Price(2.0, 8.0)}, clock=lambda: clock[0])
    for days_ago, model, ms, abstained, question in [
        (20, "big", 4000, False, ""),
        (2, "big", 1000, False, ""),
        (2, "small", 300, True, "Who approves travel?"),
        (1, "big", 2000, True, "Where is the VPN guide?"),
        (0, "small", 200, True, "where is the VPN guide"),
        (0, "big", 1500, False, ""),
    ]:
        clock[0] = NOW - timedelta(days=days_ago)
        log.record(UsageEntry(
            user_id="local", model=model, total_ms=ms, first_token_ms=ms / 4,
            prompt_tokens=1000, completion_tokens=100, abstained=abstained, question=question,
            served_from="cache" if model == "small" and not abstained else None,
        ))  # fmt: skip
    log.close()


def charts(at: AppTest) -> list[Any]:
    """Each chart's data, as a pandas table."""
    found = []
    for chart in at.get("vega_lite_chart"):
        (dataset,) = chart.proto.datasets
        found.append(pa.ipc.open_stream(dataset.data.data).read_all().to_pandas())
    return found


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_admins_see_charts_summary_and_the_unanswered_questions(tmp_path: Path) -> None:
    fill(tmp_path)
    at = app(tmp_path)
    assert not at.exception
    assert at.title[0].value == "Metrics"
    assert "Metrics" in at.session_state["page titles"]
    assert metric(at, "Questions") == "6"
    assert metric(at, "Answer time p50 / p95") == "1.2 / 3.5 s"
    assert metric(at, "First token p50 / p95") == "312 / 875 ms"
    assert metric(at, "Tokens in / out") == "6.0k / 600"
    # Four answers of "big", each 1000 tokens in at $2/M and 100 out at $8/M.
    assert metric(at, "Estimated cost") == "$0.0112"
    assert metric(at, "Abstained") == "50%"
    headings = [h.value for h in at.subheader]
    assert {
        "Answer time (s)", "Time to first token (s)", "Questions per day", "Tokens per day",
        "Cache hit rate (%)", "Feedback per day", "Estimated cost per day ($)",
    } <= set(headings)  # fmt: skip
    found = charts(at)
    assert len(found) == 7
    questions = next(c for c in found if "questions" in c.columns)
    assert len(questions) == 30 and questions["questions"].sum() == 6
    assert questions["questions"].iloc[-3:].tolist() == [2, 1, 2]
    # Several series come melted: day, series name, value. Today: 1500 and 200 ms.
    latency = found[0]
    today = latency[latency["day"] == latency["day"].max()]
    assert dict(zip(today.iloc[:, 1], today.iloc[:, 2], strict=True)) == pytest.approx(
        {"p50": 0.85, "p95": 1.435}
    )
    gaps = at.dataframe[-1].value
    assert gaps["question"].tolist() == ["where is the VPN guide", "Who approves travel?"]
    assert gaps["times asked"].tolist() == [2, 1]

    at.get("button_group")[0].set_value(7).run()  # the last week only
    assert metric(at, "Questions") == "5"
    at.toggle(key="metrics-by-model").set_value(True).run()
    questions = next(c for c in charts(at) if "questions" in c.columns)
    assert set(questions["model"]) == {"big", "small"}
    assert not at.exception


def test_an_empty_log_shows_how_it_fills(tmp_path: Path) -> None:
    at = app(tmp_path)
    assert not at.exception
    assert any("No answers in this period yet" in i.value for i in at.info)
    assert not at.get("vega_lite_chart")


def test_members_get_no_metrics_page_and_the_service_refuses_them(tmp_path: Path) -> None:
    fill(tmp_path)
    access = fake_resources(str(tmp_path)).service.access
    access.add_user(LOCAL, "mia", "member", "a long enough password")
    at = app(tmp_path, user="mia")
    assert not at.exception
    assert at.session_state["page titles"] == ["Chat", "Documents", "Batch", "Access"]
    assert all(t.value != "Metrics" for t in at.title)  # the first page instead
    assert not at.get("vega_lite_chart")
    at = app(tmp_path, user="mia", page="metrics page itself")
    errors = [e.value.replace("\\", "") for e in at.error]  # shown escaped
    (error,) = errors
    assert re.fullmatch(
        r"not allowed to read the usage report: only admins may \(error id [0-9a-f]{8}\)", error
    )
    assert not at.get("vega_lite_chart") and not at.metric


@pytest.fixture(autouse=True)
def _closed(tmp_path: Path):
    yield
    fake_resources(str(tmp_path)).service.close()
