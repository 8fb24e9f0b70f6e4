"""Job results as files: JSON Lines and CSV (the API's downloads and the Batch page's)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any


def results_jsonl(rows: list[dict[str, Any]]) -> str:
    """One JSON object a line, in the rows' order."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def results_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV: one column per field (first seen order); lists and objects as JSON."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return out.getvalue()
