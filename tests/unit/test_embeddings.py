"""The numpy embedding pass: which models it takes, and its arithmetic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rag.embeddings import BertEmbeddings, _gelu_, load_embeddings
from rag.errors import ConfigError
from rag.settings import load_settings


def _model_folder(root: Path, **changes: object) -> Path:
    """A folder shaped like a sentence-transformers BERT model (no real weights)."""
    (root / "1_Pooling").mkdir(parents=True)
    config = {"model_type": "bert", "hidden_act": "gelu", "hidden_size": 8}
    modules = [
        {"type": "sentence_transformers.models.Transformer"},
        {"type": "sentence_transformers.models.Pooling"},
        {"type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
    config.update(changes.get("config", {}))  # type: ignore[call-overload]
    pooling.update(changes.get("pooling", {}))  # type: ignore[call-overload]
    (root / "config.json").write_text(json.dumps(config))
    (root / "modules.json").write_text(json.dumps(changes.get("modules", modules)))
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    for name in ("model.safetensors", "tokenizer.json"):
        if name not in changes.get("missing", ()):  # type: ignore[operator]
            (root / name).write_text("")
    return root


def test_a_bert_model_with_mean_pooling_is_supported(tmp_path: Path) -> None:
    assert BertEmbeddings.unsupported(_model_folder(tmp_path)) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"config": {"model_type": "xlm-roberta"}}, "model type is 'xlm-roberta'"),
        ({"config": {"hidden_act": "relu"}}, "activation is 'relu'"),
        ({"config": {"position_embedding_type": "relative_key"}}, "not absolute"),
        ({"pooling": {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}}, "cls"),
        ({"modules": [{"type": "sentence_transformers.models.Transformer"}]}, "modules are"),
        ({"missing": ["model.safetensors"]}, "no model.safetensors"),
        ({"missing": ["tokenizer.json"]}, "no tokenizer.json"),
    ],
)
def test_other_models_are_refused_with_the_reason(
    tmp_path: Path, changes: dict[str, object], reason: str
) -> None:
    found = BertEmbeddings.unsupported(_model_folder(tmp_path, **changes))
    assert found is not None and reason in found


def test_forcing_numpy_on_a_model_it_cannot_run_names_the_setting(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, config={"model_type": "t5"})
    settings = load_settings(embedding_model=str(folder), embedding_backend="numpy")
    with pytest.raises(ConfigError, match=r"RAG_EMBEDDING_BACKEND.*'t5'"):
        load_embeddings(settings)


def test_a_gpu_device_is_refused_by_numpy(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    settings = load_settings(
        embedding_model=str(folder), embedding_backend="numpy", embedding_device="cuda"
    )
    with pytest.raises(ConfigError, match="RAG_EMBEDDING_DEVICE"):
        load_embeddings(settings)


def test_gelu_matches_the_exact_erf_definition() -> None:
    x = np.linspace(-12, 12, 4800, dtype=np.float32).reshape(3, -1)
    expected = np.array(
        [[0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in row] for row in x.tolist()]
    )
    h = x.copy()
    _gelu_(h, np.empty_like(h), np.empty_like(h))
    assert np.abs(h - expected).max() < 2e-6
    assert h[x < -8].max() <= 0 and h[x < -8].min() > -1e-9  # no overflow, no NaN far out
