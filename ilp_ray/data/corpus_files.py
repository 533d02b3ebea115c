"""Corpus input files → documents → passages. Pure Python; Ray Data calls these per file.

Input rules:

- JSONL (``.jsonl``, ``.ndjson``, ``.json``; optionally ``.gz``): one object per line with a
  string ``text``; an optional ``id`` (string or integer) is the document id. Blank lines are
  skipped. A line that is not a JSON object with a string ``text`` fails the ingest with the
  file and line.
- Parquet (``.parquet``, ``.pq``): a ``text`` column, optional ``id``; "line" in errors is the
  1-based row.
- Text (``.txt``; optionally ``.gz``): one document per block of non-blank lines; blocks are
  separated by one or more blank (whitespace-only) lines, and the lines of a block are kept as
  written (CPT trains on them; the chunker splits on any whitespace). This suits wiki-style
  dumps with one paragraph per block.

Files are streamed (``read_documents``): one line, block or Parquet batch in memory, under the
loader's limits (``ILP_MAX_LINE_BYTES``, ``ILP_MAX_INPUT_BYTES`` after decompression).

A document without an ``id`` gets ``sha1(text)`` (16 hex digits) so a re-run gives it the same id.

Chunking: a document's words (split on whitespace) are cut into windows of ``words`` words that
start every ``words - overlap`` words; the last window ends at the last word, and a document
shorter than ``words`` is one passage.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
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


def read_documents(path: str) -> Iterator[tuple[str, str]]:
    """Yield ``(doc_id, text)`` for every document of one file.

    Streamed from ``path`` (local or a URI): memory holds one line, one text block or one Parquet
    batch at a time. JSONL is read by the SFT loader's own reader (``sources.jsonl_rows``: strict
    JSON, a line refused past ``ILP_MAX_LINE_BYTES``, the file past ``ILP_MAX_INPUT_BYTES`` counted
    after decompression, so a ``.gz`` bomb stops there); text by ``sources.open_lines``.

    Raises:
        DataError: naming the file and line (row) of the first bad document, or the limit passed.
    """
    from ilp_ray.data.sources import jsonl_rows, open_lines

    kind = file_kind(path)
    if kind == "parquet":
        yield from _parquet_docs(path)
        return
    if kind == "text":
        yield from _text_docs(path, _decoded(path, open_lines(path)))
        return
    for lineno, obj in jsonl_rows(path):
        if isinstance(obj, DataError):
            raise obj
        body = obj.get("text")
        if not isinstance(body, str):
            raise DataError("missing or non-string field", file=path, line=lineno, field="text")
        if body.strip():
            yield _doc_id(obj.get("id"), body, path, lineno), body


def _decoded(path: str, lines: Iterator[bytes]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; a BOM on the first line is dropped, a CR at the end too."""
    for lineno, raw in enumerate(lines, start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield lineno, raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise DataError(f"invalid UTF-8 at column {e.start + 1} of the line", file=path, line=lineno) from None


def _text_docs(path: str, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[str, str]]:
    block: list[str] = []
    for _, line in itertools.chain(lines, [(0, "")]):  # a last blank line closes the last block
        if line.strip():
            block.append(line)  # lines kept: CPT trains on the text as written
        elif block:
            body = "\n".join(block)
            block = []
            yield _doc_id(None, body, path, 0), body


def _parquet_docs(path: str) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # ArrowInvalid for a corrupt or non-Parquet file
        raise DataError(f"cannot read Parquet file: {e}", file=path) from None
    names = f.schema_arrow.names
    if "text" not in names:
        raise DataError(f"missing column (found: {', '.join(names)})", file=path, field="text")
    cols = ["text"] + (["id"] if "id" in names else [])
    row = 0
    for batch in f.iter_batches(batch_size=1024, columns=cols):
        texts = batch.column("text").to_pylist()
        ids = batch.column("id").to_pylist() if "id" in cols else [None] * len(texts)
        for i, body in zip(ids, texts, strict=True):
            row += 1
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
