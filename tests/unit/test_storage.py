"""The verdict table's one schema: the writer and the loader hold every table to it."""

from __future__ import annotations

import pandas as pd
import pytest

from ilp_ray import storage as S
from ilp_ray.errors import DataError


def _table(drop=(), base=True):
    row = {c: 0 for c in S.VERDICT_COLUMNS}
    row.update(id="a", subset="default", question="q", options=["x", "y"], distractor_ids=["b"], probs=[0.4, 0.6])
    if base:
        row.update({c: 0 for c in S.BASE_VERDICT_COLUMNS}, base_probs=[0.5, 0.5])
    return pd.DataFrame([{k: v for k, v in row.items() if k not in drop}])


def test_written_verdicts_load_back(tmp_path):
    S.write_verdicts(_table(), tmp_path / "verdicts", size=1)
    S.write_verdicts(_table(base=False), tmp_path / "plain" / "verdicts", size=1)  # no base model: fine
    assert S.load_verdicts(tmp_path).loc[0, "id"] == "a"
    assert "base_probs" not in S.load_verdicts(tmp_path / "plain").columns


def test_a_table_without_a_verdict_column_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"field 'in_top_k': the verdict table lacks columns \['in_top_k'\]"):
        S.write_verdicts(_table(drop=("in_top_k",)), tmp_path / "verdicts", size=1)
    assert not (tmp_path / "verdicts").exists()  # nothing written
    with pytest.raises(DataError, match=r"lacks columns \['known_by_base'\]"):  # some base columns, not all
        S.write_verdicts(_table(drop=("known_by_base",)), tmp_path / "verdicts", size=1)
    # a file an older audit wrote, read back
    folder = tmp_path / "old" / "verdicts"
    import pyarrow as pa

    S.write_table_atomic(pa.Table.from_pandas(_table(drop=("n_options",)), preserve_index=False),
                         S.shard_path(folder, 0))
    with pytest.raises(DataError, match=r"old/verdicts: field 'n_options'"):
        S.load_verdicts(tmp_path / "old")


def _rows(n, tag):
    base = _table().iloc[0].to_dict()
    return pd.DataFrame([{**base, "id": f"{tag}{i}", "position": i} for i in range(n)])


