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
    write_text_atomic(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` through a temporary file: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    tmp.write_text(text)
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


def write_verdicts(df, folder: Path, size: int) -> None:
    """Write the verdict table in shards of ``size`` rows (stale shards of a longer table removed)."""
    import math

    import pyarrow as pa

    check_verdicts(df.columns, str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    clean_partial(folder)
    n = max(1, math.ceil(len(df) / size))
    for i in range(n):
        write_table_atomic(pa.Table.from_pandas(df.iloc[i * size:(i + 1) * size], preserve_index=False),
                           shard_path(folder, i))
    for stale in complete_shards(folder) - set(range(n)):
        shard_path(folder, stale).unlink()


def load_verdicts(run_dir: str | Path):
    """The per-sample table of a finished audit (``run_dir/verdicts``), as a pandas DataFrame.

    Raises:
        FileNotFoundError: no verdicts in ``run_dir``.
        DataError: the table lacks a column of ``VERDICT_COLUMNS`` (or some of the base model's).
    """
    t = read_shards(Path(run_dir) / "verdicts")
    if t is None:
        raise FileNotFoundError(f"{run_dir}: no verdicts (has the audit finished?)")
    check_verdicts(t.column_names, str(Path(run_dir) / "verdicts"))
    return t.to_pandas()
