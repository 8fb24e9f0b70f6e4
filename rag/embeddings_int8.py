"""The embedding model quantized to int8 and run by ONNX Runtime (``RAG_EMBEDDING_VARIANT=int8``).

On first use the model's own weights are exported to ONNX and quantized with dynamic int8
quantization (int8 weights per channel, activations quantized at run time: the settings of
sentence-transformers' ``export_dynamic_quantized_onnx_model`` for AVX-512 VNNI), offline,
into ``DATA_DIR/models/<model>-onnx-int8-<key>/``; later loads reuse that folder.

Why not sentence-transformers' own ONNX backend (``backend="onnx"``): it needs optimum's
ONNX Runtime classes, whose only release (optimum-onnx 0.1.0) requires transformers < 4.58
while sentence-transformers 6 requires transformers 5; with both installed optimum fails to
import. The steps are the same ones it takes (``torch.onnx.export`` of the transformer, ONNX
Runtime's ``quantize_dynamic``), and the run is ours: the tokenizer, one session, mean pooling
and normalisation, as ``BertEmbeddings`` does in numpy.

Documents and queries both go through the quantized model: an index holds vectors of one
variant, and the store's model id says which (``embedding_model_id``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rag.embeddings import MODEL_STACK_LOADING, BertEmbeddings, TokenEncoder, max_seq_length
from rag.errors import ConfigError
from rag.settings import Settings

logger = logging.getLogger(__name__)

INT8_SUFFIX = "+onnx-int8"
MODEL_FILE = "model_int8.onnx"
EXPORT_FILE = "export.json"
# Bumped when the export steps change, so older caches are not reused.
EXPORT_FORMAT = 2
# Layers whose feed-forward down-projection stays in fp32 (``_down_projections``).
FP32_LAYERS = 2
# A temporary export folder older than this was left by a killed process.
_STALE_S = 3600.0


def cache_dir(settings: Settings, model_path: Path) -> Path:
    """The folder of the quantized model: named after the model and a key of its weights.

    The key covers the model folder's location and its weights' size and time, so a model
    replaced in place (a new package version) is exported again instead of reused stale.
    """
    weights = model_path / "model.safetensors"
    stat = weights.stat() if weights.is_file() else None
    weights_key = stat and (stat.st_size, stat.st_mtime_ns)
    source = f"{EXPORT_FORMAT}.{FP32_LAYERS}|{model_path.resolve()}|{weights_key}"
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    name = Path(settings.embedding_model).name or "model"
    return settings.data_dir / "models" / f"{name}-onnx-int8-{key}"


def load_int8(settings: Settings, model_path: Path) -> Int8Embeddings:
    """The quantized model, exported from ``model_path`` first when it is not cached yet.

    Raises:
        ConfigError: the model is not one the export supports (a BERT encoder with mean
            pooling), or ONNX Runtime is missing.
    """
    reason = BertEmbeddings.unsupported(model_path)
    if reason is not None:
        raise ConfigError("RAG_EMBEDDING_VARIANT", f"int8 cannot quantize this model: {reason}")
    target = cache_dir(settings, model_path)
    if not (target / EXPORT_FILE).is_file():
        export_int8(model_path, target)
    logger.info("loading embedding model from %s (ONNX Runtime, int8)", target)
    return Int8Embeddings(target, batch_size=settings.embedding_batch_size)


def export_int8(
    model_path: Path, target: Path, export: Callable[[Path, Path], None] | None = None
) -> Path:
    """Export and quantize ``model_path`` into ``target``; a finished ``target`` is kept.

    The files are written in a temporary folder beside ``target`` and renamed into place
    in one step, so a killed export leaves no half cache; when two processes export at
    once, the first rename wins and the other uses its folder. ``export`` writes the files
    into a folder (the ONNX export and quantization unless given).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_exports(target.parent)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        (export or _export)(model_path, tmp)
        tmp.chmod(0o755)  # mkdtemp's folder is private to its owner
        try:
            tmp.rename(target)
        except OSError:
            if not (target / EXPORT_FILE).is_file():
                raise
            logger.info("another process exported %s first; using it", target)
        else:
            logger.info(
                "exported the int8 model to %s in %.1fs", target, time.perf_counter() - started
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_stale_exports(folder: Path) -> None:
    now = time.time()
    for old in folder.glob(".tmp-*"):
        try:
            if now - old.stat().st_mtime > _STALE_S:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:
            continue


def _export(model_path: Path, out: Path) -> None:
    """ONNX export of the transformer (torch's tracer), then dynamic int8 quantization."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise ConfigError(
            "RAG_EMBEDDING_VARIANT", f"int8 needs onnxruntime and onnx ({exc})"
        ) from exc
    with MODEL_STACK_LOADING:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # Eager attention traces to plain MatMul/Softmax nodes, which ONNX Runtime quantizes.
        model = AutoModel.from_pretrained(
            str(model_path), local_files_only=True, attn_implementation="eager"
        ).eval()

    class _Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = torch.ones((2, 8), dtype=torch.long)
    fp32, pre = out / "model_fp32.onnx", out / "model_pre.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow
        torch.onnx.export(
            _Encoder(model),
            (dummy, dummy, torch.zeros_like(dummy)),
            str(fp32),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    config = json.loads((model_path / "config.json").read_text())
    quantize_dynamic(
        str(pre),
        str(out / MODEL_FILE),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=False,
        nodes_to_exclude=_down_projections(pre, config),
    )
    fp32.unlink()
    pre.unlink()
    shutil.copy2(model_path / "tokenizer.json", out / "tokenizer.json")
    window = max_seq_length(model_path) or int(config["max_position_embeddings"])
    info = {
        "format": EXPORT_FORMAT,
        "source": str(model_path.resolve()),
        "max_seq_length": min(window, int(config["max_position_embeddings"])),
        "hidden_size": int(config["hidden_size"]),
        "quantization": (
            "dynamic int8: QInt8 weights per channel, QUInt8 activations; "
            "feed-forward down-projections in fp32"
        ),
    }
    (out / EXPORT_FILE).write_text(json.dumps(info, indent=2))
    for path in out.iterdir():  # on disk before the rename publishes them
        with path.open("rb") as f:
            os.fsync(f.fileno())


def _down_projections(model: Path, config: dict[str, Any]) -> list[str]:
    """The first ``FP32_LAYERS`` feed-forward down-projections (MatMuls left in fp32).

    Their input, the activation after GELU, has a long tail that a per-tensor uint8 scale
    flattens, and the first layers' errors travel through all the others: on 512 chunks of
    the corpora, cosine to fp32 went from 0.9924 to 0.9948 with the first two left in
    fp32 (0.9963 with all six, at 1.76x fp32's speed instead of 2.3x). Found by their
    weight's shape (intermediate x hidden), not by name, so any BERT export matches.
    """
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    shape = [int(config["intermediate_size"]), int(config["hidden_size"])]
    down = {t.name for t in graph.initializer if list(t.dims) == shape}
    nodes = [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & down]
    return nodes[:FP32_LAYERS]  # the graph lists the layers in order


class Int8Embeddings(TokenEncoder):
    """The exported int8 model in an ONNX Runtime session: unit vectors, mean pooled.

    Batches are padded to their longest text (``TokenEncoder`` batches texts of close
    lengths). Dynamic quantization
    scales a layer's activations by their range over the whole batch, so a text's vector
    moves a little with its batch (cosine ~0.99 between a text alone and in a batch, about
    what int8 moves from fp32); ``bench/quantized.py`` measures what that costs retrieval.
    """

    def __init__(self, model_dir: Path, batch_size: int = 64) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        info = json.loads((model_dir / EXPORT_FILE).read_text())
        self._batch = batch_size
        self._hidden = int(info["hidden_size"])
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(int(info["max_seq_length"]))
        self._tokenizer.no_padding()
        self._pad = self._tokenizer.token_to_id("[PAD]") or 0
        self._session = ort.InferenceSession(
            str(model_dir / MODEL_FILE), providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self._pad, np.int64)
        mask = np.zeros((len(seqs), width), np.int64)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, np.float32(1e-12))
