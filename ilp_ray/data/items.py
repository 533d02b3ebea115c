"""Read ready multiple-choice items (``ilp score --items``): JSONL rows ``{id, question, options, answer}``.

Validated whole before any scoring, with the same JSONL handling and error locations as SFT files
(``read_sft``): bad JSON, invalid UTF-8, a missing field, wrong types, a duplicate id, an answer
out of range, and an empty file each raise a ``DataError`` naming the file, line and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ilp_ray.data.sources import jsonl_rows
from ilp_ray.errors import DataError
from ilp_ray.records import McItem


def read_mc_items(path: str | Path) -> list[McItem]:
    """Read and validate a JSONL file of MC items; returns them in file order."""
    name = str(path)
    items: list[McItem] = []
    errors: list[DataError] = []
    seen: dict[str, int] = {}
    for line, row in jsonl_rows(name):
        if isinstance(row, DataError):
            errors.append(row)
            continue
        problem = _check(row)
        if problem:
            errors.append(DataError(problem[1], file=name, line=line, field=problem[0]))
            continue
        item_id = str(row["id"])
        if item_id in seen:
            errors.append(DataError(f"duplicate id {item_id!r}, first on line {seen[item_id]}",
                                    file=name, line=line, field="id"))
            continue
        seen[item_id] = line
        items.append(McItem(id=item_id, question=row["question"], options=tuple(row["options"]),
                            answer=row["answer"], position=len(items)))
    if errors:
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        e = errors[0]
        raise DataError(e.message + more, file=e.file, line=e.line, field=e.field)
    if not items:
        raise DataError("no items in file", file=name)
    return items


def _check(row: dict[str, Any]) -> tuple[str, str] | None:
    """The first problem of a row as (field, message), or None."""
    for f in ("id", "question", "options", "answer"):
        if f not in row:
            return f, "missing required field"
    rid = row["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or (isinstance(rid, str) and not rid.strip()):
        return "id", f"expected a non-empty string or an integer, got {rid!r}"
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "question", "expected a non-empty string"
    opts = row["options"]
    if not isinstance(opts, list) or len(opts) < 2:
        return "options", "expected a list of at least two strings"
    for i, o in enumerate(opts):
        if not isinstance(o, str) or not o.strip():
            return "options", f"option {i} must be a non-empty string, got {o!r}"
    ans = row["answer"]
    if isinstance(ans, bool) or not isinstance(ans, int):
        return "answer", f"expected an integer index into options, got {ans!r}"
    if not 0 <= ans < len(opts):
        return "answer", f"index {ans} is out of range for {len(opts)} options"
    return None
