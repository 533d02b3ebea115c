"""The audit stage: SFT records → MC items (``mc``) → option scores under the base and fine-tuned
models on Ray Data (``score``) → per-sample verdicts (``verdicts``).

``ilp_ray.pipeline`` runs it, then the corpus evidence and the diagnosis; this package never
imports a later stage.
"""

from ilp_ray.audit.mc import history_type, mc_stage, with_history
from ilp_ray.audit.score import (
           ScoreShards,
           model_identity,
           needs_priors,
           score_stage,
           split_priors,
           with_prior_items,
)
from ilp_ray.audit.verdicts import verdict_stage

__all__ = ["ScoreShards", "history_type", "mc_stage", "model_identity", "needs_priors", "score_stage",
           "split_priors", "verdict_stage", "with_history", "with_prior_items"]
