"""V. Insufficient training of rare or complex patterns (paper 3.2.5; Appendix E).

Two kinds of evidence, combined by one rule:

- **Trajectory** (decisive when the sample has one): never learned (``p_correct < tau`` at every
  evaluation from the step that first trained it on, ``trained_step``; every evaluation when the
  trajectory lacks it: a right answer before its own training is the base model's, not a lesson
  learned) *and* still improving at the end: the least-squares slope of p(correct) over the
  last ``last_m`` evaluations ``> min_slope`` per evaluation, or the slope of its SFT loss
  ``< -min_loss_drop``. More epochs would plausibly help; that is the cause. A sample whose
  trajectory has flattened does not fire, however rare it is: more of the same training would not
  fix it, so this label would send the wrong remedy.
- **Pattern** (rare or complex): *rare* when the prompt's density (mean cosine to its
  ``density_k`` nearest other prompts) is in the bottom ``rare_percentile``; *long* when the
  answer's length in characters is in the top ``1 - long_percentile``. Pattern strength is
  ``1 - density percentile`` for a rare sample and the length percentile for a long one (the
  larger when both). Below ``min_population`` samples (20) neither flag is raised: a percentile
  of five samples says nothing.

Score: with a firing trajectory, ``1 - pattern_weight + pattern_weight × pattern strength``
(``pattern_weight`` 0.4: 0.6 + 0.4 × strength) (a rare pattern that is still
rising is the paper's typical case). Without a trajectory, the sample may fire on the pattern
alone, at ``no_trajectory_weight × pattern strength`` (0.5 by default, so never above a firing
trajectory), and the evidence says ``trajectory: missing``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ilp_ray.diagnosis.base import (
    CauseCoverage,
    CauseDetector,
    CauseResult,
    CoverageFacts,
    DiagnosisContext,
    r3,
)
from ilp_ray.diagnosis.trajectories import per_sample


def prompt_density(ctx: DiagnosisContext, k: int) -> np.ndarray:
    """Mean cosine of each prompt to its ``k`` nearest other prompts (self excluded)."""
    n = len(ctx.verdicts)
    if n < 2:
        return np.ones(n)
    idx, sims = ctx.prompt_neighbours(min(k, n - 1) + 1)
    self_hit = idx == np.arange(n)[:, None]
    # Drop self (or, when a duplicate tied with it, the last column) to keep exactly k others.
    drop = np.where(self_hit.any(axis=1), self_hit.argmax(axis=1), idx.shape[1] - 1)
    mask = np.ones_like(self_hit)
    mask[np.arange(n), drop] = False
    return (sims * mask).sum(axis=1) / mask.sum(axis=1)


class InsufficientTraining(CauseDetector):
    name = "insufficient_training"
    roman = "V"
    title = "Insufficient training (rare or complex pattern)"
    short = "insufficient training"
    order = 50  # the weakest, most generic signal: the last resort
    section = "insufficient"
    color = "#2ca02c"

    def coverage(self, ctx: DiagnosisContext, facts: CoverageFacts) -> CauseCoverage:
        """Testable by a trajectory of two or more evaluations, or, with ``min_population``
        samples, by the rarity and length percentiles alone."""
        ic, diag = ctx.config.insufficient, facts.diagnosed
        by_traj = facts.has_trajectory & (facts.n_evals >= 2)
        rows = by_traj | (facts.n >= ic.min_population)
        why = (f"no sample has a trajectory of two or more evaluations, and there are fewer than "
               f"insufficient.min_population ({ic.min_population}) samples for the rarity/length percentiles")
        out = CauseCoverage(rows, why, extra={"trajectory": int((by_traj & diag).sum()),
                                              "pattern_only": int((rows & ~by_traj & diag).sum())},
                            without_trajectory="V (insufficient training) rests on rarity and length alone, "
                                               "at half score",
                            partial_trajectory="V judges them on rarity and length alone")
        if not (rows & facts.pool).any():
            out.warnings.append(f"{self.named()} cannot fire: {why}.")
        return out

    def detect(self, ctx: DiagnosisContext) -> CauseResult:
        cfg = ctx.config.insufficient
        v = ctx.verdicts
        n = len(v)
        density = prompt_density(ctx, cfg.density_k)
        dens_pct = pd.Series(density).rank(pct=True).to_numpy() if n else density
        lengths = np.array([len(r) for r in ctx.responses()], dtype=float)
        len_pct = pd.Series(lengths).rank(pct=True).to_numpy() if n else lengths
        enough = n >= cfg.min_population
        rare = (dens_pct <= cfg.rare_percentile) & enough
        long_ = (len_pct >= cfg.long_percentile) & enough
        pattern = np.maximum(np.where(rare, 1.0 - dens_pct, 0.0), np.where(long_, len_pct, 0.0))
        facts = per_sample(ctx.trajectories, cfg.tau, cfg.last_m) if ctx.trajectories is not None else {}
        fired, score, evidence = np.zeros(n, bool), np.zeros(n), []
        for i, vid in enumerate(ctx.ids):
            ev = {"density": r3(density[i]), "density_percentile": r3(dens_pct[i]), "rare": bool(rare[i]),
                  "answer_chars": int(lengths[i]), "length_percentile": r3(len_pct[i]), "long": bool(long_[i])}
            f = facts.get(vid)
            if f is None:
                fired[i] = rare[i] or long_[i]
                score[i] = cfg.no_trajectory_weight * pattern[i]
                ev.update(trajectory="missing", rule="pattern only (reduced score)")
            else:
                rising = bool(f["slope_p"] > cfg.min_slope)
                falling = bool(f["slope_loss"] < -cfg.min_loss_drop)
                fired[i] = (not f["reached_after"]) and (rising or falling)
                score[i] = 1.0 - cfg.pattern_weight + cfg.pattern_weight * pattern[i] if fired[i] else 0.0
                ev.update(never_learned=not f["reached_after"], trained_step=f["trained_step"],
                          peak_p=r3(f["peak_after_p"]), final_p=r3(f["final_p"]),
                          slope_p=r3(f["slope_p"]), rising=rising, slope_loss=r3(f["slope_loss"]),
                          loss_falling=falling, final_loss=r3(f["final_loss"]), last_m=cfg.last_m,
                          tau=cfg.tau, steps=f["steps"], p=f["p"], rule="trajectory")
            evidence.append(ev)
        summary = {"rare": int(rare.sum()), "long": int(long_.sum()), "pattern_flags": bool(enough),
                   "with_trajectory": sum(vid in facts for vid in ctx.ids),
                   "rising": sum(1 for e in evidence if e.get("rising")),
                   "loss_falling": sum(1 for e in evidence if e.get("loss_falling"))}
        return CauseResult(self.frame(fired, score, evidence), summary, {"density": density})
