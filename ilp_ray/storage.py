"""Atomic, fingerprinted Parquet shards: the unit of resumability.

A shard is written to a hidden temporary name and renamed into place, so a reader never sees a
half-written shard and a killed writer leaves only a temporary file (removed on the next run).
Folders are named by a fingerprint of everything that determines their contents, so a changed
config never reuses stale results, and an unchanged one never recomputes finished work.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

SHARD_GLOB = "shard-*.parquet"


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.parquet"


def write_table_atomic(table, path: Path) -> None:
    """Write a pyarrow Table to ``path`` via a temporary file and an atomic rename."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:  # the rename must not overtake the data on a crash
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def clean_partial(folder: Path) -> int:
    """Remove temporary files a killed writer left behind; returns how many."""
    n = 0
    if folder.is_dir():
        for p in folder.glob(".tmp-*"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def complete_shards(folder: Path) -> set[int]:
    """Indices of the shards already written in ``folder``."""
    if not folder.is_dir():
        return set()
    return {int(p.stem.split("-")[1]) for p in folder.glob(SHARD_GLOB)}


def read_shards(folder: Path):
    """All shards of ``folder`` as one pyarrow Table, in shard order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(folder.glob(SHARD_GLOB))
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


def load_verdicts(run_dir: str | Path):
    """The per-sample table of a finished audit (``run_dir/verdicts``), as a pandas DataFrame."""
    t = read_shards(Path(run_dir) / "verdicts")
    if t is None:
        raise FileNotFoundError(f"{run_dir}: no verdicts (has the audit finished?)")
    return t.to_pandas()
