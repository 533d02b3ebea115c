"""``ilp score``: score a file of ready MC items with one checkpoint, in process."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ilp_ray.config import ScoringConfig


def score_rows(scores, items, scoring: ScoringConfig) -> list[dict]:
    """Per-item output rows: log-likelihoods, probabilities, acc and acc_norm argmax."""
    import numpy as np

    from ilp_ray import metrics as M

    out = []
    for sc, it in zip(scores, items):
        lp = np.array([sc.logprob_sum])
        probs = M.option_probs(M.option_scores(lp, np.array([sc.n_chars]), np.array([sc.n_tokens]),
                                               scoring.length_norm), scoring.temperature)[0]
        norm = M.option_scores(lp, np.array([sc.n_chars]), np.array([sc.n_tokens]), "chars")[0]
        out.append({"id": sc.id, "loglikelihoods": list(sc.logprob_sum), "n_tokens": list(sc.n_tokens),
                    "n_chars": list(sc.n_chars), "probs": probs.tolist(), "pred": int(lp[0].argmax()),
                    "pred_norm": int(norm.argmax()), "answer": it.answer,
                    "correct": bool(int(lp[0].argmax()) == it.answer), "truncated": sc.truncated})
    return out


def score_file(model: str, items_path: Path, out: Path, scoring: ScoringConfig,
               threads: int | None = None) -> tuple[int, int]:
    """Score ``items_path`` and write one JSON row per item to ``out`` (atomically).

    Returns:
        (number of items, number of left-truncated prompts).
    """
    from ilp_ray.data.items import read_mc_items
    from ilp_ray.env import apply_defaults
    from ilp_ray.scoring.engines import make_engine

    apply_defaults(local_ray=True)
    items = read_mc_items(items_path)  # validate before loading any model
    import torch

    if threads:
        torch.set_num_threads(threads)
    engine = make_engine(scoring, model, tag=model)
    rows = score_rows(engine.score(items), items, scoring)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, out)
    return len(rows), engine.truncated_count
