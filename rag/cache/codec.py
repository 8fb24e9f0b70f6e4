"""A finished answer as JSON and back, for the response cache (never pickled).

What is kept is what a later asker is shown: the text, the citations with their passages,
the numbered sources, the prompt version and the model that wrote it. The question is
not kept (the asker's own replaces it), nor the timings and tokens (a served answer has
its own).
"""

from __future__ import annotations

import json
from typing import Any

from rag.chain import Answer
from rag.citations import Citation, Source

FORMAT = 1


def _source_json(source: Source) -> dict[str, Any]:
    return {
        "n": source.n,
        "source": source.source,
        "page": source.page,
        "chunk_id": source.chunk_id,
        "text": source.text,
        "heading": source.heading,
        "relevance": source.relevance,
        "title": source.title,
        "flags": list(source.flags),
    }


def _source(data: dict[str, Any]) -> Source:
    return Source(
        n=int(data["n"]),
        source=str(data["source"]),
        page=data.get("page"),
        chunk_id=str(data["chunk_id"]),
        text=str(data["text"]),
        heading=data.get("heading"),
        relevance=data.get("relevance"),
        title=data.get("title"),
        flags=tuple(data.get("flags") or ()),
    )


def dump_answer(answer: Answer) -> str:
    """The parts of ``answer`` a later asker is shown, as a JSON string."""
    return json.dumps(
        {
            "format": FORMAT,
            "text": answer.text,
            "citations": [
                {
                    "n": c.n,
                    "source": _source_json(c.source),
                    "support": c.support,
                    "inferred": c.inferred,
                }
                for c in answer.citations
            ],
            "sources": [_source_json(s) for s in answer.sources],
            "prompt_version": answer.prompt_version,
            "model": answer.model,
        },
        ensure_ascii=False,
    )


def load_answer(raw: str | bytes, question: str) -> Answer:
    """The stored answer as an answer to ``question``, marked as served from the cache.

    It spent no tokens; its timings are those of serving it (set when it is served).

    Raises:
        ValueError: ``raw`` is not an answer this module wrote (another format, damaged).
    """
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"cache format {data.get('format')!r}, not {FORMAT}")
        return Answer(
            question=question,
            standalone=question,
            text=str(data["text"]),
            citations=[
                Citation(
                    int(c["n"]),
                    _source(c["source"]),
                    float(c.get("support", 0.0)),
                    bool(c.get("inferred", False)),
                )
                for c in data["citations"]
            ],
            sources=[_source(s) for s in data["sources"]],
            prompt_version=str(data["prompt_version"]),
            model=str(data["model"]),
            timings={},
            tokens={"prompt": 0, "completion": 0, "estimated": False},
            abstained=False,
            served_from="cache",
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a cached answer: {exc!r}") from exc
