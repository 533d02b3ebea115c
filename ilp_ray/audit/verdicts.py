"""The audit's verdict stage: option scores → per-sample verdicts (``ilp_ray.detect``), written to
``verdicts/`` as one new generation switched by its manifest.

The verdicts are computed in chunks of ``chunk_rows`` items: each chunk's scores are taken from
the Arrow tables, turned into pandas, scored by ``detect.row_verdicts`` and turned back into
Arrow at once, so the driver never holds more than one chunk's per-row Python objects (at 300k
samples the whole table as pandas, with its option and probability lists, was ~1 GB). The
set-wide figures (the severity rank, the top K, the seed stability) come from small arrays of
every chunk. The table is the one ``detect.compute_verdicts`` gives for all items at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ilp_ray import storage as S
from ilp_ray.audit.score import prior_lookups
from ilp_ray.config import AuditConfig

#: Items per chunk of the verdict computation: ~50 MB of pandas objects with a base model.
CHUNK_ROWS = 50_000
#: The items' columns the verdicts carry, after the detection figures (in this order).
ITEM_COLUMNS = ("question", "options", "distractor_ids", "fallback")


def verdict_stage(items, scores: dict[str, Any], with_priors: bool, cfg: AuditConfig,
                  run_dir: Path, chunk_rows: int = CHUNK_ROWS) -> tuple[Any, dict[str, Any]]:
    """Verdicts of ``items`` from their ``scores`` ({tag: Table}, prior pseudo-items included when
    ``with_priors``); writes them under ``run_dir/verdicts``.

    Returns:
        (the verdicts' scalar columns as a DataFrame, the detection summary with
        ``seed_stability``). The list columns (probabilities, options) are only in the written
        table: ``storage.load_verdicts`` reads it whole.

    Raises:
        ValueError: an item without scores, or a scores table with an id twice.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from ilp_ray.detect import row_verdicts, severity_ranks, summarize, unlearned_stability
    from ilp_ray.scoring.prior import option_priors

    scores, lookups = prior_lookups(items, scores) if with_priors else (scores, None)
    ids = items.column("id")
    aligned = {tag: _aligned(ids, t, tag) for tag, t in scores.items()}
    keys = ["id", "subset", "position", "answer", "distractor_ids"]
    parts, per_seed, consistency = [], [], []
    for lo in range(0, max(items.num_rows, 1), chunk_rows):  # one chunk, empty, for no items
        chunk = items.slice(lo, chunk_rows)
        priors = None
        if lookups is not None:  # this chunk's option priors only
            options, chunk_ids = chunk.column("options").to_pylist(), chunk.column("id").to_pylist()
            priors = {tag: pd.DataFrame({"id": chunk_ids, "logprob_sum": option_priors(options, lookup)})
                      for tag, lookup in lookups.items()}
        rows = row_verdicts(
            chunk.select(keys).to_pandas(), aligned["sft"].slice(lo, chunk_rows).to_pandas(),
            aligned["base"].slice(lo, chunk_rows).to_pandas() if "base" in aligned else None,
            cfg.scoring, cfg.detect, priors)
        parts.append(pa.Table.from_pandas(rows.frame, preserve_index=False).replace_schema_metadata(None))
        per_seed.append(rows.per_seed)
        consistency.append(rows.consistency)
        del rows, priors
    table = pa.concat_tables(parts, promote_options="permissive")
    del parts
    def column(name):
        return table.column(name).to_numpy(zero_copy_only=False)

    rank, top = severity_ranks(column("unlearned"), np.concatenate(consistency), column("pass_expected"),
                               cfg.detect.top_k)
    table = table.append_column("severity_rank", pa.array(rank, pa.int64(), mask=rank <= 0))
    table = table.append_column("in_top_k", pa.array(top, pa.bool_()))
    for name in ITEM_COLUMNS:
        table = table.append_column(name, items.column(name).combine_chunks())
    table = _with_pandas_metadata(table)
    S.write_verdicts(table, run_dir / "verdicts", cfg.ray.shard_size)
    scalar = table.select([f.name for f in table.schema if not pa.types.is_list(f.type)]).to_pandas()
    summary = summarize(scalar, cfg.detect)
    summary["seed_stability"] = unlearned_stability(ids.to_pylist(), np.concatenate(per_seed, axis=1))
    return scalar, summary


def _with_pandas_metadata(table):
    """``table`` with the pandas metadata a DataFrame's table carries, so that it reads back with
    the same dtypes (``severity_rank`` as pandas' nullable ``Int64``, not floats with NaN)."""
    import pyarrow as pa

    head = table.slice(0, 1).to_pandas()
    head["severity_rank"] = head["severity_rank"].astype("Int64")
    return table.replace_schema_metadata(pa.Table.from_pandas(head, preserve_index=False).schema.metadata)


def _aligned(ids, table, tag: str):
    """``table``'s rows in the order of ``ids`` (Arrow ``take``).

    Raises:
        ValueError: an id of ``ids`` is not in ``table``, or ``table`` has an id twice.
    """
    import pyarrow.compute as pc

    what = {"sft": "fine-tuned model", "base": "base model"}.get(tag, tag)
    if pc.count_distinct(table.column("id")).as_py() != table.num_rows:
        raise ValueError(f"{what} scores hold an item id more than once")
    at = pc.index_in(ids, value_set=table.column("id"))
    if at.null_count:
        lost = pc.filter(ids, pc.is_null(at)).slice(0, 3).to_pylist()
        raise ValueError(f"{what} scores are missing items, e.g. {lost}")
    return table.take(at)
