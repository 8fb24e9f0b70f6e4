"""The model price table (``RAG_MODEL_PRICES``) that cost estimates use."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens read (prompt) and written (completion)."""

    prompt: float
    completion: float


def parse_prices(text: str) -> dict[str, Price]:
    """The price table of ``RAG_MODEL_PRICES``: ``{"model": [prompt, completion], ...}``.

    Prices are dollars per million tokens. ``"*"`` prices every model not named.

    Raises:
        ValueError: the text is not such a table (the message says what is wrong).
    """
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(data, dict):
        raise ValueError('expected an object: {"model": [prompt, completion], ...}')  # noqa: TRY004
    out = {}
    for model, pair in data.items():
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(p, int | float) and p >= 0 for p in pair)
        ):
            raise ValueError(
                f"{model!r}: expected [prompt, completion] dollars per million tokens, got {pair!r}"
            )
        out[str(model)] = Price(float(pair[0]), float(pair[1]))
    return out


def cost_of(
    prices: Mapping[str, Price], model: str, prompt_tokens: int, completion_tokens: int
) -> float | None:
    """Estimated dollars of one answer, or None when the table prices no such model."""
    price = prices.get(model) or prices.get("*")
    if price is None:
        return None
    return (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1e6


def tokens_by_model(tokens: Mapping[str, Any], model: str) -> dict[str, tuple[int, int]]:
    """Prompt and completion tokens of each model that worked on an answer.

    ``tokens`` is ``Answer.tokens``: its ``by_model`` split (a small model condensing,
    another answering) when there is one, else all of them are ``model``'s.
    """
    split = tokens.get("by_model") or {}
    if split:
        return {
            str(name): (int(used.get("prompt", 0) or 0), int(used.get("completion", 0) or 0))
            for name, used in split.items()
        }
    return {model: (int(tokens.get("prompt", 0) or 0), int(tokens.get("completion", 0) or 0))}
