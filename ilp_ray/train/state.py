"""What a checkpoint holds, how it is written and read back, and the run's append-only row logs.

A checkpoint directory is a loadable Hugging Face checkpoint (config, safetensors, tokenizer) that
the audit core scores directly, plus:

- ``ilp_checkpoint.json``: the checkpoint's stable id, step, epoch and run (``checkpoint_id``);
- ``train_state.json``: step, epoch, position within the epoch's order, that order itself, the
  order sampler's state and the RNG states, as plain JSON: reading it back cannot run code (a
  pickle could, and run directories sit on volumes every pod may write). Checkpoints of earlier
  versions hold ``train_state.pt``; it is read with torch's restricted unpickler
  (``weights_only=True``, numpy's RNG arrays allowed), never with full pickle;
- ``engine/``: the optimizer state (DeepSpeed's ZeRO partitions, one file per rank, or DDP's
  optimizer ``state_dict``).

Row logs (trajectories, the batches trained at each step) are buffered in memory and written at
checkpoint time as ``<table>/upto-<step>.parquet``, covering the steps since the previous
checkpoint. A resumed run deletes every file past its checkpoint's step before it starts, so the
rows it recomputes are never duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

MARKER = "ilp_checkpoint.json"
STATE = "train_state.json"
LEGACY_STATE = "train_state.pt"
ENGINE = "engine"


def make_checkpoint_id(run_path: str, step: int) -> str:
    """A stable id: the run's storage path and the step, hashed (the same on every rank and retry)."""
    return hashlib.sha256(f"{run_path}|step={step}".encode()).hexdigest()[:16]


def checkpoint_id(path: str | os.PathLike) -> str:
    """The id of a saved checkpoint, as MLflow tags name it (``ilp.checkpoint_id``).

    Read from the checkpoint's ``ilp_checkpoint.json``, so it does not change when the directory
    is copied or moved. A directory without one (a checkpoint from elsewhere) gets a hash of its
    resolved path.
    """
    marker = Path(path) / MARKER
    if marker.is_file():
        return json.loads(marker.read_text())["id"]
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]


def latest_registered_step(run_path: str | os.PathLike) -> int:
    """The step of the latest checkpoint Ray Train has registered for the run at ``run_path`` (what a
    restart resumes from, read from its ``checkpoint_manager_snapshot.json``); -1 before the first."""
    try:
        latest = json.loads((Path(run_path) / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1
    return latest["metrics"]["step"] if latest else -1


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python RNG states as JSON values."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state().tolist(),
            "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``'s output (or a legacy checkpoint's tensors and tuples)."""
    import numpy as np
    import torch

    t = state["torch"]
    torch.set_rng_state(t if isinstance(t, torch.Tensor) else torch.tensor(t, dtype=torch.uint8))
    n = state["numpy"]
    if isinstance(n, dict):
        n = (n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)
    p = state["python"]
    if isinstance(p, dict):
        p = (p["version"], tuple(p["internal"]), p["gauss_next"])
    random.setstate(p)


def _plain(value: Any) -> Any:
    """JSON's fallback for numpy scalars and arrays in a train state."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"a train state holds a {type(value).__name__}, which JSON cannot store")


def save_checkpoint(directory: Path, *, rank: int, module, tokenizer, strategy, train_state: dict,
                    marker: dict) -> None:
    """Write this rank's part of a checkpoint into ``directory`` (a fresh local folder per rank).

    Rank 0 writes the HF model, tokenizer, train state and marker; every rank writes its engine
    state (DeepSpeed partitions have per-rank names, so Ray Train merges them into one folder).
    """

    directory.mkdir(parents=True, exist_ok=True)
    strategy.save(directory / ENGINE, rank)
    if rank != 0:
        return
    module.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    (directory / STATE).write_text(json.dumps({**train_state, "rng": rng_state()}, default=_plain))
    (directory / MARKER).write_text(json.dumps(marker, indent=1))


def load_train_state(directory: Path) -> dict:
    """The train state of checkpoint ``directory``. Never unpickles arbitrary objects: JSON, or a
    legacy ``train_state.pt`` through torch's restricted unpickler.

    Raises:
        ValueError: a legacy state that holds anything but tensors, numbers, strings and numpy's
            RNG arrays (it would need full pickle, which can run code).
    """
    directory = Path(directory)
    if (directory / STATE).is_file() or not (directory / LEGACY_STATE).is_file():
        return json.loads((directory / STATE).read_text())
    import numpy as np
    import torch

    allowed = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(directory / LEGACY_STATE, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError (or others) for a forbidden global
        raise ValueError(f"{directory / LEGACY_STATE}: refused to load a train state that needs full "
                         f"pickle (it could run code): {str(e).splitlines()[0]}") from None


class RowLog:
    """Rows appended during training, written at checkpoints as ``<root>/upto-<step>.parquet``."""

    def __init__(self, root: Path, enabled: bool = True):
        self.root, self.enabled = Path(root), enabled
        self.rows: list[dict] = []

    def truncate_after(self, step: int) -> None:
        """Delete files written after ``step`` (by a run that died before its next checkpoint
        counted); with ``step`` < 0 delete all (a fresh start)."""
        if not self.root.is_dir():
            return
        for f in self.root.glob("upto-*.parquet"):
            if int(f.stem.split("-")[1]) > step:
                f.unlink()
        for f in self.root.glob(".tmp-*"):
            f.unlink()

    def extend(self, rows: list[dict]) -> None:
        if self.enabled:
            self.rows.extend(rows)

    def flush(self, step: int) -> None:
        """Write the buffered rows as ``upto-<step>.parquet`` (atomically), then forget them."""
        if not self.enabled or not self.rows:
            return
        import pyarrow as pa

        from ilp_ray.storage import write_table_atomic

        write_table_atomic(pa.Table.from_pylist(self.rows), self.root / f"upto-{step:09d}.parquet")
        self.rows = []


def read_rows(root: str | os.PathLike):
    """All row-log files under ``root`` as one pandas DataFrame, in step order (empty if none)."""
    import pandas as pd

    files = sorted(Path(root).glob("upto-*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
