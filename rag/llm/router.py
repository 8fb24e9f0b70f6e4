"""Which endpoint a request goes to: tiers, load balancing, circuit breaking.

The endpoints of an installation each belong to a tier (``Endpoint.tier``):

- ``answer``: the model that writes answers (``RAG_LLM_BASE_URL``, the bundled server),
  and its replicas (``RAG_LLM_REPLICAS``: more servers of the same model);
- ``small``: a smaller, faster model (``RAG_LLM_SMALL_MODEL``) that condenses follow-up
  questions and answers the questions ``Tiering`` calls simple;
- ``fallback``: tried, in order, once every endpoint of the tier asked for has failed
  (``RAG_LLM_FALLBACK_BASE_URL``).

``Router.plan`` orders the endpoints one request may try: the tier's own endpoints, best
first, then (for the small tier) the answer tier's, then the fallbacks. ``ResilientChatModel``
(``rag.llm.client``) walks the plan under the question's deadline and tells each
endpoint's ``EndpointState`` how each request went.

Balancing over replicas (``RAG_LLM_BALANCE``): ``latency`` ranks a replica by its recent
time to first token (an exponentially weighted average that jumps up at once on a slow
answer and decays back on fast ones) times one more than its requests in flight, the
"peak EWMA" cost of Finagle and Linkerd; a replica not yet measured counts as the average.
Replicas within 25% (and 10 ms) of the best cost take turns, so equal
replicas share the load even when requests come one at a time. ``round_robin`` takes them
all in turn. Time to first token is the measure because it is what
a slow replica makes users wait for, whatever the length of the answer.

Circuit breaker (``RAG_LLM_BREAKER_FAILURES``, ``RAG_LLM_BREAKER_COOLDOWN_S``): after that
many failures in a row an endpoint's circuit opens and no request is sent to it. When the
cool-down has passed, a health check (``GET /models``, which costs no tokens, in the
background) probes it; if it answers, the next request may try it (half-open) and closes
the circuit by succeeding; a failed probe or trial opens it again for twice as long (at
most ``MAX_COOLDOWN_S``). While every endpoint of a plan is open, the plan keeps them all
(soonest probe first): with nothing else to try, a request that may succeed beats an error
that surely comes.

We write this rather than use a gateway library: LiteLLM's router and similar tools are
servers or SDKs of their own, with their own retries and timeouts, and would put a second
policy under the one deadline ``ResilientChatModel`` keeps per question.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import httpx

if TYPE_CHECKING:
    from rag.llm.client import Endpoint
    from rag.settings import Settings

logger = logging.getLogger(__name__)

ANSWER = "answer"
SMALL = "small"
FALLBACK = "fallback"
TIERS = (ANSWER, SMALL, FALLBACK)

EWMA_WEIGHT = 0.3  # weight of a new (faster) sample; a slower one is taken whole
# Replicas whose cost is within this of the best one's take turns (so equal replicas share
# the load even when requests come one at a time), the others follow by cost.
NEAR_RATIO = 1.25
NEAR_SLACK_S = 0.01
MAX_COOLDOWN_S = 300.0
PROBE_TIMEOUT_S = 3.0

Balance = Literal["latency", "round_robin"]


@dataclass(frozen=True)
class RoutePolicy:
    """How requests are spread and when an endpoint is taken out."""

    balance: Balance = "latency"
    breaker_failures: int = 3
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.balance not in ("latency", "round_robin"):
            raise ValueError(f"balance must be latency or round_robin, not {self.balance!r}")
        if self.breaker_failures < 1:
            raise ValueError("breaker_failures must be at least 1")
        if self.cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutePolicy:
        """The policy the settings describe."""
        return cls(
            balance=settings.llm_balance,
            breaker_failures=settings.llm_breaker_failures,
            cooldown_s=settings.llm_breaker_cooldown_s,
        )


CircuitState = Literal["closed", "open", "probing", "half_open"]


class EndpointState:
    """What this process knows of one endpoint: requests in flight, speed, its circuit.

    Shared by every model client over the same ``Endpoint`` object (a service's engines
    all hold the same endpoints), and safe to use from several threads.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.outstanding = 0
        self.latency_s: float | None = None  # peak-EWMA time to first token
        self.failures = 0  # in a row
        self.circuit: CircuitState = "closed"
        self.open_until = 0.0
        self.cooldown_s = 0.0
        self.requests = 0
        self._trial = False  # a half-open trial request is in flight

    def __repr__(self) -> str:
        return (
            f"EndpointState({self.circuit}, outstanding={self.outstanding}, "
            f"latency_s={self.latency_s}, failures={self.failures})"
        )

    @property
    def up(self) -> bool:
        """Whether requests may go to it (its circuit is not open)."""
        return self.circuit in ("closed", "half_open")

    def start(self) -> None:
        """A request is sent to it."""
        with self._lock:
            self.outstanding += 1
            self.requests += 1
            if self.circuit == "half_open":
                self._trial = True

    def end(self) -> None:
        """A request to it is over (however it ended)."""
        with self._lock:
            self.outstanding = max(0, self.outstanding - 1)
            self._trial = False

    def succeeded(self, first_token_s: float | None) -> None:
        """A request was answered; ``first_token_s`` is how long its first token took."""
        with self._lock:
            if first_token_s is not None and first_token_s >= 0:
                if self.latency_s is None or first_token_s > self.latency_s:
                    self.latency_s = first_token_s
                else:
                    self.latency_s += EWMA_WEIGHT * (first_token_s - self.latency_s)
            self.failures = 0
            if self.circuit != "closed":
                logger.info("model endpoint circuit closed again")
            self.circuit = "closed"
            self.cooldown_s = 0.0

    def failed(self, policy: RoutePolicy, label: str) -> None:
        """A request failed at this endpoint (after its own retries)."""
        with self._lock:
            self.failures += 1
            trial = self.circuit == "half_open"
            if trial or (self.circuit == "closed" and self.failures >= policy.breaker_failures):
                self._open(policy, label, f"{self.failures} failures in a row")

    def _open(self, policy: RoutePolicy, label: str, why: str) -> None:
        """Open the circuit (under the lock): twice as long as last time, within bounds."""
        self.cooldown_s = min(
            MAX_COOLDOWN_S,
            policy.cooldown_s if self.cooldown_s == 0 else self.cooldown_s * 2,
        )
        self.circuit = "open"
        self.open_until = self._clock() + self.cooldown_s
        logger.warning("model endpoint %s taken out for %.0f s (%s)", label, self.cooldown_s, why)

    def due_probe(self) -> bool:
        """Whether its circuit is open and its cool-down over; if so it is now probing."""
        with self._lock:
            if self.circuit == "open" and self._clock() >= self.open_until:
                self.circuit = "probing"
                return True
            return False

    def probed(self, ok: bool, policy: RoutePolicy, label: str) -> None:
        """The result of a health check: half-open (one trial request) or open again."""
        with self._lock:
            if self.circuit != "probing":
                return
            if ok:
                self.circuit = "half_open"
                logger.info("model endpoint %s answers its health check; trying it again", label)
            else:
                self._open(policy, label, "its health check failed")

    def admits(self) -> bool:
        """Whether a request may be sent now (closed, or half-open with no trial yet)."""
        with self._lock:
            return self.circuit == "closed" or (self.circuit == "half_open" and not self._trial)


