"""``ilp score``: score a file of ready MC items with one checkpoint, in process."""

from __future__ import annotations

import json
from pathlib import Path

from ilp_ray.config import ScoringConfig


def score_file(model: str, items_path: Path, out: Path, scoring: ScoringConfig,
               threads: int | None = None, n: int = 5, seed: int = 0) -> tuple[int, int]:
    """Score ``items_path`` and write one JSON row per item to ``out`` (atomically).

    Returns:
        (number of items, number of left-truncated prompts).
    """
    from ilp_ray.data.items import read_mc_items
    from ilp_ray.detect import item_results
    from ilp_ray.env import apply_defaults
    from ilp_ray.scoring.engines import make_engine

    apply_defaults(local_ray=True)
    items = read_mc_items(items_path)  # validate before loading any model
    import torch

    if threads:
        torch.set_num_threads(threads)
    engine = make_engine(scoring, model, tag=model)
    try:
        rows = item_results(items, engine.score(items), scoring, n=n, seed=seed)
    finally:  # an engine with a process of its own (vLLM's core) is shut down here, not at exit
        engine.close()
    from ilp_ray.storage import write_text_atomic

    write_text_atomic("".join(json.dumps(r) + "\n" for r in rows), out)
    return len(rows), engine.truncated_count
