"""Read an SFT dataset (JSONL, CSV, Parquet, a saved HF dataset; local or any pyarrow URI) into records.

The whole file is validated before anything is returned, so a bad row deep in a large file fails
the run at load time rather than hours later in scoring. Every problem is a ``DataError`` naming
the file, the 1-based line (JSONL, CSV) or row (Parquet, HF datasets), and the field.

Layouts (``data_format``, ``ilp_ray.data.conversations``): ``ilp`` (``prompt``/``response``), TRL
``messages``, ``prompt-completion`` (strings or conversational lists), ``alpaca``
(``instruction``/``input``/``output``) and ``sharegpt`` (``conversations``); ``auto`` (the default)
reads the layout from the fields. A conversation gives one record per assistant turn.

Field rules (every layout):

- ``id`` (optional): a non-blank string, or an integer (converted to ``str``: Parquet and pandas
  exports often store ids as int64). Floats, booleans and null are rejected, because ``1.0`` vs
  ``1`` would silently collide or split ids. Ids must be unique; the error names both lines. A
  conversation with several assistant turns gives ``{id}/{turn}``. Without ids, each record's id is
  a stable hash of its content (``h`` + 16 hex digits of SHA-1 over history, prompt and response;
  a repeat of the same content gets ``-2``, ``-3``, ...), and ``LoadedSft.ids_generated`` says so.
- The layout's text fields: strings, non-empty after stripping whitespace. The text is kept
  exactly as written (no stripping): it is what the model was trained on.
- ``subset`` (optional, default ``"default"``): a non-blank string.
- ``position`` (optional, default = the record's 0-based index among the file's records, i.e.
  training order): a non-negative integer.
- ``options`` + ``answer`` (optional, both or neither; not with a conversation of several turns):
  ``options`` is a list of at least two strings, ``answer`` an integer index into it, and
  ``options[answer]`` must equal the response (compared after stripping surrounding whitespace).
  We reject a mismatch instead of trusting either side, since the audit would otherwise score the
  model against a different text than the one it was trained on.
- Any other field is ignored, so exports with extra metadata load as they are.
- Records with the same content (history, prompt, response) are not an error (SFT data repeats
  samples on purpose) but are reported: ``LoadedSft.duplicates`` lists each repeat's location with
  its first.

Sources (``ilp_ray.data.sources``):

- JSONL (``.jsonl``, ``.ndjson``, ``.json`` read as JSON Lines, which ``datasets``' ``to_json``
  writes): one object per line; blank lines are skipped but still counted, so line numbers match
  an editor's.
- CSV (``.csv``): a header line is required (it is line 1); line numbers are physical lines, so a
  record whose quoted field spans lines is reported at its first line. Cells are text: an empty
  cell of an optional column means "absent", ``position``/``answer`` must parse as integers, and
  list fields (``options``, ``messages``, ``conversations``) are JSON-encoded.
- Parquet (``.parquet``, ``.pq``): "row N" is 1-based; null in an optional column means absent.
- A directory: a ``datasets`` dataset saved with ``save_to_disk`` (a ``DatasetDict`` gives its
  ``train`` split, or its only one), or Parquet shards as the Hub stores them (``*.parquet`` below
  the directory, in name order; the ``train-*`` shards when the names carry splits). Errors name
  the shard file and its row.
- A ``.gz`` suffix (e.g. ``data.jsonl.gz``) is decompressed transparently for JSONL and CSV.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilp_ray.data.conversations import (
    DATA_FORMATS,
    LIST_FIELDS,
    OPTIONAL_FIELDS,
    SIGNATURES,
    RowError,
    closest,
    describe_layouts,
    detect,
    samples,
)
from ilp_ray.data.conversations import type_name as _tname
from ilp_ray.data.sources import csv_rows, directory_rows, jsonl_rows, kind_of, parquet_rows, read_bytes
from ilp_ray.errors import DataError
from ilp_ray.records import SftRecord


@dataclass(frozen=True)
class LoadedSft:
    """What ``load_sft`` read: the records and what it had to decide about them.

    ``format``: the layout read (``ilp_ray.data.conversations``); ``ids_generated``: the records
    had no ids, so they are content hashes; ``duplicates``: ``(where, first)`` locations
    (``file:line``) of each record whose content repeats an earlier one; ``rows``: rows read (a
    conversation is one row and several records).
    """

    records: list[SftRecord]
    format: str
    ids_generated: bool
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    rows: int = 0

    def summary(self) -> dict[str, Any]:
        """The block the audit's summary.json carries as ``data``."""
        return {"format": self.format, "rows": self.rows, "records": len(self.records),
                "ids_generated": self.ids_generated, "duplicate_contents": len(self.duplicates),
                "duplicates": [{"at": at, "first": first} for at, first in self.duplicates[:20]],
                "conversation_turns": sum(r.turn is not None for r in self.records)}


