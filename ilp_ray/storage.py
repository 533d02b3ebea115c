"""Atomic, fingerprinted Parquet shards: the unit of resumability.

A shard is written to a hidden temporary name and renamed into place, so a reader never sees a
half-written shard and a killed writer leaves only a temporary file (removed on the next run).
Folders are named by a fingerprint of everything that determines their contents, so a changed
config never reuses stale results, and an unchanged one never recomputes finished work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ilp_ray.errors import IlpError

SHARD_GLOB = "shard-*.parquet"
log = logging.getLogger(__name__)


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.parquet"


@contextlib.contextmanager
def _atomic_target(path: Path, fsync: bool = True) -> Iterator[Path]:
    """A hidden temporary name beside ``path`` to write to; renamed onto ``path`` when the block
    ends, removed when it raises. ``fsync``: the data reaches the disk before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:  # the rename must not overtake the data on a crash
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_table_atomic(table, path: Path) -> None:
    """Write a pyarrow Table to ``path`` via a temporary file and an atomic rename."""
    import pyarrow.parquet as pq

    with _atomic_target(path) as tmp:
        pq.write_table(table, tmp)


def write_frame_atomic(df, path: Path, chunk_rows: int = 50_000) -> None:
    """Write a pandas DataFrame (index dropped) to Parquet at ``path`` atomically, converting it to
    Arrow ``chunk_rows`` rows at a time under one schema inferred from the whole frame.

    ``write_table_atomic(pa.Table.from_pandas(df))`` holds the frame and a full Arrow copy at once;
    for the diagnosis table of a 300k-sample audit (five causes' evidence as JSON strings) the copy
    was ~0.4 GB of the driver's peak. Here the copy is one chunk at a time (and, while the schema is
    read, one column). The file reads back as ``write_table_atomic``'s would.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(df, preserve_index=False)
    with _atomic_target(path) as tmp, pq.ParquetWriter(tmp, schema) as w:
        for i in range(0, max(len(df), 1), chunk_rows):
            w.write_table(pa.Table.from_pandas(df.iloc[i:i + chunk_rows], schema=schema, preserve_index=False))


def write_json_atomic(obj: Any, path: Path) -> None:
    write_text_atomic(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` through a temporary file: a reader never sees half a file."""
    with _atomic_target(path, fsync=False) as tmp:
        tmp.write_text(text, encoding="utf-8")


