"""The audit's verdict stage: option scores → per-sample verdicts (``ilp_ray.detect``), written to
``verdicts/`` as one new generation switched by its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ilp_ray import storage as S
from ilp_ray.audit.score import split_priors
from ilp_ray.config import AuditConfig


def verdict_stage(items, scores: dict[str, Any], with_priors: bool, cfg: AuditConfig,
                  run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Verdicts of ``items`` from their ``scores`` ({tag: Table}, prior pseudo-items included when
    ``with_priors``); writes them under ``run_dir/verdicts``. Returns (verdicts DataFrame, the
    detection summary with ``seed_stability``)."""
    from ilp_ray.detect import compute_verdicts, summarize

    scores, priors = split_priors(items, scores) if with_priors else (scores, None)
    items_df = items.select(["id", "subset", "position", "answer", "distractor_ids"]).to_pandas()
    sft_df = scores["sft"].to_pandas()
    base_df = scores["base"].to_pandas() if "base" in scores else None
    verdicts, stability = compute_verdicts(items_df, sft_df, base_df, cfg.scoring, cfg.detect, priors)
    verdicts = verdicts.merge(items.select(["id", "question", "options", "distractor_ids", "fallback"]).to_pandas(),
                              on="id", how="left")
    S.write_verdicts(verdicts, run_dir / "verdicts", cfg.ray.shard_size)
    summary = summarize(verdicts, cfg.detect)
    summary["seed_stability"] = stability
    return verdicts, summary
