"""Store stress: reader threads sharing one FaissStore while another process publishes.

One process runs reader threads on a single shared ``FaissStore`` (as the web app does
through ``st.cache_resource``); a writer *process* publishes generations back to back.
Every generation holds exactly ``WINDOW`` consecutive documents: each publish adds the next
document and deletes the oldest. Each query is checked for consistency:

- a hit's text names its document and position, and must match its chunk id;
- its score must equal the cosine between the query and the embedding of its text
  (recomputed here: the embeddings are deterministic), so a vector from another chunk or
  generation shows;
- all hits of one query come from one generation: with every chunk returned, they must be
  exactly ``WINDOW`` consecutive documents, all of their chunks.

Readers alternate hybrid retrieval (``HybridRetriever``), one pinned view doing every call
itself, and single store calls. Prints queries, publishes, errors and latencies; the exit
code is 1 when any query failed or the writer did, and a crash shows as the exit code.

    python bench/store_stress.py [--readers 4] [--seconds 60] [--json]

``--store-file``/``--retrieval-file`` load another ``rag/store.py``/``rag/retrieval.py``
(e.g. the previous commit's) to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes import CountingEmbeddings

WINDOW = 3  # documents in every generation
CHUNKS = 5  # chunks per document
DIM = 32
WORDS = "pump valve seal bearing motor gasket filter hose".split()


def chunk_text(doc: int, seq: int) -> str:
    return f"doc{doc:06d} part {seq} pump valve " + " ".join(WORDS[(doc + seq) % 8 :])


def load(path: str | None, default: str) -> ModuleType:
    if path is None:
        return importlib.import_module(default)
    name = f"stress_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_store(mod: ModuleType, index_dir: Path) -> Any:
    return mod.FaissStore(
        index_dir, CountingEmbeddings(size=DIM), model_id="stress", dimension=DIM,
        lock_timeout_s=60,
    )  # fmt: skip


def publish(mod: ModuleType, store: Any, doc: int) -> None:
    texts = [chunk_text(doc, s) for s in range(CHUNKS)]
    vectors = np.asarray(store.embeddings.embed_documents(texts), dtype="float32")
    with store.writer() as w:
        w.add_document(
            f"doc{doc:06d}",
            kind="text",
            pages=None,
            source=f"/doc{doc:06d}.txt",
            chunks=[mod.NewChunk(t) for t in texts],
            vectors=vectors,
        )
        if doc >= WINDOW:
            w.delete_document(f"doc{doc - WINDOW:06d}")


def seed(mod: ModuleType, index_dir: Path) -> None:
    store = make_store(mod, index_dir)
    for doc in range(WINDOW):
        publish(mod, store, doc)


def write_loop(args: argparse.Namespace) -> int:
    """The writer process: publish back to back until the deadline; prints its count."""
    mod = load(args.store_file, "rag.store.faiss")
    store = make_store(mod, Path(args.index))
    doc, published = WINDOW, 0
    while time.time() < args.until:
        publish(mod, store, doc)
        doc += 1
        published += 1
        if args.interval:
            time.sleep(args.interval)
    print(json.dumps({"publishes": published}))
    return 0


class Checker:
    """Consistency checks shared by every kind of query."""

    def __init__(self) -> None:
        self.emb = CountingEmbeddings(size=DIM)
        self._cache: dict[str, np.ndarray] = {}

    def unit(self, text: str) -> np.ndarray:
        vec = self._cache.get(text)
        if vec is None:
            vec = np.asarray(self.emb.embed_query(text), dtype="float64")
            vec /= np.linalg.norm(vec)
            self._cache[text] = vec
        return vec

    def hit(self, text: str, chunk_id: str, doc_id: str, query: str, cosine: float) -> int:
        """Check one hit; returns its document number."""
        head = text.split()
        doc, seq = int(head[0][3:]), int(head[2])
        if chunk_id != f"doc{doc:06d}-{seq:05d}" or doc_id != f"doc{doc:06d}":
            raise AssertionError(f"text {text[:20]!r} under chunk {chunk_id} of {doc_id}")
        if text != chunk_text(doc, seq):
            raise AssertionError(f"chunk {chunk_id} holds another text: {text!r}")
        expected = float(self.unit(query) @ self.unit(text))
        if abs(expected - cosine) > 1e-4:
            raise AssertionError(f"chunk {chunk_id}: cosine {cosine:.5f}, its text {expected:.5f}")
        return doc

    @staticmethod
    def same(what: str, found: Any, expected: Any) -> None:
        ok = abs(found - expected) <= 1e-4 if isinstance(found, float) else found == expected
        if not ok:
            raise AssertionError(f"{what}: {found!r}, expected {expected!r}")

    @staticmethod
    def one_generation(docs: list[int]) -> None:
        """All chunks of WINDOW consecutive documents, as in every published generation."""
        count = Counter(docs)
        first = min(count, default=0)
        want = {first + i: CHUNKS for i in range(WINDOW)}
        if dict(count) != want:
            raise AssertionError(f"hits mix generations: documents {sorted(count.items())}")


def query_hybrid(store: Any, retriever: Any, checker: Checker, query: str) -> None:
    """Hybrid retrieval: fused vector and keyword hits, with their relevance."""
    hits = retriever.search(query, within=None)
    docs = [
        checker.hit(
            d.page_content,
            d.metadata["chunk_id"],
            d.metadata["doc_id"],
            query,
            2 * d.metadata["relevance"] - 1,
        )
        for d, _ in hits
    ]
    checker.one_generation(docs)


def query_view(store: Any, retriever: Any, checker: Checker, query: str) -> None:
    """One pinned view doing every call itself (falls back to single calls without one)."""
    if not hasattr(store, "reader"):
        query_calls(store, retriever, checker, query)
        return
    qv = store.embeddings.embed_query(query)
    with store.reader() as view:
        vector = view.search_chunks_by_vector(qv, 40)
        keyword = view.keyword_search(query, 40)
        cos = view.similarities(qv, [r.id for r, _ in keyword])
        vecs = view.vectors([r.id for r, _ in vector])
        chunks = view.chunk_count()
    for (r, s), v in zip(vector, vecs, strict=True):
        checker.hit(r.text, r.chunk_id, r.doc_id, query, s)
        checker.same(f"stored vector of {r.chunk_id}", float(v @ checker.unit(r.text)), 1.0)
    kdocs = [checker.hit(r.text, r.chunk_id, r.doc_id, query, cos[r.id]) for r, _ in keyword]
    checker.one_generation(kdocs)
    checker.one_generation([int(r.text.split()[0][3:]) for r, _ in vector])
    checker.same("chunks in the generation", chunks, WINDOW * CHUNKS)


def query_calls(store: Any, retriever: Any, checker: Checker, query: str) -> None:
    """Single store calls, each self-contained (and, on the old code, hybrid's three)."""
    qv = store.embeddings.embed_query(query)
    vector = store.search_chunks_by_vector(qv, 40)
    vdocs = [checker.hit(r.text, r.chunk_id, r.doc_id, query, s) for r, s in vector]
    checker.one_generation(vdocs)
    if not hasattr(store, "reader"):  # the old code: what hybrid search did, call by call
        keyword = store.keyword_search(query, 40)
        cos = store.similarities(qv, [r.id for r, _ in keyword])
        kdocs = [checker.hit(r.text, r.chunk_id, r.doc_id, query, cos[r.id]) for r, _ in keyword]
        checker.one_generation(kdocs)
        checker.same("documents of vector and keyword hits", set(vdocs), set(kdocs))
    checker.same("documents listed", len(store.documents()), WINDOW)


QUERIES = {"hybrid": query_hybrid, "view": query_view, "calls": query_calls}


def read_loop(
    kind: str, store: Any, retriever: Any, checker: Checker, deadline: float, out: dict[str, Any]
) -> None:
    rng = random.Random(kind)
    lock = out["lock"]
    while time.time() < deadline:
        query = f"pump valve {rng.choice(WORDS)} {rng.randrange(1000)}"
        started = time.perf_counter()
        try:
            QUERIES[kind](store, retriever, checker, query)
        except Exception as exc:  # noqa: BLE001 - counted and reported: the point of the bench
            with lock:
                out["errors"].append(f"{kind}: {type(exc).__name__}: {exc}")
                if len(out["tracebacks"]) < 3:
                    out["tracebacks"].append(traceback.format_exc())
            continue
        elapsed = time.perf_counter() - started
        with lock:
            out["latency"].setdefault(kind, []).append(elapsed)


def run(args: argparse.Namespace) -> dict[str, Any]:
    store_mod = load(args.store_file, "rag.store.faiss")
    retrieval_mod = load(args.retrieval_file, "rag.retrieval")
    with tempfile.TemporaryDirectory(prefix="store-stress-") as tmp:
        index_dir = Path(tmp) / "index"
        seed(store_mod, index_dir)
        store = make_store(store_mod, index_dir)  # one instance shared by every thread
        retriever = retrieval_mod.HybridRetriever(
            store=store, mode="hybrid", k=40, fusion_depth=40, max_chunks_per_page=0
        )
        started = time.time()
        deadline = started + args.seconds
        cmd = [sys.executable, __file__, "--role", "writer", "--index", str(index_dir),
               "--until", str(deadline), "--interval", str(args.interval)]  # fmt: skip
        if args.store_file:
            cmd += ["--store-file", args.store_file]
        writer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out: dict[str, Any] = {"lock": threading.Lock(), "errors": [], "tracebacks": [],
                               "latency": {}}  # fmt: skip
        kinds = list(QUERIES)
        threads = [
            threading.Thread(
                target=read_loop,
                args=(kinds[i % len(kinds)], store, retriever, Checker(), deadline, out),
            )
            for i in range(args.readers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        w_out, w_err = writer.communicate(timeout=120)
        publishes = json.loads(w_out)["publishes"] if writer.returncode == 0 else 0
        with contextlib.suppress(AttributeError):
            store.close()
    latency = {
        kind: {
            "queries": len(v),
            "p50_ms": round(1000 * float(np.percentile(v, 50)), 2),
            "p95_ms": round(1000 * float(np.percentile(v, 95)), 2),
        }
        for kind, v in sorted(out["latency"].items())
    }
    all_lat = [x for v in out["latency"].values() for x in v]
    return {
        "readers": args.readers,
        "seconds": args.seconds,
        "queries": len(all_lat),
        "publishes": publishes,
        "errors": len(out["errors"]),
        "error_kinds": dict(
            Counter(e.split(":")[0] + ":" + e.split(":")[1] for e in out["errors"])
        ),
        "first_errors": out["errors"][:5],
        "writer_exit": writer.returncode,
        "writer_stderr": w_err[-2000:] if writer.returncode else "",
        "p50_ms": round(1000 * float(np.percentile(all_lat, 50)), 2) if all_lat else None,
        "p95_ms": round(1000 * float(np.percentile(all_lat, 95)), 2) if all_lat else None,
        "by_kind": latency,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=4, help="reader threads (default 4)")
    parser.add_argument("--seconds", type=float, default=60, help="how long (default 60)")
    parser.add_argument("--interval", type=float, default=0.0, help="pause between publishes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--store-file", help="another rag/store.py to load instead")
    parser.add_argument("--retrieval-file", help="another rag/retrieval.py to load instead")
    parser.add_argument("--role", default="readers", choices=["readers", "writer"],
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "writer":
        return write_loop(args)
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['readers']} readers, {report['seconds']:.0f}s: {report['queries']} queries, "
            f"{report['publishes']} publishes, {report['errors']} errors; "
            f"query latency p50 {report['p50_ms']} ms, p95 {report['p95_ms']} ms"
        )
        for kind, row in report["by_kind"].items():
            print(f"  {kind:7s} {row['queries']:6d} queries  p50 {row['p50_ms']} ms  "
                  f"p95 {row['p95_ms']} ms")  # fmt: skip
        for error in report["first_errors"]:
            print(f"  error: {error[:300]}")
        if report["writer_exit"]:
            print(f"  writer failed ({report['writer_exit']}): {report['writer_stderr']}")
    return 1 if report["errors"] or report["writer_exit"] else 0


if __name__ == "__main__":
    sys.exit(main())
