"""RAG_EMBEDDING_VARIANT: the setting, the model id an index records, the int8 cache folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from rag.embeddings import embedding_model_id, load_embeddings
from rag.embeddings_int8 import EXPORT_FILE, cache_dir, export_int8
from rag.errors import ConfigError, IndexMismatchError
from rag.model_id import model_id, split_model_id
from rag.service.components import build_store
from rag.settings import load_settings
from tests.stores import add_doc, make_store
from tests.unit.test_embeddings import _model_folder


def test_fp32_is_the_default_and_int8_is_read_from_the_environment(monkeypatch) -> None:
    assert load_settings().embedding_variant == "fp32"
    monkeypatch.setenv("RAG_EMBEDDING_VARIANT", "int8")
    assert load_settings().embedding_variant == "int8"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"embedding_variant": "int4"}, r"RAG_EMBEDDING_VARIANT.*'fp32' or 'int8'"),
        ({"embedding_variant": "int8", "embedding_device": "cuda"}, "RAG_EMBEDDING_DEVICE=cpu"),
        ({"embedding_variant": "int8", "embedding_backend": "numpy"}, "RAG_EMBEDDING_BACKEND"),
    ],
)
def test_impossible_variants_are_refused_naming_the_setting(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_fp32_keeps_the_plain_model_name_so_existing_indexes_stay_valid() -> None:
    assert embedding_model_id(load_settings()) == "all-MiniLM-L6-v2"
    int8 = embedding_model_id(load_settings(embedding_variant="int8"))
    assert int8 == "all-MiniLM-L6-v2+onnx-int8"
    assert split_model_id(int8) == ("all-MiniLM-L6-v2", "int8")
    assert split_model_id("all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", "fp32")
    # A "+" in a model folder's own name is not a variant.
    assert split_model_id("/models/a+b") == ("/models/a+b", "fp32")
    assert split_model_id(model_id("/models/a+b", "int8")) == ("/models/a+b", "int8")


def test_a_variant_mismatch_names_the_variant_setting() -> None:
    err = IndexMismatchError("m+onnx-int8", "m", 384, 384)
    assert "RAG_EMBEDDING_VARIANT=fp32" in str(err) and "RAG_EMBEDDING_MODEL" not in str(err)
    err = IndexMismatchError("m", "m+onnx-int8", 384, 384)
    assert "RAG_EMBEDDING_VARIANT=int8" in str(err)
    err = IndexMismatchError("other+onnx-int8", "m", 384, 384)
    assert "RAG_EMBEDDING_MODEL" in str(err) and "RAG_EMBEDDING_VARIANT" not in str(err)


def test_the_store_records_the_variant_and_refuses_the_other(tmp_path: Path) -> None:
    fp32, int8 = (
        load_settings(data_dir=tmp_path, embedding_variant=v)  # type: ignore[arg-type]
        for v in ("fp32", "int8")
    )
    fake = DeterministicFakeEmbedding(size=384)
    assert build_store(fp32, fake).model_id == "all-MiniLM-L6-v2"
    assert build_store(int8, fake).model_id == "all-MiniLM-L6-v2+onnx-int8"
    index = tmp_path / "index"
    add_doc(make_store(index, model=embedding_model_id(fp32)), "d1", ["the lighthouse keeper"])
    other = make_store(index, model=embedding_model_id(int8))
    with pytest.raises(IndexMismatchError, match="RAG_EMBEDDING_VARIANT=fp32"):
        other.search_chunks("lighthouse")
    with pytest.raises(IndexMismatchError), other.writer():
        pass
    assert make_store(index, model=embedding_model_id(fp32)).chunk_count() == 1


def test_int8_refuses_a_model_it_cannot_quantize(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "m", config={"model_type": "t5"})
    settings = load_settings(
        data_dir=tmp_path, embedding_model=str(folder), embedding_variant="int8"
    )
    with pytest.raises(ConfigError, match=r"RAG_EMBEDDING_VARIANT.*'t5'"):
        load_embeddings(settings)


def test_the_cache_folder_follows_the_data_dir_and_the_weights(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "mini")
    settings = load_settings(data_dir=tmp_path / "data", embedding_model=str(folder))
    first = cache_dir(settings, folder)
    assert first.parent == tmp_path / "data" / "models"
    assert first.name.startswith("mini-onnx-int8-") and cache_dir(settings, folder) == first
    (folder / "model.safetensors").write_text("new weights")
    assert cache_dir(settings, folder) != first


def _fake_export(_model: Path, out: Path) -> None:
    (out / "model_int8.onnx").write_text("weights")
    (out / EXPORT_FILE).write_text(json.dumps({"format": 1}))


def test_an_export_is_published_whole(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m-onnx-int8-key"
    assert export_int8(tmp_path, target, export=_fake_export) == target
    assert sorted(p.name for p in target.iterdir()) == [EXPORT_FILE, "model_int8.onnx"]
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary left


_DIES_HALFWAY = """
import sys, time
from pathlib import Path
from rag.embeddings_int8 import export_int8

def export(_model, out):
    (out / "model_int8.onnx").write_text("half")
    print("writing", flush=True)
    time.sleep(60)

export_int8(Path(sys.argv[1]), Path(sys.argv[2]), export=export)
"""


def test_a_killed_export_leaves_no_cache(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m-onnx-int8-key"
    child = subprocess.Popen(
        [sys.executable, "-c", _DIES_HALFWAY, str(tmp_path), str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait(10)
    assert not target.exists()
    assert export_int8(tmp_path, target, export=_fake_export) == target
    assert (target / "model_int8.onnx").read_text() == "weights"


def test_a_concurrent_export_that_finished_first_is_used(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m-onnx-int8-key"

    def loses_the_race(model: Path, out: Path) -> None:
        target.mkdir()
        (target / EXPORT_FILE).write_text("theirs")
        _fake_export(model, out)

    assert export_int8(tmp_path, target, export=loses_the_race) == target
    assert (target / EXPORT_FILE).read_text() == "theirs"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_temporary_folders_of_long_dead_exports_are_removed(tmp_path: Path) -> None:
    import os

    models = tmp_path / "models"
    stale, fresh = models / ".tmp-m-old", models / ".tmp-m-running"
    stale.mkdir(parents=True)
    fresh.mkdir()
    os.utime(stale, (0, 0))
    export_int8(tmp_path, models / "m-onnx-int8-key", export=_fake_export)
    assert not stale.exists() and fresh.exists()
