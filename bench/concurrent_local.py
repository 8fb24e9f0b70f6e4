"""The bundled model on this machine: cold start, warm-up, and two people asking at once.

Starts the bundled SmolLM2 server as the app does (``start_local_server``) and asks through
the real chat engine with a fixed retriever (five passages of realistic length), so what is
measured is the model's own time. Prints:

- server start and warm-up seconds, and a first question asked without any warm-up
  (a fresh server) versus after it;
- two questions asked at the same moment: each one's time to first token and total (the
  second waits in ragchat's queue: the bundled server answers one at a time).

    python bench/concurrent_local.py
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from rag.llm.client import ModelStatus
from rag.service.components import build_engine_over, local_endpoints, start_local_server
from rag.settings import Settings

PASSAGE = (
    "The max_connections setting determines the maximum number of concurrent connections "
    "to the database server. The default is typically 100 connections, but might be less "
    "if your kernel settings will not support it. This parameter can only be set at server "
    "start. Each connection uses shared memory for its lock table and process slots. "
)
QUESTION = "What is the default value of max_connections?"


class FixedRetriever(BaseRetriever):
    """Five passages, whatever the question."""

    def _get_relevant_documents(self, query: str, *, run_manager: object) -> list[Document]:
        return [
            Document(
                page_content=PASSAGE * 2,
                metadata={"source": "/docs/pg.html", "page": i, "chunk_id": f"c{i}"},
                id=f"c{i}",
            )
            for i in range(1, 6)
        ]


def ask(engine, label: str, results: dict[str, tuple[float, float]], statuses: list) -> None:
    started = time.monotonic()
    stream = engine.ask(QUESTION, within=None)
    stream.on_status = lambda s, label=label: statuses.append((label, s.message))
    first = None
    for _ in stream:
        first = first or time.monotonic()
    end = time.monotonic()
    results[label] = ((first or end) - started, end - started)


def main() -> None:
    settings = Settings(llm_timeout_s=300, llm_first_token_timeout_s=300, llm_temperature=0.0)
    for warm in (False, True):
        started = time.monotonic()
        server = start_local_server(settings, warm=False)
        up = time.monotonic() - started
        try:
            warm_s = server.warm() if warm else 0.0
            engine = build_engine_over(
                settings, FixedRetriever(), local_endpoints(settings, server)
            )
            results: dict[str, tuple[float, float]] = {}
            ask(engine, "first", results, [])
            first, total = results["first"]
            what = f"after a {warm_s:.1f} s warm-up" if warm else "cold (no warm-up)"
            print(
                f"server up in {up:.1f} s; first question {what}: "
                f"first token {first:.1f} s, answer {total:.1f} s"
            )
            if warm:
                statuses: list[tuple[str, str]] = []
                threads = [
                    threading.Thread(target=ask, args=(engine, name, results, statuses))
                    for name in ("A", "B")
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                for name in ("A", "B"):
                    first, total = results[name]
                    print(f"concurrent {name}: first token {first:.1f} s, answer {total:.1f} s")
                queued = [f"{n}: {m}" for n, m in statuses if "waiting" in m]
                print("queue notices:", "; ".join(queued) or "none")
        finally:
            server.stop()


if __name__ == "__main__":
    _ = ModelStatus
    main()
