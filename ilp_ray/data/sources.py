"""Where SFT rows come from: files (JSONL, CSV, Parquet; local or any pyarrow URI, text formats
optionally compressed) and directories (a saved ``datasets`` dataset, Hub-style Parquet shards).

Each source yields ``(line_or_row, dict | DataError)`` (JSONL, CSV: a bad line is an error row,
so every problem of a file is collected) or ``(file, row, dict)`` (Parquet and directories: a
table, checked for one layout's columns up front). ``ilp_ray.data.load`` validates the rows.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ilp_ray.data.conversations import LAYOUT_FIELDS, OPTIONAL_FIELDS, closest, describe_layouts, detect
from ilp_ray.data.conversations import type_name as _tname
from ilp_ray.errors import DataError

_JSONL = (".jsonl", ".ndjson", ".json")
_CSV = (".csv",)
_PARQUET = (".parquet", ".pq")
_COMPRESSED = (".gz", ".bz2", ".zst")


# --- opening -------------------------------------------------------------------------------------

def kind_of(name: str) -> str:
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


def open_fs(name: str):
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


def read_bytes(name: str) -> bytes:
    filesystem, p = open_fs(name)
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


def jsonl_rows(name: str, data: bytes) -> Iterator[Row]:
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


def csv_rows(name: str, data: bytes) -> Iterator[Row]:
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
        _check_columns(name, header, "missing column in the header", line=1)
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


def parquet_rows(name: str) -> Iterator[tuple[str, int, Any]]:
    """(file, 1-based row, dict) of a Parquet file."""
    import pyarrow.parquet as pq

    filesystem, p = open_fs(name)
    try:
        table = pq.read_table(p, filesystem=filesystem)
    except FileNotFoundError as e:
        raise DataError("file not found", file=name) from e
    except Exception as e:  # ArrowInvalid for a corrupt or non-Parquet file
        raise DataError(f"cannot read Parquet file: {e}", file=name) from e
    return _table_rows(name, table)


def _table_rows(name: str, table) -> Iterator[tuple[str, int, Any]]:
    cols = table.column_names
    _check_columns(name, cols, "missing column")
    wanted = [c for c in cols if c in OPTIONAL_FIELDS or c in LAYOUT_FIELDS]
    base = 0
    for batch in table.select(wanted).to_batches(max_chunksize=4096):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            yield name, base + i + 1, {c: data[c][i] for c in wanted}
        base += batch.num_rows


def _check_columns(name: str, cols: list[str], missing: str, line: int | None = None) -> None:
    """A table's columns must hold one layout's fields: name the missing one, or list the layouts."""
    if detect(cols) is not None:
        return
    near = closest(cols)
    if near:
        raise DataError(f"{missing} (found: {', '.join(cols)})", file=name, line=line, field=near[1][0])
    raise DataError(f"cannot tell the layout from the columns (found: {', '.join(cols)}); expected "
                    f"{describe_layouts()}", file=name, line=line)


def directory_rows(name: str) -> Iterator[tuple[str, int, Any]]:
    """Rows of a saved ``datasets`` dataset, or of the Parquet shards below a directory."""
    root = Path(name)
    if (root / "dataset_dict.json").exists() or (root / "state.json").exists():
        yield from _hf_rows(root)
        return
    shards = sorted(root.rglob("*.parquet"))
    train = [p for p in shards if p.name.startswith("train")]
    shards = train or shards
    if not shards:
        raise DataError("a directory must hold a dataset saved with datasets' save_to_disk "
                        "(state.json or dataset_dict.json) or Parquet shards (*.parquet)", file=name)
    for shard in shards:
        yield from parquet_rows(str(shard))


def _hf_rows(root: Path) -> Iterator[tuple[str, int, Any]]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets ships with our dependencies
        raise DataError("reading a saved HF dataset needs the 'datasets' package", file=str(root)) from e
    try:
        ds = datasets.load_from_disk(str(root))
    except Exception as e:  # FileNotFoundError or a version mismatch inside the folder
        raise DataError(f"cannot load the saved dataset: {e}", file=str(root)) from e
    where = root
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else (next(iter(ds)) if len(ds) == 1 else None)
        if split is None:
            raise DataError(f"a DatasetDict without a 'train' split (splits: {', '.join(ds)}); "
                            "point data at one split's folder", file=str(root))
        ds, where = ds[split], root / split
    yield from _table_rows(str(where), ds.data.table)
