"""Immutable vector segments of the embedded index, and how they are merged.

A segment is one FAISS file, ``segments/seg000017.faiss``: an ``IndexIDMap2`` whose ids
are chunk ids, over either an exact ``IndexFlatIP`` (segments written by ingestion, small)
or an approximate ``IndexIVFScalarQuantizer`` with fp16 codes (built by compaction once
enough vectors gathered; IVF rather than HNSW because it builds 7x faster at the same
recall and latency, and keeps its recall under filters; fp16 because it has IVF-flat's
recall to the fourth decimal at half the bytes, so a million chunks map 0.8 GB rather
than 1.5: ``bench/ann.py``).
Vectors are L2-normalised, so inner product is cosine similarity. A segment file is
written once, under a temporary name, synced and renamed; it never changes afterwards.

Readers memory-map segments (``IO_FLAG_MMAP_IFC``: the vectors stay in the page cache,
shared between processes, and loading a 200k-vector segment takes ~0.01 s instead of
1.4 s) and keep every segment across generations: a new generation loads only its new
segments.

Searches run on the inner index by position, with the chunk-id mask translated into a
position mask, and not through ``IndexIDMap2.search``: that wrapper replaces search
parameters by a plain ``SearchParameters`` when it translates a selector, which drops
IVF's ``nprobe``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

FLAT = "flat"
IVF = "ivf"
KINDS = (FLAT, IVF)

IVF_LISTS_PER_SQRT = 4  # nlist = 4 * sqrt(n)
# Lists probed per query: nlist / 16, at least 128. On 137k real MiniLM chunk embeddings
# (bench/ann.py) nprobe 80 reached recall@10 0.956 and 112 under a 10% filter (0.47 ms
# p95); the former nlist / 64 (at least 16) probed 23 lists there, recall ~0.87.
IVF_PROBE_SHARE = 1 / 16
IVF_MIN_PROBE = 128
ANN_KIND = IVF  # the kind compaction builds
# Compaction policy (see ``plan_compaction`` and ``plan_small_merge``).
ANN_MIN = 50_000  # flat vectors that together become one approximate segment
TIER_FACTOR = 4
DEAD_SHARE = 0.2
SMALL = 10_000  # a flat segment under this many vectors is "small"
MAX_SMALL = 8  # small flat segments allowed before the writer merges them

# A filtered search over an IVF segment that admits fewer vectors than this is done
# exactly over the admitted vectors (a few ms), where the probed lists would hold too few.
EXACT_BELOW = 20_000

_READ_FLAGS = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_MMAP_IFC  # IVF refuses the pair: IFC alone


@dataclass(frozen=True)
class SegmentInfo:
    """A segment as a manifest lists it."""

    name: str  # file stem: seg000017
    count: int  # vectors in it (live and tombstoned)
    kind: str = FLAT
    size: int = 0  # bytes of the file (a cheap check that it is whole)

    def to_json(self) -> dict[str, Any]:
        """The manifest entry."""
        return {"name": self.name, "count": self.count, "kind": self.kind, "bytes": self.size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SegmentInfo:
        """Read a manifest entry (checked)."""
        name, count, kind = data["name"], data["count"], data.get("kind", FLAT)
        size = data.get("bytes", 0)
        if not isinstance(name, str) or not name.startswith("seg") or not name[3:].isdigit():
            raise ValueError(f"bad segment name {name!r}")
        if not isinstance(count, int) or count < 0 or kind not in KINDS:
            raise ValueError(f"bad segment entry {data!r}")
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"bad segment entry {data!r}")
        return cls(name, count, kind, size)

    def check_file(self, path: Path) -> None:
        """Cheap check of a segment file: there, and of the size written.

        Raises:
            FileNotFoundError: it is missing.
            ValueError: its size differs (truncated or overwritten).
        """
        size = path.stat().st_size
        if self.size and size != self.size:
            raise ValueError(f"bad {path.name}: {size} bytes, the manifest says {self.size}")


def segment_name(number: int) -> str:
    """The file stem of segment ``number``."""
    return f"seg{number:06d}"


class Segment:
    """A loaded segment: its index, its chunk ids by position, and an id -> position map."""

    def __init__(self, info: SegmentInfo, index: Any) -> None:
        self.info = info
        self.index = index
        self.inner = faiss.downcast_index(index.index)
        self.labels = faiss.vector_to_array(index.id_map).astype(np.int64)
        self._order: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Vectors in the segment."""
        return int(self.index.ntotal)

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The stored vectors at these positions (a copy)."""
        if self.info.kind == IVF:
            if len(positions) == 0:
                return np.zeros((0, self.index.d), dtype=np.float32)
            keys = np.ascontiguousarray(positions, dtype=np.int64)
            return np.asarray(self.inner.reconstruct_batch(keys), dtype=np.float32)
        return np.asarray(self.vectors_view()[positions], dtype=np.float32)

    def vectors_view(self) -> np.ndarray:
        """All vectors by position, without a copy (flat segments only)."""
        flat: Any = self.inner
        n, d = int(flat.ntotal), int(flat.d)
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Position of each chunk id in this segment (-1 where it is not here)."""
        if self._order is None:
            with self._lock:
                if self._order is None:
                    self._order = np.argsort(self.labels, kind="stable")
        order = self._order
        if len(order) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        at = np.clip(np.searchsorted(self.labels, ids, sorter=order), 0, len(order) - 1)
        pos = order[at]
        return np.where(self.labels[pos] == ids, pos, -1)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, admitted: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, chunk ids) among positions ``allowed`` (bool; None: all).

        ``admitted`` is how many positions ``allowed`` admits.
        """
        n = self.count
        k = min(k, admitted if allowed is not None else n)
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if allowed is not None:
            # Few admitted: score them directly, rather than scan every vector (flat) or
            # probe lists that hold almost none of them (IVF).
            few = admitted < n // 4 if self.info.kind == FLAT else admitted < EXACT_BELOW
            if few:
                return self._exact_subset(query, k, np.flatnonzero(allowed))
        params: Any
        if self.info.kind == IVF:
            params = faiss.SearchParametersIVF()
            ivf: Any = self.inner
            nlist = int(ivf.nlist)
            probe = max(IVF_MIN_PROBE, int(nlist * IVF_PROBE_SHARE))
            if allowed is not None:  # a filter leaves fewer candidates per list: probe more
                probe = int(probe * min(4.0, max(1.0, n / max(admitted, 1)) ** 0.5))
            params.nprobe = min(nlist, probe)
        else:
            params = faiss.SearchParameters()
        bits = None
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        scores, pos = self.inner.search(query, k, params=params)
        del bits
        keep = pos[0] >= 0
        return scores[0][keep], self.labels[pos[0][keep]]

    def _exact_subset(
        self, query: np.ndarray, k: int, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.vectors_at(positions)
        scores = vectors @ query[0]
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return scores[top].astype(np.float32), self.labels[positions[top]]


def build_index(kind: str, vectors: np.ndarray, ids: np.ndarray, threads: int = 0) -> Any:
    """A segment's FAISS index over normalised ``vectors`` with chunk ``ids``."""
    d = vectors.shape[1]
    inner: Any
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == IVF:
        nlist = max(1, min(len(ids) // 39, int(IVF_LISTS_PER_SQRT * len(ids) ** 0.5)))
        inner = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(d),
            d,
            nlist,
            faiss.ScalarQuantizer.QT_fp16,
            faiss.METRIC_INNER_PRODUCT,
        )
        inner.set_direct_map_type(faiss.DirectMap.Array)  # type: ignore[attr-defined]
        inner.cp.niter = 10  # k-means iterations: recall barely moves past 10, time does
        sample = vectors
        if len(vectors) > nlist * 40:  # k-means on a sample (FAISS wants 39+ per list)
            pick = np.random.default_rng(0).choice(len(vectors), nlist * 40, replace=False)
            sample = vectors[np.sort(pick)]
        inner.train(sample)
    else:
        inner = faiss.IndexFlatIP(d)
    index = faiss.IndexIDMap2(inner)
    if len(ids):
        if threads:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(threads)
        try:
            index.add_with_ids(vectors, ids)
        finally:
            if threads:
                faiss.omp_set_num_threads(before)
    return index


def write_index(index: Any, path: Path) -> None:
    """Write a FAISS index to ``path`` through Python, synced (errors raise OSError)."""
    # Through a Python file object, so a failed write raises OSError with its errno (FAISS's
    # own writer reports errors at close only on stderr).
    with path.open("wb") as fh:
        writer = faiss.PyCallbackIOWriter(fh.write)  # type: ignore[attr-defined]
        faiss.write_index(index, writer)
        fh.flush()
        os.fsync(fh.fileno())


def read_segment(info: SegmentInfo, path: Path) -> Segment:
    """Load a segment file (memory-mapped).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it is unreadable or does not match ``info``.
    """
    info.check_file(path)
    try:
        flags = faiss.IO_FLAG_MMAP_IFC if info.kind == IVF else _READ_FLAGS
        index = faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise ValueError(f"bad {path.name}: {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(index, faiss.IndexIDMap2):
        raise ValueError(f"bad {path.name}: not a segment")  # noqa: TRY004 (a bad file)
    if int(index.ntotal) != info.count:
        raise ValueError(
            f"{path.name} holds {index.ntotal} vectors, the manifest says {info.count}"
        )
    return Segment(info, index)


def plan_small_merge(
    segments: Sequence[SegmentInfo], *, max_small: int | None = None, small: int | None = None
) -> list[SegmentInfo]:
    """Flat segments to merge now, in the writer (cheap): [] when none are due.

    Ingestion adds one small flat segment per publish; once more than ``max_small`` flat
    segments under ``small`` vectors pile up they are merged into one flat segment.
    """
    small = SMALL if small is None else small
    max_small = MAX_SMALL if max_small is None else max_small
    small_flat = [s for s in segments if s.kind == FLAT and s.count < small]
    return small_flat if len(small_flat) > max_small else []


def plan_compaction(
    segments: Sequence[SegmentInfo],
    dead: dict[str, int],
    *,
    ann_min: int | None = None,
    tier_factor: int | None = None,
    dead_share: float | None = None,
) -> list[SegmentInfo]:
    """Segments a background compaction should merge into one approximate one ([]: none).

    - Flat segments holding ``ann_min`` vectors or more together become one ANN segment.
    - ANN segments are merged by tiers: ``tier_factor`` of about the same size (within a
      factor of ``tier_factor``) become one, so each vector is rebuilt O(log n) times.
    - A segment whose share of tombstoned vectors (``dead``: name -> count) passes
      ``dead_share`` is rebuilt without them.
    """
    ann_min = ANN_MIN if ann_min is None else ann_min
    tier_factor = TIER_FACTOR if tier_factor is None else tier_factor
    dead_share = DEAD_SHARE if dead_share is None else dead_share
    flat = [s for s in segments if s.kind == FLAT]
    if sum(s.count for s in flat) >= ann_min:
        return flat
    ann = sorted((s for s in segments if s.kind != FLAT), key=lambda s: s.count)
    for i in range(len(ann) - tier_factor + 1):
        group = ann[i : i + tier_factor]
        if group[-1].count <= group[0].count * tier_factor:
            return group
    for s in segments:
        if s.count and dead.get(s.name, 0) / s.count > dead_share:
            return [s]
    return []


def remove_quietly(path: Path) -> None:
    """Delete a file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