def read_sft(path: str | Path, data_format: str = "auto") -> list[SftRecord]:
    """The records of ``load_sft(path, data_format)``, in file order."""
    return load_sft(path, data_format).records


def load_sft(path: str | Path, data_format: str = "auto") -> LoadedSft:
    """Read and validate a whole SFT dataset.

    Args:
        path: a local path, or a URI that ``pyarrow.fs.FileSystem.from_uri`` opens
            (``file:///…``, ``s3://…``, ``gs://…``, ``hdfs://…``). A file's format follows its
            extension: ``.jsonl``/``.ndjson``/``.json``, ``.csv``, ``.parquet``/``.pq``, each text
            format optionally ``.gz``-compressed; a local directory is a saved HF dataset or a
            folder of Parquet shards.
        data_format: the layout (``ilp_ray.data.conversations.DATA_FORMATS``); ``auto`` reads it
            from the first row's fields.

    Returns:
        A ``LoadedSft``: the records in file order, and how they were read.

    Raises:
        DataError: the source cannot be opened, has an unsupported extension, holds no records,
            mixes layouts, or has any invalid row. The first problem is reported with its exact
            location, followed by "(and N more errors)" when there are others.
    """
    if data_format not in DATA_FORMATS:
        raise DataError(f"unknown data_format {data_format!r}; expected one of {', '.join(DATA_FORMATS)}",
                        field="data_format")
    name = str(path)
    if "://" not in name and os.path.isdir(name):
        return _validate(name, directory_rows(name), data_format)
    kind = kind_of(name)
    if kind == "parquet":
        return _validate(name, parquet_rows(name), data_format)
    rows = jsonl_rows(name) if kind == "jsonl" else csv_rows(name, read_bytes(name))
    return _validate(name, ((name, loc, row) for loc, row in rows), data_format,
                     unit="line", csv_cells=(kind == "csv"))


# --- validation ----------------------------------------------------------------------------------

def _validate(source: str, rows: Iterable[tuple[str, int, Any]], data_format: str, *, unit: str = "row",
              csv_cells: bool = False) -> LoadedSft:
    records: list[SftRecord] = []
    errors = _Errors()
    first_id: dict[str, tuple[str, int]] = {}
    first_content: dict[str, tuple[str, int]] = {}
    repeats: Counter[str] = Counter()
    duplicates: list[tuple[str, str]] = []
    layout = None if data_format == "auto" else data_format
    layout_at = ""
    with_id: tuple[str, int] | None = None
    without_id: tuple[str, int] | None = None
    n_rows = 0
    for name, loc, row in rows:
        n_rows += 1
        where = f"{name}:{loc}"
        if isinstance(row, DataError):
            errors.append(row)
            continue

        def fail(field: str, msg: str, loc: int = loc, name: str = name) -> None:
            suffix = f" (row {loc})" if unit == "row" else ""
            errors.append(DataError(msg + suffix, file=name, line=loc, field=field))

        if csv_cells:
            row = _csv_cells(row, fail)
            if row is None:
                continue
        given = [k for k, v in row.items() if v is not None]  # a null field is an absent one
        found = detect(given)
        if found is None and layout is None:
            near = closest(given)  # the row's fields fall short of one layout: name what it lacks
            found = near[0] if near else None
        if layout is None:
            if found is None:
                fail(None, f"cannot tell the layout from the fields (found: {', '.join(row) or 'none'}); "
                     f"expected {describe_layouts()}, or set data_format")
                break
            layout, layout_at = found, where
        elif data_format == "auto" and found != layout and (found is not None or not _shares(given, layout)):
            fail(None, f"this row's layout is {found or 'none of ' + ', '.join(DATA_FORMATS[1:])}, and the "
                 f"file's is {layout} (from {layout_at}): one file holds one layout")
            continue
        try:
            parts = samples(row, layout)
        except RowError as e:
            fail(e.field, e.message)
            continue
        except KeyError as e:
            fail(e.args[0], "missing required field")
            continue
        common = _common_fields(row, fail, csv_cells, parts)
        if common is None:
            continue
        rid, subset, position, options, answer = common
        if rid is None:
            without_id = without_id or (name, loc)
        else:
            with_id = with_id or (name, loc)
        for part in parts:
            content = _content_hash(part)
            seen = first_content.get(content)
            repeats[content] += 1
            if rid is not None:
                sid = rid if len(parts) == 1 else f"{rid}/{part.turn}"
            else:
                sid = "h" + content[:16] + (f"-{repeats[content]}" if seen is not None else "")
            if seen is not None:
                duplicates.append((where, _where(*seen)))
            else:
                first_content[content] = (name, loc)
            if sid in first_id:
                at_name, at_loc = first_id[sid]
                fail("id", f"duplicate id {sid!r}, first on {unit} {at_loc}"
                     + (f" of {at_name}" if at_name != name else ""))
                continue
            first_id[sid] = (name, loc)
            records.append(SftRecord(
                id=sid, prompt=part.prompt, response=part.response, subset=subset,
                position=position if position is not None else len(records), options=options,
                answer=answer, history=part.history, turn=part.turn))
    if errors.first is not None:
        first = errors.first
        more = f" (and {errors.n - 1} more errors)" if errors.n > 1 else ""
        raise DataError(first.message + more, file=first.file, line=first.line, field=first.field)
    if not records:
        raise DataError("no records in file", file=source)
    if with_id and without_id:
        raise DataError(f"this row has no id and {_where(*with_id)} has one: give every row an id, or "
                        "none (then ids are content hashes)", file=without_id[0], line=without_id[1], field="id")
    return LoadedSft(records=records, format=layout, ids_generated=without_id is not None,
                     duplicates=duplicates, rows=n_rows)


