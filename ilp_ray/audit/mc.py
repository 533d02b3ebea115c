"""The audit's first stage: the SFT records as MC items, cached under ``mc/`` by fingerprint."""

from __future__ import annotations

from pathlib import Path

from ilp_ray import storage as S
from ilp_ray.config import AuditConfig
from ilp_ray.records import history_messages


def mc_stage(records, cfg: AuditConfig, run_dir: Path):
    """MC items for ``records`` as a pyarrow Table, cached under ``mc/`` by fingerprint."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ilp_ray.data import build_mc_items

    # a conversation's history joins the key only where there is one: older runs' items stay valid
    data_fp = S.fingerprint([(r.id, r.prompt, r.response, r.subset, r.position, r.options, r.answer)
                             + ((r.history,) if r.history else ()) for r in records])
    path = run_dir / "mc" / f"items-{S.fingerprint([data_fp, cfg.mc.model_dump(exclude={'threads'})])}.parquet"
    S.clean_partial(path.parent)
    if path.exists():
        return with_history(pq.read_table(path)), True
    import os

    from ilp_ray.data.embed import get_embedder

    embedder = get_embedder(num_threads=cfg.mc.threads or os.cpu_count() or 1)
    items = build_mc_items(records, embedder=embedder, k=cfg.mc.k, seed=cfg.mc.seed, near_dup=cfg.mc.near_dup,
                           prefer_same_subset=cfg.mc.prefer_same_subset, distractors=cfg.mc.distractors,
                           length_ratio=cfg.mc.length_ratio, subject_check=cfg.mc.subject_check)
    table = pa.table({
        "id": [it.id for it in items],
        "question": [it.question for it in items],
        "options": [list(it.options) for it in items],
        "answer": pa.array([it.answer for it in items], pa.int64()),
        "distractor_ids": pa.array([list(it.distractor_ids) for it in items], pa.list_(pa.string())),
        "subset": [it.subset for it in items],
        "position": pa.array([it.position for it in items], pa.int64()),
        "fallback": pa.array([it.fallback for it in items], pa.int64()),
        "history": pa.array([history_messages(it.history) for it in items], history_type()),
    })
    S.write_table_atomic(table, path)
    return table, False


def history_type():
    """Arrow type of the items' ``history`` column: a conversation's earlier turns, oldest first."""
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def with_history(items):
    """``items`` with a ``history`` column: an items file written before conversations has none."""
    import pyarrow as pa

    if "history" in items.column_names:
        return items
    return items.append_column("history", pa.array([[] for _ in range(items.num_rows)], history_type()))