def clean_partial(folder: Path) -> int:
    """Remove temporary files a killed writer left behind; returns how many. Call it only under
    the run directory's ``run_lock``: no other writer can then be mid-write."""
    n = 0
    if folder.is_dir():
        for p in folder.glob(".tmp-*"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def complete_shards(folder: Path, expected: dict[int, int] | None = None) -> set[int]:
    """Indices of the shards already written in ``folder``.

    With ``expected`` ({shard index: row count}), a shard counts only when its Parquet footer
    reads and records that many rows; any other shard file (unreadable, cut short by a copy, of
    another row count, or an index the run has no shard for) is removed, so that it is scored
    again instead of trusted by its name. Call it only under the run directory's ``run_lock``.
    """
    if not folder.is_dir():
        return set()
    import pyarrow.parquet as pq

    done = set()
    for p in folder.glob(SHARD_GLOB):
        idx = int(p.stem.split("-")[1])
        if expected is not None:
            try:
                ok = idx in expected and pq.read_metadata(p).num_rows == expected[idx]
            except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
                ok = False
            if not ok:
                log.warning("score shard %s is not whole (expected %s rows): scoring it again",
                            p, expected.get(idx, "no"))
                p.unlink(missing_ok=True)
                continue
        done.add(idx)
    return done


def read_shards(folder: Path):
    """All shards of ``folder`` as one pyarrow Table, in shard order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(folder.glob(SHARD_GLOB))
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


#: The verdict table (``run_dir/verdicts``): the columns every audit writes and every reader
#: (the diagnosis, the evidence stage, the lab's scoring) may rely on. ``SampleVerdict`` in
#: ``ilp_ray.records`` describes them; ``write_verdicts`` refuses a table without them and
#: ``load_verdicts`` a file without them.
VERDICT_COLUMNS: tuple[str, ...] = (
    "id", "subset", "position", "answer", "n_options", "probs", "pred", "pred_norm", "correct", "pass_at_n",
    "pass_expected", "bon_correct", "entropy", "confidence", "truncated", "unlearned", "severity_rank",
    "in_top_k", "question", "options", "distractor_ids")
#: Written when a base model was scored (all or none of them).
BASE_VERDICT_COLUMNS: tuple[str, ...] = (
    "base_probs", "base_pred", "base_correct", "base_pass_expected", "base_confidence", "known_by_base",
    "js_base_sft")


def check_verdicts(columns, where: str) -> None:
    """Raise ``DataError`` naming the first verdict column ``columns`` lacks (``where``: the file)."""
    from ilp_ray.errors import DataError

    have = set(columns)
    missing = [c for c in VERDICT_COLUMNS if c not in have]
    base = [c for c in BASE_VERDICT_COLUMNS if c in have]
    if not missing and base and len(base) != len(BASE_VERDICT_COLUMNS):
        missing = [c for c in BASE_VERDICT_COLUMNS if c not in have]
    if missing:
        raise DataError(f"the verdict table lacks columns {missing} (written by an older audit?)",
                        file=where, field=missing[0])


MANIFEST = "_manifest.json"


def write_verdicts(df, folder: Path, size: int) -> None:
    """Write the verdict table (a DataFrame or an Arrow table) in shards of ``size`` rows, as one
    new generation.

    The shards get a fresh generation name (``shard-<gen>-<i>.parquet``) beside the old ones; then
    ``_manifest.json`` (each shard's file, row count and sha256) replaces the old manifest in one
    atomic rename; only then are files outside it deleted. A kill at any point leaves a folder
    whose manifest names a complete table, the old or the new, never a mix of both.
    """
    import math

    import pyarrow as pa

    arrow = isinstance(df, pa.Table)
    check_verdicts(df.column_names if arrow else df.columns, str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    gen = uuid.uuid4().hex[:8]
    rows = df.num_rows if arrow else len(df)
    shards = []
    for i in range(max(1, math.ceil(rows / size))):
        part = (df.slice(i * size, size) if arrow
                else pa.Table.from_pandas(df.iloc[i * size:(i + 1) * size], preserve_index=False))
        path = folder / f"shard-{gen}-{i:05d}.parquet"
        write_table_atomic(part, path)
        shards.append({"file": path.name, "rows": part.num_rows, "sha256": _sha256(path)})
    write_json_atomic({"generation": gen, "rows": rows, "shards": shards}, folder / MANIFEST)
    keep = {s["file"] for s in shards} | {MANIFEST}
    for stale in folder.iterdir():
        if stale.name not in keep and not stale.name.startswith(".tmp-"):
            stale.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifested(folder: Path):
    """The table ``folder``'s manifest names, every shard checked against its row count and hash
    (a folder written before manifests: its ``shard-*.parquet`` files, as before).

    Raises:
        DataError: a shard is missing, or its rows or hash differ from the manifest's.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ilp_ray.errors import DataError

    man = folder / MANIFEST
    if not man.is_file():
        return read_shards(folder)
    meta = json.loads(man.read_text())
    parts = []
    for sh in meta["shards"]:
        path = folder / sh["file"]
        if not path.is_file() or _sha256(path) != sh["sha256"]:
            raise DataError("a verdict shard is missing or differs from the manifest (a partial or tampered "
                            "write); rerun the audit", file=str(path))
        t = pq.read_table(path)
        if t.num_rows != sh["rows"]:
            raise DataError(f"{t.num_rows} rows, the manifest says {sh['rows']}", file=str(path))
        parts.append(t)
    return pa.concat_tables(parts) if parts else None


class RunDirBusy(IlpError, RuntimeError):
    """Another process holds the run directory's lock."""


class run_lock:
    """An exclusive lock on a run directory (``.ilp.lock``, ``fcntl.flock``), held for the job:
    a second job on the same directory is refused at once instead of mixing files with the first.
    The kernel drops the lock when its holder dies, so a killed job never leaves it stuck."""

    def __init__(self, run_dir: Path, what: str = "job"):
        self.path, self.what = Path(run_dir) / ".ilp.lock", what
        self._f = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunDirBusy(f"{self.path.parent}: in use by another {self.what} ({holder}); wait for it to "
                             "finish or use another run directory") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc):
        import fcntl

        if self._f is not None:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
            self._f = None


def load_verdicts(run_dir: str | Path):
    """The per-sample table of a finished audit (``run_dir/verdicts``), as a pandas DataFrame.

    Raises:
        FileNotFoundError: no verdicts in ``run_dir``.
        DataError: the table lacks a column of ``VERDICT_COLUMNS`` (or some of the base model's).
    """
    t = read_manifested(Path(run_dir) / "verdicts")
    if t is None:
        raise FileNotFoundError(f"{run_dir}: no verdicts (has the audit finished?)")
    check_verdicts(t.column_names, str(Path(run_dir) / "verdicts"))
    return t.to_pandas()