def probe(endpoint: Endpoint) -> bool:
    """A health check: does the endpoint answer ``GET /models`` (any non-5xx status)?

    A 404 counts as alive (some gateways serve chat completions only); a server ragchat
    runs itself is alive while its process is.
    """
    if endpoint.server is not None:
        return endpoint.server.running()
    headers = {}
    if endpoint.api_key is not None:
        headers["Authorization"] = f"Bearer {endpoint.api_key.get_secret_value()}"
    try:
        response = httpx.get(
            endpoint.base_url.rstrip("/") + "/models", headers=headers, timeout=PROBE_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        logger.info("health check of %s failed: %s", endpoint.label, type(exc).__name__)
        return False
    return response.status_code < 500


class Router:
    """Orders the endpoints one request may try (see the module docstring)."""

    def __init__(
        self,
        policy: RoutePolicy | None = None,
        *,
        health_check: Callable[[Endpoint], bool] = probe,
        background: bool = True,
    ) -> None:
        self.policy = policy or RoutePolicy()
        self._health_check = health_check
        self._background = background  # False: health checks run inline (tests)
        self._turns: dict[tuple[str, ...], int] = {}  # per group of replicas
        self._lock = threading.Lock()

    def plan(self, endpoints: Sequence[Endpoint], tier: str = ANSWER) -> list[Endpoint]:
        """The endpoints to try for a request of ``tier``, in order.

        A tier with no endpoints of its own uses the answer tier's.
        """
        own = [e for e in endpoints if e.tier == tier]
        answer = [e for e in endpoints if e.tier == ANSWER]
        groups = [own or answer]
        if tier == SMALL and own:
            groups.append(answer)  # a condense step may fall back to the answer model
        groups.append([e for e in endpoints if e.tier == FALLBACK])
        self._probe_due(endpoints)
        # The tier's own group takes its turn; the answer tier behind a small one is ranked
        # without taking one (its turn belongs to the requests made for it).
        ordered = [
            self._rank(g, advance=i == 0) if i < len(groups) - 1 else g
            for i, g in enumerate(groups)
        ]
        flat = [e for group in ordered for e in group]
        usable = [e for e in flat if e.state.admits()]
        if usable:
            return usable
        # Every circuit is open: try them all, the soonest due for a probe first.
        return sorted(flat, key=lambda e: e.state.open_until)

    def _rank(self, group: list[Endpoint], *, advance: bool = True) -> list[Endpoint]:
        if len(group) < 2:
            return group
        key = tuple(e.label for e in group)
        with self._lock:
            turn = self._turns.get(key, 0)
            if advance:
                self._turns[key] = turn + 1
        rotated = group[turn % len(group) :] + group[: turn % len(group)]
        if self.policy.balance == "round_robin":
            return rotated
        known = [e.state.latency_s for e in group if e.state.latency_s is not None]
        typical = sum(known) / len(known) if known else 1.0

        def cost(endpoint: Endpoint) -> float:
            state = endpoint.state
            latency = state.latency_s if state.latency_s is not None else typical
            return latency * (state.outstanding + 1)

        costs = {id(e): cost(e) for e in rotated}
        near = min(costs.values()) * NEAR_RATIO + NEAR_SLACK_S
        first = [e for e in rotated if costs[id(e)] <= near]  # about as good: in turn
        return first + sorted(
            (e for e in rotated if costs[id(e)] > near), key=lambda e: costs[id(e)]
        )

    def _probe_due(self, endpoints: Sequence[Endpoint]) -> None:
        for endpoint in endpoints:
            if endpoint.state.due_probe():
                if self._background:
                    threading.Thread(
                        target=self._check, args=(endpoint,), name="llm-health", daemon=True
                    ).start()
                else:
                    self._check(endpoint)

    def _check(self, endpoint: Endpoint) -> None:
        try:
            ok = self._health_check(endpoint)
        except Exception:  # a health check that breaks counts as failed, and is said
            logger.warning("health check of %s broke", endpoint.label, exc_info=True)
            ok = False
        endpoint.state.probed(ok, self.policy, endpoint.label)


@dataclass(frozen=True)
class Tiering:
    """Which tier answers a question: the small one for simple questions, by rule.

    A question is simple when it has at most ``max_words`` words (0: no such rule) or
    matches ``pattern`` (a regular expression, searched case-insensitively; None: no such
    rule). Follow-up questions are condensed by the small tier whatever these rules say.
    """

    max_words: int = 0
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.max_words < 0:
            raise ValueError("max_words must not be negative")
        if self.pattern is not None:
            re.compile(self.pattern)

    @classmethod
    def from_settings(cls, settings: Settings) -> Tiering:
        """The rules the settings describe."""
        return cls(settings.route_simple_max_words, settings.route_simple_pattern or None)

    def tier_for(self, question: str) -> str:
        """``small`` for a simple question, else ``answer``."""
        if self.max_words and len(question.split()) <= self.max_words:
            return SMALL
        if self.pattern is not None and re.search(self.pattern, question, re.IGNORECASE):
            return SMALL
        return ANSWER


__all__ = [
    "ANSWER",
    "FALLBACK",
    "SMALL",
    "TIERS",
    "EndpointState",
    "RoutePolicy",
    "Router",
    "Tiering",
    "probe",
]
