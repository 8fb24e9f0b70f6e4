"""The embedding model id an index records: the model's name, and its variant when not fp32.

``all-MiniLM-L6-v2`` is the fp32 model (the id every index had before variants existed,
so those stay valid); ``all-MiniLM-L6-v2+onnx-int8`` is its int8 ONNX export. An index
built by one is refused by the other (``IndexMismatchError``). This module imports nothing
of ragchat, so the error module can read ids too.
"""

from __future__ import annotations

from typing import Final

DEFAULT_VARIANT: Final = "fp32"
# RAG_EMBEDDING_VARIANT value -> the suffix after "+" in the id.
_SUFFIXES: Final = {"int8": "onnx-int8"}


def model_id(model: str, variant: str = DEFAULT_VARIANT) -> str:
    """The id of ``model`` (RAG_EMBEDDING_MODEL) run as ``variant`` (RAG_EMBEDDING_VARIANT)."""
    if variant == DEFAULT_VARIANT:
        return model
    return f"{model}+{_SUFFIXES[variant]}"


def split_model_id(model_id: str) -> tuple[str, str]:
    """``(model, variant)`` of an id; an unknown suffix is part of the model's name."""
    model, sep, suffix = model_id.rpartition("+")
    for variant, known in _SUFFIXES.items():
        if sep and suffix == known:
            return model, variant
    return model_id, DEFAULT_VARIANT
