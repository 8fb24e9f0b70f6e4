"""RAG_EMBEDDING_VARIANT=int8 with the real bundled weights: export, vectors, cache, index."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from rag.cli import main
from rag.embeddings import load_embeddings
from rag.embeddings_int8 import FP32_LAYERS, MODEL_FILE, Int8Embeddings, cache_dir
from rag.settings import Settings, load_settings

SENTENCES = [
    "How many connections does the server accept by default?",
    "max_connections (integer) sets the maximum number of concurrent connections. " * 12,
    "The Skerryvore lighthouse keeper recorded wind speeds every four hours in a logbook.",
    "Nightly backups are written to the vault at two in the morning.",
    "Knead the sourdough for ten minutes and let it rise overnight.",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def int8_settings(data_dir: Path) -> Settings:
    return load_settings(data_dir=data_dir, embedding_variant="int8")


@pytest.fixture(scope="module")
def exported(int8_settings: Settings) -> tuple[Int8Embeddings, float]:
    """The quantized model, exported from the bundled weights (timed)."""
    started = time.perf_counter()
    model = load_embeddings(int8_settings)
    assert isinstance(model, Int8Embeddings)
    return model, time.perf_counter() - started


def test_only_the_first_down_projections_stay_fp32(
    exported: tuple[Int8Embeddings, float], int8_settings: Settings
) -> None:
    import onnx

    graph = onnx.load(
        str(cache_dir(int8_settings, int8_settings.embedding_model_path()) / MODEL_FILE)
    ).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    fp32 = [n for n in graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)]
    assert [weights[i] for n in fp32 for i in n.input if i in weights] == [
        [1536, 384]
    ] * FP32_LAYERS
    # Six layers of q, k, v, attention out, up and down projections; the rest quantized.
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 6 * 6 - FP32_LAYERS
    assert "layer.0/" in fp32[0].name and "layer.1/" in fp32[1].name


def test_int8_vectors_point_where_fp32_vectors_do(exported: tuple[Int8Embeddings, float]) -> None:
    model, seconds = exported
    print(f"export and load of the int8 model: {seconds:.1f}s")
    fp32 = load_embeddings(load_settings(embedding_backend="sentence-transformers"))
    expected = np.array(fp32.embed_documents(SENTENCES))
    got = np.array(model.embed_documents(SENTENCES))
    cosines = (got * expected).sum(1)
    assert got.shape == (len(SENTENCES), 384)
    assert cosines.min() > 0.98, cosines
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Queries go through the same int8 model. Activations are quantized per batch, so a
    # text alone moves a little from the same text in a batch (as much as int8 from fp32).
    alone = np.array([model.embed_query(s) for s in SENTENCES])
    assert (alone * got).sum(1).min() > 0.98
    assert ((alone * expected).sum(1) > 0.98).all()
    # The export is not a copy of fp32: int8 rounding moves every vector a little.
    assert cosines.max() < 0.99999


def test_a_second_load_reuses_the_cache(
    exported: tuple[Int8Embeddings, float], int8_settings: Settings
) -> None:
    folder = cache_dir(int8_settings, int8_settings.embedding_model_path())
    before = (folder / MODEL_FILE).stat()
    started = time.perf_counter()
    again = load_embeddings(int8_settings, for_queries=True)
    assert isinstance(again, Int8Embeddings)
    after = (folder / MODEL_FILE).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # nothing half-written
    assert time.perf_counter() - started < exported[1]


def test_an_fp32_index_opened_with_int8_is_the_mismatch_error(
    exported: tuple[Int8Embeddings, float],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Bread\n\nKnead the sourdough for ten minutes and let it rise overnight.\n")
    index = tmp_path / "index"
    monkeypatch.setenv("RAG_DATA_DIR", str(data_dir))
    assert main(["ingest", str(notes), "--index", str(index)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("RAG_EMBEDDING_VARIANT", "int8")
    code = main(["search", "sourdough", "--index", str(index)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "'all-MiniLM-L6-v2+onnx-int8'" in err and "RAG_EMBEDDING_VARIANT=fp32" in err
    assert "Traceback" not in err
    monkeypatch.setenv("RAG_EMBEDDING_VARIANT", "fp32")
    assert main(["search", "sourdough", "--index", str(index)]) == 0
    assert "sourdough" in capsys.readouterr().out
