"""The embedding model, loaded by path so it works offline.

Two ways to run it, with the same vectors:

- ``BertEmbeddings``: a forward pass in numpy for the sentence-transformers models that
  are a BERT encoder with mean pooling (the bundled all-MiniLM-L6-v2 and its kin). This is
  our own code for a solved problem, on purpose: importing sentence-transformers (torch,
  transformers, scikit-learn, scipy, pandas) takes 6-9 s, which every ``ragchat search``
  and ``ask`` and the web app's first question paid before doing any work, and it holds
  several hundred MB. The numpy pass loads in under a second, embeds a query in ~10 ms
  and matches sentence-transformers to 3e-7 per component
  (``tests/integration/test_embeddings_real.py``). It embeds full-length chunks slower
  (numpy's batched attention products do not reach BLAS speed; ``bench/embeddings.py``).
- sentence-transformers, for documents in bulk, every other model and GPUs.

``RAG_EMBEDDING_BACKEND`` picks one (``auto``: numpy for queries when the model and device
allow it, sentence-transformers for documents). ``RAG_EMBEDDING_VARIANT=int8`` runs the
model quantized, for documents and queries alike, in ONNX Runtime instead
(``rag.embeddings_int8``); ``embedding_model_id`` is the id an index records for either.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from rag.errors import ConfigError
from rag.model_id import model_id
from rag.settings import Settings

logger = logging.getLogger(__name__)

# transformers' lazily loaded modules are not safe to import from two threads at once: the
# web app's warm-up thread loading this model while an upload built the chunker's tokenizer
# raised "cannot import name 'AutoTokenizer' from 'transformers'". Loading imports more
# modules lazily, so loaders hold this lock for the whole load (a few seconds, once).
MODEL_STACK_LOADING = threading.Lock()

_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"


def load_embeddings(settings: Settings, *, for_queries: bool = False) -> Embeddings:
    """Load the configured embedding model from disk (never from a hub).

    ``RAG_EMBEDDING_BACKEND=auto`` runs queries in numpy when the model allows it (they
    must start fast) and documents on sentence-transformers, which embeds long chunks in
    bulk faster (``bench/embeddings.py``). ``for_queries`` says which one is wanted.
    ``RAG_EMBEDDING_VARIANT=int8`` loads the quantized model for both (exporting it on
    first use).

    Raises:
        ConfigError: the model folder cannot be found, ``RAG_EMBEDDING_BACKEND=numpy``
            names a model the numpy pass cannot run, or int8 one it cannot quantize.
    """
    path = settings.embedding_model_path()
    if settings.embedding_variant == "int8":
        from rag.embeddings_int8 import load_int8

        return load_int8(settings, path)
    backend = settings.embedding_backend
    if backend == "numpy" or (backend == "auto" and for_queries):
        reason = BertEmbeddings.unsupported(path)
        if reason is None and settings.embedding_device != "cpu":
            reason = f"RAG_EMBEDDING_DEVICE is {settings.embedding_device!r}, not 'cpu'"
        if reason is None:
            logger.info("loading embedding model from %s (numpy)", path)
            return BertEmbeddings(path, batch_size=settings.embedding_batch_size)
        if backend == "numpy":
            raise ConfigError("RAG_EMBEDDING_BACKEND", f"numpy cannot run this model: {reason}")
        logger.info("queries are embedded by sentence-transformers: %s", reason)
    return _load_sentence_transformers(settings, path)


def embedding_model_id(settings: Settings) -> str:
    """The id an index built with these settings records (model, and variant unless fp32)."""
    return model_id(settings.embedding_model, settings.embedding_variant)


def _load_sentence_transformers(settings: Settings, path: Path) -> Embeddings:
    logger.info("loading embedding model from %s (sentence-transformers)", path)
    with MODEL_STACK_LOADING:
        from langchain_huggingface import HuggingFaceEmbeddings
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        return HuggingFaceEmbeddings(
            model_name=str(path),
            model_kwargs={"device": settings.embedding_device, "local_files_only": True},
            encode_kwargs={
                "normalize_embeddings": True,
                "batch_size": settings.embedding_batch_size,
            },
        )


def embedding_dimension(model_path: Path) -> int | None:
    """The output size a sentence-transformers folder declares, without loading it."""
    for name in ("1_Pooling/config.json", "config.json"):
        cfg = model_path / name
        if cfg.is_file():
            data = json.loads(cfg.read_text())
            dim = data.get("word_embedding_dimension") or data.get("hidden_size")
            if dim:
                return int(dim)
    return None


def max_seq_length(model_path: Path) -> int | None:
    """The sentence-transformers ``max_seq_length`` of a model folder, if it declares one."""
    cfg = model_path / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


# Abramowitz & Stegun 7.1.26: erfc(z) ~ poly(t) * exp(-z^2), t = 1 / (1 + P z); its error
# (< 1.5e-7) is below float32's resolution of the activations.
_ERF_P = np.float32(0.3275911)
_ERF_A = [np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736)]
_ERF_A5 = np.float32(0.254829592)
_SQRT_HALF = np.float32(1 / math.sqrt(2))
# Beyond |x| / sqrt(2) = 5, erfc < 2e-12; clamping keeps exp() out of subnormal numbers,
# which are ~100 times slower to compute with.
_ERF_CLAMP = np.float32(5.0)


def _gelu_(h: np.ndarray, z: np.ndarray, t: np.ndarray) -> None:
    """``h`` <- GELU(h) = h/2 * (1 + erf(h / sqrt 2)) (BERT's exact GELU), in place.

    ``z`` and ``t`` are scratch arrays of ``h``'s shape: allocating fresh ones per call
    cost more than the arithmetic.
    """
    np.abs(h, out=z)
    z *= _SQRT_HALF
    np.minimum(z, _ERF_CLAMP, out=z)
    np.multiply(z, _ERF_P, out=t)
    t += 1
    np.reciprocal(t, out=t)
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)  # z = exp(-x^2 / 2)
    poly = t * _ERF_A[0]
    for a in _ERF_A[1:]:
        poly += a
        poly *= t
    poly += _ERF_A5
    poly *= t
    poly *= z  # erfc(|x| / sqrt 2)
    np.subtract(np.float32(1), poly, out=poly)  # erf(|x| / sqrt 2)
    np.copysign(poly, h, out=poly)
    poly += 1
    h *= poly
    h *= np.float32(0.5)


def _layer_norm_(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: np.float32) -> None:
    x -= x.mean(-1, keepdims=True)
    var = np.mean(np.square(x), -1, keepdims=True)
    var += eps
    np.sqrt(var, out=var)
    x /= var
    x *= weight
    x += bias


class TokenEncoder(Embeddings):
    """Texts tokenized, batched by length and encoded into unit vectors by ``_forward``.

    Shared by the numpy pass (``BertEmbeddings``) and the int8 ONNX one
    (``rag.embeddings_int8``); a subclass sets ``_tokenizer``, ``_hidden`` and ``_batch``.
    Texts of a call are sorted by length before they are batched, so a batch pads (or
    packs) texts of close lengths, as sentence-transformers does.
    """

    _tokenizer: Any
    _hidden: int
    _batch: int

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed a batch of texts (unit vectors)."""
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (a unit vector)."""
        return self.encode([text])[0].tolist()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of ``texts``, one row each (float32)."""
        out = np.zeros((len(texts), self._hidden), np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._batch):
            rows = order[start : start + self._batch]
            out[rows] = self._forward([encodings[i].ids for i in rows])
        return out

    @abstractmethod
    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        """Unit vectors of a batch of token id sequences."""


class BertEmbeddings(TokenEncoder):
    """A sentence-transformers BERT model with mean pooling, run in numpy (see the module doc).

    Tokens of a batch are packed without padding: the dense layers run over all of them at
    once, attention over each text on its own. Vectors are normalised to unit length.
    """

    # Rows of the feed-forward layers computed at once: their 4x wider activations then
    # stay in the CPU's cache.
    _BLOCK = 512

    def __init__(self, model_path: Path, batch_size: int = 64) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        reason = self.unsupported(model_path)
        if reason is not None:
            raise ConfigError("RAG_EMBEDDING_MODEL", f"{model_path}: {reason}")
        config = json.loads((model_path / "config.json").read_text())
        self._layers = int(config["num_hidden_layers"])
        self._heads = int(config["num_attention_heads"])
        self._hidden = int(config["hidden_size"])
        self._eps = np.float32(config.get("layer_norm_eps", 1e-12))
        self._batch = batch_size
        raw = load_file(str(model_path / "model.safetensors"))
        prefix = "bert." if any(k.startswith("bert.") for k in raw) else ""
        w = {k[len(prefix) :]: v.astype(np.float32) for k, v in raw.items()}
        self._w: dict[str, np.ndarray] = {}
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            self._w[name] = w[f"embeddings.{name}.weight"]
        self._w["ln.weight"] = w["embeddings.LayerNorm.weight"]
        self._w["ln.bias"] = w["embeddings.LayerNorm.bias"]
        for i in range(self._layers):
            p = f"encoder.layer.{i}."
            # Weights transposed once (x @ W), and query/key/value fused into one product.
            parts = [f"{p}attention.self.{n}" for n in ("query", "key", "value")]
            self._w[f"{i}.qkv"] = np.ascontiguousarray(
                np.concatenate([w[f"{n}.weight"] for n in parts]).T
            )
            self._w[f"{i}.qkv.b"] = np.concatenate([w[f"{n}.bias"] for n in parts])
            for ours, theirs in (
                ("attn", "attention.output.dense"),
                ("up", "intermediate.dense"),
                ("down", "output.dense"),
            ):
                self._w[f"{i}.{ours}"] = np.ascontiguousarray(w[f"{p}{theirs}.weight"].T)
                self._w[f"{i}.{ours}.b"] = w[f"{p}{theirs}.bias"]
            for ours, theirs in (
                ("ln1", "attention.output.LayerNorm"),
                ("ln2", "output.LayerNorm"),
            ):
                self._w[f"{i}.{ours}"] = w[f"{p}{theirs}.weight"]
                self._w[f"{i}.{ours}.b"] = w[f"{p}{theirs}.bias"]
        window = max_seq_length(model_path) or int(config["max_position_embeddings"])
        self._tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self._tokenizer.enable_truncation(min(window, int(config["max_position_embeddings"])))
        self._tokenizer.no_padding()

    @staticmethod
    def unsupported(model_path: Path) -> str | None:
        """Why numpy cannot run the model in ``model_path``; None when it can."""
        modules = _json(model_path / "modules.json")
        config = _json(model_path / "config.json") or {}
        pooling = _json(model_path / "1_Pooling" / "config.json") or {}
        for name in ("model.safetensors", "tokenizer.json"):
            if not (model_path / name).is_file():
                return f"it has no {name}"
        if not modules:
            return "it has no modules.json"
        kinds = [m.get("type") for m in modules]
        if kinds not in (
            [_ST_TRANSFORMER, _ST_POOLING],
            [_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE],
        ):
            return f"its modules are {kinds}, not Transformer, Pooling[, Normalize]"
        if config.get("model_type") != "bert":
            return f"its model type is {config.get('model_type')!r}, not 'bert'"
        if config.get("hidden_act") != "gelu":
            return f"its activation is {config.get('hidden_act')!r}, not 'gelu'"
        if config.get("position_embedding_type", "absolute") != "absolute":
            return "its position embeddings are not absolute"
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            return f"its pooling is {modes}, not mean tokens"
        return None

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        w, heads, hidden = self._w, self._heads, self._hidden
        size = hidden // heads
        lengths = [len(s) for s in seqs]
        starts = np.cumsum([0, *lengths])
        ids = np.concatenate([np.asarray(s, np.int64) for s in seqs])
        positions = np.concatenate([np.arange(n) for n in lengths])
        x = w["word_embeddings"][ids] + w["position_embeddings"][positions]
        x += w["token_type_embeddings"][0]
        _layer_norm_(x, w["ln.weight"], w["ln.bias"], self._eps)
        scale = np.float32(1 / math.sqrt(size))
        block = min(self._BLOCK, len(x))
        z = np.empty((block, w["0.up"].shape[1]), np.float32)
        t = np.empty_like(z)
        for i in range(self._layers):
            qkv = x @ w[f"{i}.qkv"]
            qkv += w[f"{i}.qkv.b"]
            context = np.empty_like(x)
            for a, b in itertools.pairwise(starts.tolist()):
                n = int(b - a)
                q = qkv[a:b, :hidden].reshape(n, heads, size).transpose(1, 0, 2)
                k = qkv[a:b, hidden : 2 * hidden].reshape(n, heads, size).transpose(1, 2, 0)
                v = qkv[a:b, 2 * hidden :].reshape(n, heads, size).transpose(1, 0, 2)
                scores = q @ k
                scores *= scale
                scores -= scores.max(-1, keepdims=True)
                np.exp(scores, out=scores)
                scores /= scores.sum(-1, keepdims=True)
                context[a:b] = (scores @ v).transpose(1, 0, 2).reshape(n, hidden)
            h = context @ w[f"{i}.attn"]
            h += w[f"{i}.attn.b"]
            h += x
            _layer_norm_(h, w[f"{i}.ln1"], w[f"{i}.ln1.b"], self._eps)
            x = np.empty_like(h)
            for a in range(0, len(h), block):
                rows = h[a : a + block]
                m = len(rows)
                up = rows @ w[f"{i}.up"]
                up += w[f"{i}.up.b"]
                _gelu_(up, z[:m], t[:m])
                down = up @ w[f"{i}.down"]
                down += w[f"{i}.down.b"]
                down += rows
                x[a : a + m] = down
            _layer_norm_(x, w[f"{i}.ln2"], w[f"{i}.ln2.b"], self._eps)
        pooled = np.add.reduceat(x, starts[:-1], axis=0) / np.asarray(lengths, np.float32)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, np.float32(1e-12))