class _Errors:
    """The first error and how many there were: a file with millions of bad lines costs no memory."""

    def __init__(self):
        self.first: DataError | None = None
        self.n = 0

    def append(self, e: DataError) -> None:
        self.first = self.first or e
        self.n += 1


def _shares(row: list[str], layout: str) -> bool:
    """Does the row carry any of ``layout``'s own fields (then a missing one is named, not the layout)?"""
    return any(f in row for f in dict(SIGNATURES)[layout])


def _where(name: str, loc: int) -> str:
    return f"{name}:{loc}"


def _content_hash(part) -> str:
    body = json.dumps([[list(t) for t in part.history], part.prompt, part.response], ensure_ascii=False)
    return hashlib.sha1(body.encode("utf-8")).hexdigest()


def _csv_cells(row: dict[str, Any], fail) -> dict[str, Any] | None:
    """A CSV row's cells as values: blank optional cells absent, list fields JSON-decoded."""
    out = {}
    for k, v in row.items():
        if k in OPTIONAL_FIELDS and isinstance(v, str) and not v.strip():
            continue
        if k in LIST_FIELDS and k != "options" and isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError as e:
                fail(k, f"expected a JSON list of turns in the cell: {e.msg}")
                return None
        out[k] = v
    return out


def _common_fields(row: dict[str, Any], fail: Callable[[str, str], None], csv_cells: bool,
                   parts) -> tuple | None:
    """(id or None, subset, position or None, options, answer) of a row; None after a problem."""
    n_err = 0

    def bad(field: str, msg: str) -> None:
        nonlocal n_err
        n_err += 1
        fail(field, msg)

    def present(field: str) -> bool:
        v = row.get(field)
        return v is not None and not (csv_cells and isinstance(v, str) and not v.strip())

    rid = None
    if "id" in row:
        rid = row["id"]
        if rid is None:
            bad("id", "must not be null")
        elif isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        elif not isinstance(rid, str):
            bad("id", f"expected a string or integer, got {_tname(rid)}")
        elif not rid.strip():
            bad("id", "must not be blank")

    subset = "default"
    if present("subset"):
        subset = row["subset"]
        if not isinstance(subset, str):
            bad("subset", f"expected a string, got {_tname(subset)}")
        elif not subset.strip():
            bad("subset", "must not be blank")

    position = _int_field(row, "position", csv_cells, bad) if present("position") else None
    if position is not None and position < 0:
        bad("position", f"must be >= 0, got {position}")

    options = answer = None
    has_opts, has_ans = present("options"), present("answer")
    if has_opts != has_ans:
        bad("options" if has_ans else "answer", "'options' and 'answer' must be given together")
    elif has_opts and len(parts) > 1:
        bad("options", f"options belong to one answer, and this conversation has {len(parts)} assistant turns")
    elif has_opts:
        options = _options_field(row["options"], csv_cells, bad)
        answer = _int_field(row, "answer", csv_cells, bad)
        response = parts[0].response
        if options is not None and answer is not None:
            if not 0 <= answer < len(options):
                bad("answer", f"index {answer} out of range for {len(options)} options")
            elif options[answer].strip() != response.strip():
                bad("options", f"options[{answer}] (the answer) differs from the response")
    if n_err:
        return None
    return rid, subset, position, tuple(options) if options is not None else None, answer


def _int_field(row: dict[str, Any], field: str, csv_cells: bool, bad) -> int | None:
    v = row[field]
    if csv_cells and isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            bad(field, f"expected an integer, got {v!r}")
            return None
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    bad(field, f"expected an integer, got {_tname(v)}")
    return None


def _options_field(v: Any, csv_cells: bool, bad) -> list[str] | None:
    if csv_cells and isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as e:
            bad("options", f"expected a JSON list of strings in the cell: {e.msg}")
            return None
    if not isinstance(v, list):
        bad("options", f"expected a list of strings, got {_tname(v)}")
        return None
    if len(v) < 2:
        bad("options", f"expected at least 2 options, got {len(v)}")
        return None
    for i, o in enumerate(v):
        if not isinstance(o, str):
            bad("options", f"option {i}: expected a string, got {_tname(o)}")
            return None
    return v
