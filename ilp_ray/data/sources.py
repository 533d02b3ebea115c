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


def _limit(env: str, default: int) -> int:
    v = os.environ.get(env)
    return int(v) if v and v.isdigit() else default


#: Reading is bounded (issue 20, finding 7); each limit is named in its error and set by its
#: environment variable. Bytes are counted after decompression, so a compressed bomb stops at
#: MAX_INPUT_BYTES instead of filling memory.
MAX_INPUT_BYTES = _limit("ILP_MAX_INPUT_BYTES", 64 * 2**30)   # a whole text file, decompressed
MAX_LINE_BYTES = _limit("ILP_MAX_LINE_BYTES", 64 * 2**20)     # one JSONL line or CSV record
MAX_JSON_DEPTH = 64                                              # nesting of one JSON value


class _Counted(io.RawIOBase):
    """A pyarrow input stream as a Python raw stream, refusing to read past ``MAX_INPUT_BYTES``."""

    def __init__(self, stream, name: str):
        self.stream, self.name, self.n = stream, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        chunk = self.stream.read(len(buf))
        self.n += len(chunk)
        if self.n > MAX_INPUT_BYTES:
            raise DataError(f"limit max_input_bytes={MAX_INPUT_BYTES} exceeded (decompressed; set "
                            "ILP_MAX_INPUT_BYTES to raise it)", file=self.name)
        buf[:len(chunk)] = chunk
        return len(chunk)


def open_lines(name: str) -> Iterator[bytes]:
    """The raw lines of a text file (local or URI, decompressed by extension), streamed: memory
    holds one line at a time, at most ``MAX_LINE_BYTES``.

    Raises:
        DataError: the file cannot be opened or read, a line is longer than ``MAX_LINE_BYTES``, or
            the file is longer than ``MAX_INPUT_BYTES``.
    """
    filesystem, p = open_fs(name)
    try:
        stream = filesystem.open_input_stream(p, compression="detect")
    except FileNotFoundError as e:
        raise DataError("file not found", file=name) from e
    except OSError as e:
        raise DataError(f"cannot read file: {e}", file=name) from e
    with stream, io.BufferedReader(_Counted(stream, name), buffer_size=1 << 20) as f:
        lineno = 0
        while True:
            try:
                line = f.readline(MAX_LINE_BYTES + 1)
            except OSError as e:
                raise DataError(f"cannot read file: {e}", file=name, line=lineno + 1) from e
            if not line:
                return
            lineno += 1
            if len(line) > MAX_LINE_BYTES:
                raise DataError(f"limit max_line_bytes={MAX_LINE_BYTES} exceeded (set ILP_MAX_LINE_BYTES to "
                                "raise it)", file=name, line=lineno)
            yield line[:-1] if line.endswith(b"\n") else line


def _no_duplicate_keys(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _depth(text: str) -> int:
    """Most nested brackets outside strings (cheap: no parse)."""
    depth = top = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            top = max(top, depth)
        elif ch in "]}":
            depth -= 1
    return top


def parse_json_line(text: str):
    """One JSON value of a line, strictly: a duplicate key, nesting past ``MAX_JSON_DEPTH`` or an
    integer past Python's digit limit is a ``ValueError`` with a message, never another exception."""
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"nesting deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # duplicate keys; an integer over sys.get_int_max_str_digits() digits
        raise ValueError(f"invalid JSON: {str(e).splitlines()[0][:200]}") from None


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
    """A whole file (CSV, whose quoted cells may span lines), decompressed by extension and
    refused past ``MAX_INPUT_BYTES``."""
    filesystem, p = open_fs(name)
    try:
        # compression="detect" decompresses by extension (.gz, .bz2, .zst).
        with filesystem.open_input_stream(p, compression="detect") as f:
            counted = _Counted(f, name)
            chunks = []
            while chunk := counted.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
    except FileNotFoundError as e:
        raise DataError("file not found", file=name) from e
    except OSError as e:
        raise DataError(f"cannot read file: {e}", file=name) from e


# --- row sources: each yields (line_or_row, dict | DataError) ----------------------------------

Row = tuple[int, "dict[str, Any] | DataError"]


def jsonl_rows(name: str, data: bytes | None = None) -> Iterator[Row]:
    """Rows of a JSON Lines file, streamed from ``name`` (or split from ``data``, when given)."""
    lines = open_lines(name) if data is None else iter(data.split(b"\n"))
    offset = 0
    for lineno, raw in enumerate(lines, start=1):
        start, offset = offset, offset + len(raw) + 1
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM written by some editors
            raw, start = raw[3:], start + 3
        if raw.endswith(b"\r"):
            raw = raw[:-1]
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
            obj = parse_json_line(text)
        except ValueError as e:
            yield lineno, DataError(str(e), file=name, line=lineno)
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
    """(file, 1-based row, dict) of a Parquet file: only the columns a layout or an optional field
    names are read, a batch at a time."""
    import pyarrow.parquet as pq

    filesystem, p = open_fs(name)
    try:
        f = pq.ParquetFile(filesystem.open_input_file(p))
    except FileNotFoundError as e:
        raise DataError("file not found", file=name) from e
    except Exception as e:  # ArrowInvalid for a corrupt or non-Parquet file
        raise DataError(f"cannot read Parquet file: {e}", file=name) from e
    cols = f.schema_arrow.names
    _check_columns(name, cols, "missing column")
    wanted = [c for c in cols if c in OPTIONAL_FIELDS or c in LAYOUT_FIELDS]
    return _batch_rows(name, f.iter_batches(batch_size=4096, columns=wanted), wanted)


def _batch_rows(name: str, batches, wanted: list[str]) -> Iterator[tuple[str, int, Any]]:
    base = 0
    try:
        for batch in batches:
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                yield name, base + i + 1, {c: data[c][i] for c in wanted}
            base += batch.num_rows
    except OSError as e:  # a corrupt page past the footer
        raise DataError(f"cannot read Parquet file: {e}", file=name, line=base + 1) from e


def _table_rows(name: str, table) -> Iterator[tuple[str, int, Any]]:
    cols = table.column_names
    _check_columns(name, cols, "missing column")
    wanted = [c for c in cols if c in OPTIONAL_FIELDS or c in LAYOUT_FIELDS]
    return _batch_rows(name, table.select(wanted).to_batches(max_chunksize=4096), wanted)


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
