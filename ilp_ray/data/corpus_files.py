"""Corpus input files → documents → passages. Pure Python; Ray Data calls these per file.

Input rules:

- JSONL (``.jsonl``, ``.ndjson``, ``.json``; optionally ``.gz``): one object per line with a
  string ``text``; an optional ``id`` (string or integer) is the document id. Blank lines are
  skipped. A line that is not a JSON object with a string ``text`` fails the ingest with the
  file and line.
- Parquet (``.parquet``, ``.pq``): a ``text`` column, optional ``id``; "line" in errors is the
  1-based row.
- Text (``.txt``; optionally ``.gz``): one document per block of non-blank lines; blocks are
  separated by one or more blank (whitespace-only) lines, and lines of a block are joined with
  a space. This suits wiki-style dumps with one paragraph per block.

A document without an ``id`` gets ``sha1(text)`` (16 hex digits) so a re-run gives it the same id.

Chunking: a document's words (split on whitespace) are cut into windows of ``words`` words that
start every ``words - overlap`` words; the last window ends at the last word, and a document
shorter than ``words`` is one passage.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ilp_ray.errors import DataError

JSONL = (".jsonl", ".ndjson", ".json")
PARQUET = (".parquet", ".pq")
TEXT = (".txt",)


def file_kind(name: str) -> str | None:
    base = name.lower().removesuffix(".gz")
    if base.endswith(JSONL):
        return "jsonl"
    if base.endswith(TEXT):
        return "text"
    if name.lower().endswith(PARQUET):
        return "parquet"
    return None


def expand_inputs(inputs: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """Files, directories (searched recursively for supported files) and globs → sorted file list.

    Args:
        inputs: the specs.
        exclude: absolute paths (files or folders) never taken from a directory or glob: the
            index and its manifest, when they sit inside a corpus folder.

    Raises:
        DataError: an input matches nothing, or a named file has an unsupported type.
    """
    out: set[str] = set()
    for spec in inputs:
        if os.path.isdir(spec):
            found = [str(p) for p in Path(spec).rglob("*") if p.is_file() and file_kind(p.name)]
        elif os.path.isfile(spec):
            if file_kind(spec) is None:
                raise DataError("unsupported corpus file type; expected .jsonl/.ndjson/.json, .parquet/.pq "
                                "or .txt (text formats optionally .gz)", file=spec)
            found = [spec]
        else:
            found = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p) and file_kind(p)]
        if not found:
            raise DataError("no corpus files found (no such file, or nothing supported matches)", file=spec)
        for p in map(os.path.abspath, found):
            if not any(p == x or p.startswith(x.rstrip(os.sep) + os.sep) for x in exclude):
                out.add(p)
    return sorted(out)


def _doc_id(value, text: str, file: str, line: int) -> str:
    if value is None:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DataError(f"expected a non-blank string or integer, got {value!r}", file=file, line=line, field="id")
    return str(value)


def read_documents(path: str, data: bytes) -> Iterator[tuple[str, str]]:
    """Yield ``(doc_id, text)`` for every document of one file, whose bytes are ``data``.

    Raises:
        DataError: naming the file and line (row) of the first bad document.
    """
    kind = file_kind(path)
    if path.lower().endswith(".gz"):
        data = gzip.decompress(data)
    if kind == "parquet":
        yield from _parquet_docs(path, data)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"invalid UTF-8 at byte offset {e.start}", file=path,
                        line=data.count(b"\n", 0, e.start) + 1) from None
    if kind == "text":
        yield from _text_docs(path, text)
        return
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", file=path, line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object", file=path, line=lineno)
        body = obj.get("text")
        if not isinstance(body, str):
            raise DataError("missing or non-string field", file=path, line=lineno, field="text")
        if body.strip():
            yield _doc_id(obj.get("id"), body, path, lineno), body


def _text_docs(path: str, text: str) -> Iterator[tuple[str, str]]:
    block: list[str] = []
    for line in [*text.split("\n"), ""]:
        if line.strip():
            block.append(line.rstrip("\r"))  # lines kept: CPT trains on the text as written
        elif block:
            body = "\n".join(block)
            block = []
            yield _doc_id(None, body, path, 0), body


def _parquet_docs(path: str, data: bytes) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as e:  # ArrowInvalid for a corrupt or non-Parquet file
        raise DataError(f"cannot read Parquet file: {e}", file=path) from None
    if "text" not in table.column_names:
        raise DataError(f"missing column (found: {', '.join(table.column_names)})", file=path, field="text")
    texts = table.column("text").to_pylist()
    ids = table.column("id").to_pylist() if "id" in table.column_names else [None] * len(texts)
    for row, (i, body) in enumerate(zip(ids, texts, strict=True), start=1):
        if not isinstance(body, str):
            raise DataError("expected a string", file=path, line=row, field="text")
        if body.strip():
            yield _doc_id(i, body, path, row), body


def chunk_words(text: str, words: int, overlap: int) -> list[str]:
    """Cut ``text`` into passages of ``words`` words overlapping by ``overlap`` (module docstring)."""
    toks = text.split()
    if len(toks) <= words:
        return [" ".join(toks)] if toks else []
    step = words - overlap
    out = []
    for start in range(0, len(toks), step):
        out.append(" ".join(toks[start:start + words]))
        if start + words >= len(toks):
            break
    return out
