"""The model router: tiers, balancing over replicas, the circuit breaker, health checks.

The first tests drive ``Router`` and ``EndpointState`` with a fake clock; the rest ask
questions through the real chat engine against stub OpenAI-compatible servers on
127.0.0.1 (``tests/faultserver.py``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from rag.chain import Answer
from rag.context import Turn
from rag.errors import ConfigError, EndpointFailure, EndpointFault, ProviderError
from rag.llm.client import Endpoint, endpoints
from rag.llm.router import ANSWER, FALLBACK, SMALL, EndpointState, RoutePolicy, Router, Tiering
from rag.observe.metrics import Metrics
from rag.observe.prices import parse_prices
from rag.service.components import ConfiguredModels, build_engine_over, build_service
from rag.service.core import _record_answer
from rag.settings import Settings
from tests.fakes import RecordingRetriever, doc
from tests.faultserver import Fault, FaultServer, ok, status

QUESTION = "When do the nightly backups of the database run?"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def endpoint(name: str, tier: str = ANSWER, clock: Clock | None = None) -> Endpoint:
    state = EndpointState(clock) if clock is not None else EndpointState()
    return Endpoint(f"http://{name}/v1", "m", name=name, tier=tier, state=state)


def names(plan: list[Endpoint]) -> list[str]:
    return [e.label for e in plan]


# -- balancing ------------------------------------------------------------------------


def test_latency_balance_prefers_the_fast_replica_until_it_is_busy() -> None:
    fast, slow = endpoint("fast"), endpoint("slow")
    fast.state.succeeded(0.1)
    slow.state.succeeded(0.5)
    router = Router()
    assert [names(router.plan([slow, fast]))[0] for _ in range(4)] == ["fast"] * 4
    for _ in range(5):  # five requests in flight at the fast one: 0.6 s against 0.5 s
        fast.state.start()
    assert names(router.plan([slow, fast]))[0] == "slow"


def test_a_slow_answer_counts_at_once_and_fast_ones_bring_the_estimate_back() -> None:
    state = EndpointState()
    state.succeeded(0.1)
    state.succeeded(2.0)
    assert state.latency_s == 2.0  # the peak is taken whole
    for _ in range(10):
        state.succeeded(0.1)
    assert state.latency_s is not None and state.latency_s < 0.2


def test_unmeasured_replicas_are_tried_in_turn() -> None:
    replicas = [endpoint(n) for n in "abc"]
    router = Router()
    firsts = [router.plan(replicas)[0].label for _ in range(6)]
    assert Counter(firsts) == {"a": 2, "b": 2, "c": 2}


def test_round_robin_ignores_latency() -> None:
    fast, slow = endpoint("fast"), endpoint("slow")
    fast.state.succeeded(0.1)
    slow.state.succeeded(5.0)
    router = Router(RoutePolicy(balance="round_robin"))
    firsts = [router.plan([fast, slow])[0].label for _ in range(4)]
    assert firsts == ["fast", "slow", "fast", "slow"]


# -- tiers ----------------------------------------------------------------------------


def test_each_group_of_replicas_takes_its_own_turns() -> None:
    small = [endpoint("s1", SMALL), endpoint("s2", SMALL)]
    big = [endpoint("b1"), endpoint("b2")]
    router = Router(RoutePolicy(balance="round_robin"))
    firsts = []
    for _ in range(4):  # a follow-up: condensed by the small tier, answered by the big one
        firsts.append(router.plan(small + big, SMALL)[0].label)
        firsts.append(router.plan(small + big, ANSWER)[0].label)
    assert firsts == ["s1", "b1", "s2", "b2", "s1", "b1", "s2", "b2"]


def test_plans_by_tier() -> None:
    big, small, spare = endpoint("big"), endpoint("small", SMALL), endpoint("spare", FALLBACK)
    router = Router()
    assert names(router.plan([big, small, spare], ANSWER)) == ["big", "spare"]
    # The condense step may fall back to the answer model, then to the fallback.
    assert names(router.plan([big, small, spare], SMALL)) == ["small", "big", "spare"]
    # No small tier: the answer tier does its work.
    assert names(router.plan([big, spare], SMALL)) == ["big", "spare"]


def test_tiering_rules() -> None:
    assert Tiering().tier_for("hi") == ANSWER
    by_words = Tiering(max_words=4)
    assert by_words.tier_for("What is RAID?") == SMALL
    assert by_words.tier_for("How do I restore last week's backup of the wiki?") == ANSWER
    by_pattern = Tiering(pattern=r"^(what|who) (is|are)\b")
    assert by_pattern.tier_for("What is the retention period of the nightly backups?") == SMALL
    assert by_pattern.tier_for("Why is the retention period ninety days?") == ANSWER
    with pytest.raises(ValueError, match="max_words"):
        Tiering(max_words=-1)


def test_endpoints_carry_their_tiers() -> None:
    settings = Settings(
        llm_base_url="http://a/v1",
        llm_replicas="http://b/v1, http://c/v1",
        llm_model="big",
        llm_small_model="tiny",
        llm_fallback_base_url="http://z/v1",
    )
    found = endpoints(settings)
    assert [(e.base_url, e.model, e.tier) for e in found] == [
        ("http://a/v1", "big", ANSWER),
        ("http://b/v1", "big", ANSWER),
        ("http://c/v1", "big", ANSWER),
        # Without RAG_LLM_SMALL_BASE_URL the answer endpoints serve the small model too.
        ("http://a/v1", "tiny", SMALL),
        ("http://b/v1", "tiny", SMALL),
        ("http://c/v1", "tiny", SMALL),
        ("http://z/v1", "big", FALLBACK),
    ]
    assert len({id(e.state) for e in found}) == len(found)  # each its own circuit


@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"llm_replicas": "http://b/v1"}, "RAG_LLM_REPLICAS"),
        ({"llm_small_model": "tiny"}, "RAG_LLM_SMALL_BASE_URL"),
        ({"llm_base_url": "http://a/v1", "route_simple_max_words": 5}, "RAG_LLM_SMALL_MODEL"),
        (
            {"llm_base_url": "http://a/v1", "llm_small_model": "t", "route_simple_pattern": "("},
            "route_simple_pattern",
        ),
        ({"llm_balance": "random"}, "llm_balance"),
    ],
)
def test_bad_router_settings_are_named(update: dict[str, object], named: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=named):
        Settings(**update)  # type: ignore[arg-type]


# -- circuit breaker ------------------------------------------------------------------


def test_breaker_takes_a_failing_endpoint_out_and_a_health_check_brings_it_back() -> None:
    clock = Clock()
    bad, good = endpoint("bad", clock=clock), endpoint("good", clock=clock)
    checks: list[str] = []
    healthy = {"bad": False}

    def check(e: Endpoint) -> bool:
        checks.append(e.label)
        return healthy[e.label]

    policy = RoutePolicy(breaker_failures=2, cooldown_s=10)
    router = Router(policy, health_check=check, background=False)
    bad.state.failed(policy, "bad")
    assert "bad" in names(router.plan([bad, good]))  # one failure: still in
    bad.state.failed(policy, "bad")
    assert names(router.plan([bad, good])) == ["good"]  # open
    clock.now += 9
    assert names(router.plan([bad, good])) == ["good"] and checks == []
    clock.now += 1  # cool-down over: probed, still failing, out for twice as long
    assert names(router.plan([bad, good])) == ["good"] and checks == ["bad"]
    assert bad.state.cooldown_s == 20
    clock.now += 20
    healthy["bad"] = True
    assert set(names(router.plan([bad, good]))) == {"bad", "good"}  # half-open
    bad.state.start()  # the trial request
    assert names(router.plan([bad, good])) == ["good"]  # one trial at a time
    bad.state.end()
    bad.state.succeeded(0.2)
    assert bad.state.circuit == "closed" and bad.state.failures == 0
    assert set(names(router.plan([bad, good]))) == {"bad", "good"}


def test_a_failed_trial_opens_the_circuit_again() -> None:
    clock = Clock()
    flaky = endpoint("flaky", clock=clock)
    policy = RoutePolicy(breaker_failures=1, cooldown_s=5)
    router = Router(policy, health_check=lambda e: True, background=False)
    flaky.state.failed(policy, "flaky")
    clock.now += 5
    router.plan([flaky, endpoint("other")])
    assert flaky.state.circuit == "half_open"
    flaky.state.start()
    flaky.state.end()
    flaky.state.failed(policy, "flaky")
    assert flaky.state.circuit == "open" and flaky.state.cooldown_s == 10


@pytest.mark.parametrize(
    ("failure", "counted"),
    [
        (EndpointFailure("e", EndpointFault.UNREACHABLE, "refused"), True),
        (EndpointFailure("e", EndpointFault.SERVER_ERROR, "500", 500), True),
        (EndpointFailure("e", EndpointFault.CLIENT_ERROR, "bad key", 401), True),
        (EndpointFailure("e", EndpointFault.MALFORMED, "not SSE"), True),
        # A request it rightly refused, an empty completion, a wait in our own line: no.
        (EndpointFailure("e", EndpointFault.CLIENT_ERROR, "context too long", 400), False),
        (EndpointFailure("e", EndpointFault.EMPTY, "no text"), False),
        (EndpointFailure("e", EndpointFault.TIMEOUT, "waited in line", local=True), False),
    ],
)
def test_the_breaker_counts_only_the_endpoints_own_faults(
    failure: EndpointFailure, counted: bool
) -> None:
    assert failure.endpoint_at_fault is counted


def test_requests_it_refuses_do_not_take_an_endpoint_out(servers: list[FaultServer]) -> None:
    server, _, _ = servers
    server.default = status(400, message="this request is too long for the model")
    settings = Settings(
        llm_base_url=server.base_url, llm_breaker_failures=2, llm_max_retries=0, llm_timeout_s=5
    )
    found = endpoints(settings)
    engine = build_engine_over(settings, retriever(), found)
    for _ in range(3):
        with pytest.raises(ProviderError):
            ask(engine)
    assert found[0].state.circuit == "closed" and server.requests == 3


def test_when_every_circuit_is_open_they_are_all_tried() -> None:
    clock = Clock()
    a, b = endpoint("a", clock=clock), endpoint("b", clock=clock)
    policy = RoutePolicy(breaker_failures=1, cooldown_s=10)
    router = Router(policy, health_check=lambda e: False, background=False)
    b.state.failed(policy, "b")
    clock.now += 1
    a.state.failed(policy, "a")
    assert names(router.plan([a, b])) == ["b", "a"]  # the soonest due first


# -- end to end against stub servers on 127.0.0.1 ---------------------------------------


def retriever() -> RecordingRetriever:
    docs = [doc("Backups run nightly at two.", n=3)]
    return RecordingRetriever(by_keyword={"backups": docs, "restore": docs, "raid": docs})


def ask(engine, question: str = QUESTION, history: tuple[Turn, ...] = ()) -> Answer:  # type: ignore[no-untyped-def]
    stream = engine.ask(question, history, within=None)
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


@pytest.fixture
def servers() -> Iterator[list[FaultServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(FaultServer(default=ok(model=None))) for _ in range(3)]


def models(server: FaultServer) -> list[str]:
    return [body["model"] for body in server.bodies]


def test_tiering_sends_condense_and_simple_questions_to_the_small_model(
    servers: list[FaultServer],
) -> None:
    big, small, _ = servers
    settings = Settings(
        llm_base_url=big.base_url,
        llm_model="big-model",
        llm_small_model="small-model",
        llm_small_base_url=small.base_url,
        route_simple_max_words=4,
        llm_timeout_s=5,
    )
    engine = build_engine_over(settings, retriever(), endpoints(settings))
    simple = ask(engine, "When are backups?")
    assert simple.model == "small-model" and models(small) == ["small-model"]
    assert ask(engine).model == "big-model" and models(big) == ["big-model"]
    history = (Turn("user", "How do backups work?"), Turn("assistant", "Nightly [1]."))
    followup = ask(engine, "And how do I restore one of them from last week?", history)
    # The follow-up was condensed by the small model and answered by the big one.
    assert models(small) == ["small-model"] * 2 and models(big) == ["big-model"] * 2
    assert followup.model == "big-model"
    short = ask(engine, "And restore?", history)  # a short follow-up is not a simple question
    assert short.model == "big-model"
    # Each model's tokens are its own (the stub reports 50 in, 7 out per request).
    assert followup.tokens["by_model"] == {
        "small-model": {"prompt": 50, "completion": 7},
        "big-model": {"prompt": 50, "completion": 7},
    }
    metrics = Metrics(prices=parse_prices('{"small-model": [1, 1], "big-model": [10, 10]}'))
    _record_answer(metrics, followup)
    scrape = metrics.scrape().decode()
    assert 'ragchat_tokens_total{direction="prompt",model="small-model"} 50.0' in scrape
    assert 'ragchat_cost_dollars_total{model="big-model"} 0.00057' in scrape


def test_load_spreads_over_replicas_and_avoids_a_slow_one(servers: list[FaultServer]) -> None:
    fast1, fast2, slow = servers
    slow.default = Fault("slow_stream", interval=0.25, tokens=2, model=None)

    def run(balance: str) -> list[int]:
        for server in servers:
            server.requests = 0
        settings = Settings(
            llm_base_url=fast1.base_url,
            llm_replicas=[fast2.base_url, slow.base_url],
            llm_balance=balance,
            llm_timeout_s=5,
        )
        engine = build_engine_over(settings, retriever(), endpoints(settings))
        for _ in range(12):
            ask(engine)
        return [s.requests for s in servers]

    assert run("round_robin") == [4, 4, 4]
    fast_a, fast_b, slow_count = run("latency")
    assert slow_count <= 2 and fast_a >= 2 and fast_b >= 2  # loopback timings jitter


def test_a_failing_replica_is_taken_out_and_brought_back(servers: list[FaultServer]) -> None:
    good, bad, _ = servers
    bad.default = status(500)
    settings = Settings(
        llm_base_url=good.base_url,
        llm_replicas=[bad.base_url],
        llm_breaker_failures=2,
        llm_breaker_cooldown_s=0.3,
        llm_max_retries=0,
        llm_timeout_s=5,
    )
    found = endpoints(settings)
    engine = build_engine_over(settings, retriever(), found)
    for _ in range(8):  # every question is answered: by the good replica when the bad fails
        assert ask(engine).text
    assert bad.requests == 2 and found[1].state.circuit == "open"
    bad.default = ok(model=None)  # it recovers
    time.sleep(0.35)
    served = bad.requests
    for _ in range(10):
        ask(engine)
        if bad.requests > served:
            break
        time.sleep(0.05)  # the health check runs in the background
    assert bad.requests > served and found[1].state.circuit == "closed"


def test_every_endpoint_failing_is_one_error_naming_each(servers: list[FaultServer]) -> None:
    a, b, _ = servers
    a.default = b.default = status(503)
    settings = Settings(
        llm_base_url=a.base_url, llm_replicas=[b.base_url], llm_max_retries=0, llm_timeout_s=5
    )
    engine = build_engine_over(settings, retriever(), endpoints(settings))
    with pytest.raises(ProviderError) as caught:
        ask(engine)
    assert a.base_url in str(caught.value) and b.base_url in str(caught.value)


def test_endpoint_health_is_a_gauge(servers: list[FaultServer], tmp_path: Path) -> None:
    good, bad, _ = servers
    bad.default = status(500)
    settings = Settings(
        data_dir=tmp_path,
        llm_base_url=good.base_url,
        llm_replicas=[bad.base_url],
        llm_breaker_failures=1,
        llm_breaker_cooldown_s=60,
        llm_max_retries=0,
        llm_timeout_s=5,
    )
    models_ = ConfiguredModels(settings)
    service = build_service(settings, models=models_)
    assert b"ragchat_model_endpoint_up{" not in service.metrics.scrape()  # none made yet
    engine = build_engine_over(settings, retriever(), models_.endpoints())
    for _ in range(3):
        ask(engine)
    scrape = service.metrics.scrape().decode()
    assert f'ragchat_model_endpoint_up{{endpoint="{good.base_url} (answer)"}} 1.0' in scrape
    assert f'ragchat_model_endpoint_up{{endpoint="{bad.base_url} (answer)"}} 0.0' in scrape
