"""Answer latency over three replicas of which one is slow: latency-aware vs round robin.

Three stub OpenAI-compatible servers on 127.0.0.1 (``tests/faultserver.py``) stream
answers token by token: two at ``--fast`` seconds a token, one at ``--slow``. Several
client threads ask questions at once through ``ResilientChatModel`` with the router of
each balance mode, and the script prints p50/p95/max answer latency and each replica's
share of the requests.

    python -m bench.router_balance [--questions 120] [--clients 6]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from langchain_core.messages import HumanMessage

from rag.llm.client import ResilientChatModel, endpoints
from rag.llm.router import RoutePolicy, Router
from rag.settings import Settings
from tests.faultserver import Fault, FaultServer


def run(balance: str, servers: list[FaultServer], questions: int, clients: int) -> None:
    for server in servers:
        server.requests = 0
    settings = Settings(
        llm_base_url=servers[0].base_url,
        llm_replicas=[s.base_url for s in servers[1:]],
        llm_balance=balance,
        llm_timeout_s=60,
        llm_max_concurrent=None,
    )
    model = ResilientChatModel(
        endpoints=endpoints(settings),
        timeout_s=60,
        router=Router(RoutePolicy.from_settings(settings)),
    )
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        model.invoke([HumanMessage(f"question {i}")])
        with lock:
            latencies.append(time.perf_counter() - started)

    wall = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(questions)))
    wall = time.perf_counter() - wall
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    shares = " / ".join(str(s.requests) for s in servers)
    print(
        f"{balance:<12} p50 {statistics.median(latencies):.2f} s  p95 {p95:.2f} s  "
        f"max {latencies[-1]:.2f} s  wall {wall:.1f} s  requests fast/fast/slow {shares}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=120)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    parser.add_argument("--fast", type=float, default=0.01, help="seconds per token, fast")
    parser.add_argument("--slow", type=float, default=0.08, help="seconds per token, slow")
    args = parser.parse_args()
    fast = Fault("slow_stream", interval=args.fast, tokens=args.tokens)
    slow = Fault("slow_stream", interval=args.slow, tokens=args.tokens)
    with (
        FaultServer(default=fast) as a,
        FaultServer(default=fast) as b,
        FaultServer(default=slow) as c,
    ):
        print(
            f"{args.questions} questions, {args.clients} at once, {args.tokens} tokens "
            f"each; replicas at {args.fast}/{args.fast}/{args.slow} s a token"
        )
        for balance in ("round_robin", "latency"):
            run(balance, [a, b, c], args.questions, args.clients)


if __name__ == "__main__":
    main()
