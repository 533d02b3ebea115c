"""Read an SFT dataset (JSONL, CSV or Parquet; local or any pyarrow filesystem URI) into records.

The whole file is validated before anything is returned, so a bad row deep in a large file fails
the run at load time rather than hours later in scoring. Every problem is a ``DataError`` naming
the file, the 1-based line (JSONL, CSV) or row (Parquet), and the field.

Field rules (all formats):

- ``id`` (required): a non-blank string, or an integer (converted to ``str``: Parquet and pandas
  exports often store ids as int64). Floats, booleans and null are rejected, because ``1.0`` vs
  ``1`` would silently collide or split ids. Ids must be unique; the error names both lines.
- ``prompt``, ``response`` (required): strings, non-empty after stripping whitespace. The text is
  kept exactly as written (no stripping): it is what the model was trained on.
- ``subset`` (optional, default ``"default"``): a non-blank string.
- ``position`` (optional, default = the record's 0-based index among the file's records, i.e.
  training order): a non-negative integer.
- ``options`` + ``answer`` (optional, both or neither): ``options`` is a list of at least two
  strings, ``answer`` an integer index into it, and ``options[answer]`` must equal ``response``
  (compared after stripping surrounding whitespace). We reject a mismatch instead of trusting
  either side, since the audit would otherwise score the model against a different text than
  the one it was trained on.
- Any other field is ignored, so exports with extra metadata load as they are.

Format specifics:

- JSONL (``.jsonl``, ``.ndjson``, ``.json`` read as JSON Lines): one object per line; blank lines
  are skipped but still counted, so line numbers match an editor's.
- CSV (``.csv``): a header line is required (it is line 1); line numbers are physical lines, so a
  record whose quoted field spans lines is reported at its first line. Cells are text: an empty
  cell of an optional column means "absent", ``position``/``answer`` must parse as integers, and
  ``options`` is a JSON-encoded list of strings.
- Parquet (``.parquet``, ``.pq``): "row N" is 1-based; null in an optional column means absent.
- A ``.gz`` suffix (e.g. ``data.jsonl.gz``) is decompressed transparently for JSONL and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ilp_ray.errors import DataError
from ilp_ray.records import SftRecord

REQUIRED = ("id", "prompt", "response")
_JSONL = (".jsonl", ".ndjson", ".json")
_CSV = (".csv",)
_PARQUET = (".parquet", ".pq")
_COMPRESSED = (".gz", ".bz2", ".zst")


def read_sft(path: str | Path) -> list[SftRecord]:
    """Read and validate a whole SFT file.

    Args:
        path: a local path, or a URI that ``pyarrow.fs.FileSystem.from_uri`` opens
            (``file:///…``, ``s3://…``, ``gs://…``, ``hdfs://…``). The format follows the
            extension: ``.jsonl``/``.ndjson``/``.json``, ``.csv``, ``.parquet``/``.pq``, each text
            format optionally ``.gz``-compressed.

    Returns:
        The records in file order.

    Raises:
        DataError: the file cannot be opened, has an unsupported extension, holds no records, or
            has any invalid row. The first problem is reported with its exact location, followed
            by "(and N more errors)" when there are others.
    """
    name = str(path)
    kind = _kind(name)
    if kind == "parquet":
        rows = _parquet_rows(name)
    else:
        data = _read_bytes(name)
        rows = _jsonl_rows(name, data) if kind == "jsonl" else _csv_rows(name, data)
    return _validate(name, rows, unit="row" if kind == "parquet" else "line", csv_cells=(kind == "csv"))


# --- opening -------------------------------------------------------------------------------------

def _kind(name: str) -> str:
    base = name.lower()
    for ext in _COMPRESSED:
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    if base.endswith(_JSONL):
        return "jsonl"
    if base.endswith(_CSV):
        return "csv"
    if base.endswith(_PARQUET):
        if base != name.lower():
            raise DataError("compressed Parquet files are not supported (Parquet compresses "
                            "internally); decompress the file first", file=name)
        return "parquet"
    raise DataError(f"unsupported file type; expected one of {', '.join(_JSONL + _CSV + _PARQUET)} "
                    "(text formats optionally .gz)", file=name)


def _open_fs(name: str):
    """Return (filesystem, path) for a local path or a URI."""
    from pyarrow import fs

    # Plain paths go to LocalFileSystem directly: from_uri rejects relative paths, and a local
    # name containing ':' would be misread as a scheme.
    if "://" not in name:
        return fs.LocalFileSystem(), os.path.abspath(name)
    try:
        return fs.FileSystem.from_uri(name)
    except Exception as e:  # pyarrow raises ArrowInvalid/ArrowNotImplemented for bad schemes
        raise DataError(f"cannot open URI: {e}", file=name) from e


def _read_bytes(name: str) -> bytes:
    filesystem, p = _open_fs(name)
    try:
        # compression="detect" decompresses by extension (.gz, .bz2, .zst).
        with filesystem.open_input_stream(p, compression="detect") as f:
            return f.read()
    except FileNotFoundError as e:
        raise DataError("file not found", file=name) from e
    except OSError as e:
        raise DataError(f"cannot read file: {e}", file=name) from e


# --- row sources: each yields (line_or_row, dict | DataError) ----------------------------------

Row = tuple[int, "dict[str, Any] | DataError"]


def _jsonl_rows(name: str, data: bytes) -> Iterator[Row]:
    offset = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM written by some editors
            raw, start = raw[3:], start + 3
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, DataError(f"invalid UTF-8 at byte offset {start + e.start} "
                                    f"(column {e.start + 1} of the line)", file=name, line=lineno)
            continue
        if not text.strip():
            continue
        if lineno == 1 and text.strip() == "[":
            yield lineno, DataError("this looks like a JSON array; expected JSON Lines "
                                    "(one object per line)", file=name, line=lineno)
            return
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=name, line=lineno)
            continue
        if not isinstance(obj, dict):
            yield lineno, DataError(f"expected a JSON object, got {_tname(obj)}", file=name, line=lineno)
            continue
        yield lineno, obj


def _csv_rows(name: str, data: bytes) -> Iterator[Row]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # The BOM, if any, is 3 bytes before the text; e.start counts from the start of the bytes.
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"invalid UTF-8 at byte offset {e.start}", file=name, line=line) from e
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # long responses exceed the 128 KiB default
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            raise DataError("empty file: no header line", file=name, line=1) from None
        except csv.Error as e:
            raise DataError(f"malformed CSV header: {e}", file=name, line=1) from e
        header = [h.strip() for h in header]
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise DataError(f"duplicate column(s) in the header: {', '.join(dup)}", file=name, line=1)
        missing = [f for f in REQUIRED if f not in header]
        if missing:
            raise DataError(f"missing column in the header (found: {', '.join(header)})",
                            file=name, line=1, field=missing[0])
        while True:
            start = reader.line_num + 1  # physical line where the next record begins
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield start, DataError(f"malformed CSV: {e}", file=name, line=start)
                return
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                yield start, DataError(f"expected {len(header)} cells as in the header, got {len(cells)}",
                                       file=name, line=start)
                continue
            yield start, dict(zip(header, cells))
    finally:
        csv.field_size_limit(old_limit)


def _parquet_rows(name: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    filesystem, p = _open_fs(name)
    try:
        table = pq.read_table(p, filesystem=filesystem)
    except FileNotFoundError as e:
        raise DataError("file not found", file=name) from e
    except Exception as e:  # ArrowInvalid for a corrupt or non-Parquet file
        raise DataError(f"cannot read Parquet file: {e}", file=name) from e
    cols = table.column_names
    missing = [f for f in REQUIRED if f not in cols]
    if missing:
        raise DataError(f"missing column (found: {', '.join(cols)})", file=name, field=missing[0])
    wanted = [c for c in (*REQUIRED, "subset", "position", "options", "answer") if c in cols]
    data = {c: table.column(c).to_pylist() for c in wanted}
    return ((i + 1, {c: data[c][i] for c in wanted}) for i in range(table.num_rows))


# --- validation ----------------------------------------------------------------------------------

def _validate(name: str, rows: Iterable[Row], *, unit: str, csv_cells: bool) -> list[SftRecord]:
    records: list[SftRecord] = []
    errors: list[DataError] = []
    first_seen: dict[str, int] = {}
    for loc, row in rows:
        if isinstance(row, DataError):
            errors.append(row)
            continue

        def fail(field: str, msg: str, loc: int = loc) -> None:
            suffix = f" (row {loc})" if unit == "row" else ""
            errors.append(DataError(msg + suffix, file=name, line=loc, field=field))

        rec = _to_record(row, len(records), fail, csv_cells)
        if rec is None:
            continue
        if rec.id in first_seen:
            fail("id", f"duplicate id {rec.id!r}, first on {unit} {first_seen[rec.id]}")
            continue
        first_seen[rec.id] = loc
        records.append(rec)
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        raise DataError(first.message + more, file=first.file, line=first.line, field=first.field)
    if not records:
        raise DataError("no records in file", file=name)
    return records


def _to_record(row: dict[str, Any], index: int, fail: Callable[[str, str], None],
               csv_cells: bool) -> SftRecord | None:
    """Check one row's fields; report each problem through ``fail`` and return None if any."""
    n_err = 0

    def bad(field: str, msg: str) -> None:
        nonlocal n_err
        n_err += 1
        fail(field, msg)

    def present(field: str) -> bool:
        v = row.get(field)
        return v is not None and not (csv_cells and isinstance(v, str) and not v.strip())

    for field in REQUIRED:
        if field not in row:
            bad(field, "missing required field")
        elif row[field] is None:
            bad(field, "must not be null")
    if n_err:
        return None

    rid = row["id"]
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    elif not isinstance(rid, str):
        bad("id", f"expected a string or integer, got {_tname(rid)}")
    elif not rid.strip():
        bad("id", "must not be blank")
    for field in ("prompt", "response"):
        v = row[field]
        if not isinstance(v, str):
            bad(field, f"expected a string, got {_tname(v)}")
        elif not v.strip():
            bad(field, "must not be empty")

    subset = "default"
    if present("subset"):
        subset = row["subset"]
        if not isinstance(subset, str):
            bad("subset", f"expected a string, got {_tname(subset)}")
        elif not subset.strip():
            bad("subset", "must not be blank")

    position = _int_field(row, "position", csv_cells, bad) if present("position") else index
    if position is not None and position < 0:
        bad("position", f"must be >= 0, got {position}")

    options = answer = None
    has_opts, has_ans = present("options"), present("answer")
    if has_opts != has_ans:
        bad("options" if has_ans else "answer", "'options' and 'answer' must be given together")
    elif has_opts:
        options = _options_field(row["options"], csv_cells, bad)
        answer = _int_field(row, "answer", csv_cells, bad)
        if options is not None and answer is not None:
            if not 0 <= answer < len(options):
                bad("answer", f"index {answer} out of range for {len(options)} options")
            elif isinstance(row["response"], str) and options[answer].strip() != row["response"].strip():
                bad("options", f"options[{answer}] (the answer) differs from the response")
    if n_err:
        return None
    return SftRecord(id=rid, prompt=row["prompt"], response=row["response"], subset=subset,
                     position=position, options=tuple(options) if options is not None else None,
                     answer=answer)


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


def _tname(v: Any) -> str:
    """JSON-ish type name for messages ("number", not "float64")."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__
