"""Batch inputs: rows of questions from a list, a JSONL file or a CSV file, checked.

A row is ``{"question": str, "sources"?: [str], "pages"?: [int], "reference_answer"?:
str}``. A bad row is reported by its line (1-based: the file's line, or the list
position) with the field at fault, and skipped; the other rows still run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from rag.errors import InvalidInputError

MAX_QUESTION_CHARS = 4000


@dataclass
class ParsedRows:
    """The usable rows by input position (0-based, bad rows counted), and the problems."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    seen: int = 0  # rows read, good and bad


def check_row(data: Any) -> tuple[dict[str, Any] | None, str, str]:
    """A clean row, or None with the field at fault and why."""
    if not isinstance(data, dict):
        return None, "row", "must be an object with a question"
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        return None, "question", "must be a non-empty string"
    if len(question) > MAX_QUESTION_CHARS:
        return None, "question", f"is longer than {MAX_QUESTION_CHARS} characters"
    row: dict[str, Any] = {"question": question.strip()}
    sources = data.get("sources")
    if sources is not None:
        if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
            return None, "sources", "must be a list of file names"
        if sources:
            row["sources"] = sources
    pages = data.get("pages")
    if pages is not None:
        if not isinstance(pages, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in pages
        ):
            return None, "pages", "must be a list of 1-based page numbers"
        if pages:
            row["pages"] = pages
    reference = data.get("reference_answer")
    if reference is not None:
        if not isinstance(reference, str):
            return None, "reference_answer", "must be a string"
        row["reference_answer"] = reference
    return row, "", ""


def check_rows(items: list[Any]) -> ParsedRows:
    """Check rows given as a list (line = position + 1)."""
    parsed = ParsedRows()
    for n, data in enumerate(items, 1):
        _add(parsed, n, data)
    return parsed


def _add(parsed: ParsedRows, line: int, data: Any) -> None:
    row, name, reason = check_row(data)
    if row is None:
        _bad(parsed, line, name, reason)
    else:
        parsed.rows[parsed.seen] = row
        parsed.seen += 1


def _bad(parsed: ParsedRows, line: int, name: str, reason: str) -> None:
    parsed.errors.append({"line": line, "field": name, "error": reason})
    parsed.seen += 1


def parse_file(name: str, data: bytes) -> ParsedRows:
    """Rows of a ``.jsonl``/``.json`` or ``.csv`` file.

    Raises:
        InvalidInputError: ``file``: unknown format, not UTF-8, or not JSON/CSV at all.
    """
    lowered = name.lower()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("file", f"{name} is not UTF-8 text ({exc.reason})") from exc
    if lowered.endswith((".jsonl", ".json")):
        return _parse_json(name, text)
    if lowered.endswith(".csv"):
        return _parse_csv(name, text)
    raise InvalidInputError("file", f"{name}: use a .jsonl, .json or .csv file")


def _parse_json(name: str, text: str) -> ParsedRows:
    stripped = text.strip()
    if stripped.startswith("["):  # one JSON array of rows
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidInputError("file", f"{name} is not valid JSON: {exc.msg}") from exc
        if not isinstance(items, list):
            raise InvalidInputError("file", f"{name}: expected JSON lines or an array of rows")
        return check_rows(items)
    parsed = ParsedRows()
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            _bad(parsed, n, "line", f"not JSON: {exc.msg}")
            continue
        _add(parsed, n, item)
    return parsed


def _split(cell: str | None) -> list[str]:
    return [p.strip() for p in (cell or "").split(";") if p.strip()]


def _parse_csv(name: str, text: str) -> ParsedRows:
    try:
        reader = csv.DictReader(io.StringIO(text))
        fields = reader.fieldnames or []
    except csv.Error as exc:
        raise InvalidInputError("file", f"{name} is not valid CSV: {exc}") from exc
    if "question" not in [f.strip().lower() for f in fields]:
        raise InvalidInputError("file", f'{name} has no "question" column')
    parsed = ParsedRows()
    try:
        for record in reader:
            line = reader.line_num
            cells = {(k or "").strip().lower(): v for k, v in record.items()}
            if not any((v or "").strip() for v in cells.values() if isinstance(v, str)):
                continue
            item: dict[str, Any] = {"question": cells.get("question") or ""}
            if sources := _split(cells.get("sources")):
                item["sources"] = sources
            if pages := _split(cells.get("pages")):
                try:
                    item["pages"] = [int(p) for p in pages]
                except ValueError:
                    _bad(parsed, line, "pages", "must be numbers separated by ';'")
                    continue
            if cells.get("reference_answer"):
                item["reference_answer"] = cells["reference_answer"]
            _add(parsed, line, item)
    except csv.Error as exc:
        raise InvalidInputError("file", f"{name} is not valid CSV: {exc}") from exc
    return parsed