def test_a_rewrite_killed_at_any_point_leaves_one_whole_table(tmp_path, monkeypatch):
    """Issue 20, finding 8: the old table, or the new, never a mix; stale shards go on the next
    write. Killed (an exception) after the new shards but before the manifest, then after it."""
    folder = tmp_path / "verdicts"
    old, new = _rows(7, "old"), _rows(3, "new")
    S.write_verdicts(old, folder, size=2)
    real = S.write_json_atomic

    def die(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "write_json_atomic", die)
    with pytest.raises(KeyboardInterrupt):
        S.write_verdicts(new, folder, size=2)
    assert S.load_verdicts(tmp_path)["id"].tolist() == old["id"].tolist()  # new shards ignored
    monkeypatch.setattr(S, "write_json_atomic", real)
    original_unlink = type(folder).unlink
    monkeypatch.setattr(type(folder), "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        S.write_verdicts(new, folder, size=2)  # the manifest is new; cleaning up dies
    monkeypatch.setattr(type(folder), "unlink", original_unlink)
    assert S.load_verdicts(tmp_path)["id"].tolist() == new["id"].tolist()  # stale shards beside it, unread
    S.write_verdicts(new, folder, size=2)
    import json

    named = {s["file"] for s in json.loads((folder / S.MANIFEST).read_text())["shards"]}
    assert {p.name for p in folder.iterdir() if p.name != S.MANIFEST} == named


def test_a_shard_that_differs_from_the_manifest_is_refused(tmp_path):
    import json

    import pyarrow as pa

    folder = tmp_path / "verdicts"
    S.write_verdicts(_rows(4, "a"), folder, size=2)
    first = json.loads((folder / S.MANIFEST).read_text())["shards"][0]["file"]
    S.write_table_atomic(pa.Table.from_pandas(_rows(1, "x"), preserve_index=False), folder / first)
    with pytest.raises(DataError, match=rf"{first}: a verdict shard is missing or differs"):
        S.load_verdicts(tmp_path)


def test_sigkill_during_rewrites_never_leaves_a_mixed_table(tmp_path):
    """A writer rewriting the table in a loop, SIGKILLed at five moments: each time the table read
    back is one of the tables it wrote, whole."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "verdicts"
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {os.getcwd()!r})
from ilp_ray import storage as S
from tests.unit.test_storage import _rows
folder = Path({str(folder)!r})
S.write_verdicts(_rows(5, "g0-"), folder, size=1)
print("ready", flush=True)
g = 1
while True:
    S.write_verdicts(_rows(5 + g % 3, f"g{{g}}-"), folder, size=1)
    g += 1
"""
    for delay in (0.05, 0.1, 0.2, 0.3, 0.5):
        p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        ids = S.load_verdicts(tmp_path)["id"].tolist()
        gen = ids[0].split("-")[0]
        n = 5 + int(gen[1:]) % 3 if gen != "g0" else 5
        assert ids == [f"{gen}-{i}" for i in range(n)], ids


def test_a_second_job_on_a_locked_run_directory_is_refused(tmp_path):
    held = S.run_lock(tmp_path, "audit").__enter__()
    with pytest.raises(S.RunDirBusy, match=r"in use by another audit \(pid \d+\)"), S.run_lock(tmp_path, "audit"):
        pass
    held.__exit__(None, None, None)
    with S.run_lock(tmp_path, "audit"):  # released: free again
        pass


def test_a_score_shard_is_trusted_by_its_rows_not_its_name(tmp_path, caplog):
    """A resumed audit reuses a shard only when its footer reads and holds the rows expected; a
    shard cut short (a copy that stopped), of another row count, or beyond the run's shards is
    removed, to be scored again."""
    import pyarrow as pa

    folder = tmp_path / "scores"
    for i, n in enumerate((4, 4, 3, 4)):
        S.write_table_atomic(pa.table({"id": [f"{i}-{k}" for k in range(n)]}), S.shard_path(folder, i))
    S.write_table_atomic(pa.table({"id": ["x"]}), S.shard_path(folder, 9))
    whole = S.shard_path(folder, 3).read_bytes()
    S.shard_path(folder, 3).write_bytes(whole[: len(whole) // 2])  # cut short
    expected = {0: 4, 1: 4, 2: 4, 3: 4}  # shard 2 should hold 4 rows, it holds 3
    assert S.complete_shards(folder) == {0, 1, 2, 3, 9}  # by name: every file
    assert S.complete_shards(folder, expected) == {0, 1}
    assert sorted(p.name for p in folder.glob(S.SHARD_GLOB)) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert "shard-00002.parquet is not whole (expected 4 rows)" in caplog.text
    assert S.read_shards(folder).num_rows == 8


def test_a_frame_written_by_chunks_reads_back_as_one_written_whole(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Column types a chunk alone would guess wrong: None until the last chunk, lists, arrays, JSON.
    df = pd.DataFrame({"id": [f"s{i}" for i in range(7)], "x": np.arange(7) / 3,
                       "late": [None] * 6 + ['{"a": 1}'], "ids": [[f"d{i}"] * (i % 3) for i in range(7)],
                       "probs": [np.array([0.25, 0.75]) for _ in range(7)], "flag": [i % 2 == 0 for i in range(7)]},
                      index=range(10, 17))
    S.write_frame_atomic(df, tmp_path / "chunks.parquet", chunk_rows=3)
    S.write_table_atomic(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "whole.parquet")
    chunks, whole = pq.read_table(tmp_path / "chunks.parquet"), pq.read_table(tmp_path / "whole.parquet")
    assert chunks.schema.equals(whole.schema) and chunks.equals(whole)
    assert pq.ParquetFile(tmp_path / "chunks.parquet").metadata.num_row_groups == 3
    S.write_frame_atomic(df.iloc[:0], tmp_path / "empty.parquet")
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_frame_that_fails_mid_write_leaves_no_file(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(pa.ArrowInvalid):  # no Arrow type holds both: refused before any file
        S.write_frame_atomic(pd.DataFrame({"mixed": [1, "one"] * 3}), tmp_path / "bad.parquet", chunk_rows=2)
    calls, write = [], pq.ParquetWriter.write_table

    def fail_second(self, table, *a, **k):
        calls.append(len(table))
        if len(calls) == 2:
            raise OSError("disk full")
        return write(self, table, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail_second)
    with pytest.raises(OSError, match="disk full"):
        S.write_frame_atomic(pd.DataFrame({"x": range(6)}), tmp_path / "half.parquet", chunk_rows=2)
    assert calls == [2, 2] and list(tmp_path.iterdir()) == []  # the first chunk's temp file is gone too
