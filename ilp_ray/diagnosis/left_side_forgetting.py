"""IV. Left-side forgetting (paper 3.2.4; Appendix D): learned during training, lost by the end.

Per sample, from its trajectory: it held ``p_correct >= tau`` over ``held_evals`` consecutive
evaluations at or after the step that first trained it (``trained_step``; any evaluation when the
trajectory lacks the column), and its final evaluation is below ``tau``, at least ``min_drop``
under that peak. A sample right at a single evaluation and wrong at the next was never held: a
fact taught once can flicker to right just after its step, and losing it is not forgetting. Score: the
relative loss, ``(peak - final) / peak``.

Left-side forgetting is the earlier part of a sequential run overwritten by what came after
(``scope: subset``, the default). Where the subsets trained one after another, the last subset is
the right side, the recent data the model is biased towards: a sample of it is not IV (evidence
``last_subset``). A fact SFT states once in the last subset can be right at a couple of
evaluations and then wrong: that is a sample the run barely taught, not one later data overwrote.
A sample of an earlier subset is IV when held and lost anywhere from its first training step on,
inside its own subset or after it. Where the order is not sequential (one subset, a shuffled
run), the held-then-lost rule above is the whole test.

Two more cases are not IV, and the evidence says which:

- the sample was right only before training reached it (the base model's knowledge, eroded by
  earlier subsets): its own training never taught it, so forgetting is not what went wrong;
- the base model already answered it (``exclude_base_known``): SFT eroded pretrained knowledge
  rather than forgetting what it taught. No cause names that; the sample stays unattributed.

A sample with no trajectory is never guessed at: False, score 0, evidence
``{"trajectory": "missing"}``.

The summary also carries the population view the paper reports: per-subset accuracy curves over
training steps (``info["curves"]``) and the position effect: accuracy, unlearned share and
forgotten share by decile of training position (``info["position"]``; the paper's "first 10%").
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
from ilp_ray.diagnosis.trajectories import (
    per_sample,
    position_deciles,
    subset_curves,
    subset_ends,
)


def position_effect(v: pd.DataFrame, forgotten: np.ndarray, bins: int) -> pd.DataFrame:
    """Accuracy, unlearned share and forgotten share by training-position bin."""
    d = pd.DataFrame({"bin": position_deciles(v["position"].to_numpy(), bins),
                      "correct": v["correct"].to_numpy(dtype=bool),
                      "unlearned": v["unlearned"].to_numpy(dtype=bool), "forgotten": forgotten})
    out = d.groupby("bin").agg(n=("correct", "size"), accuracy=("correct", "mean"),
                               unlearned_share=("unlearned", "mean"), forgotten_share=("forgotten", "mean"))
    return out.reindex(range(bins)).reset_index()


class LeftSideForgetting(CauseDetector):
    name = "left_side_forgetting"
    roman = "IV"
    title = "Left-side forgetting"
    short = "left-side forgetting"
    order = 20  # learned, then lost: rules out missing or conflicting base knowledge as the blocker
    section = "forgetting"
    color = "#9467bd"

    def detect(self, ctx: DiagnosisContext) -> CauseResult:
        cfg = ctx.config.forgetting
        v = ctx.verdicts
        n = len(v)
        if ctx.trajectories is None:
            eff = position_effect(v, np.zeros(n, bool), cfg.deciles)
            return CauseResult(self.silent(n, {"trajectory": "missing"}),
                               {"silent": "no trajectory table"}, {"position": eff})
        facts = per_sample(ctx.trajectories, cfg.tau, 3)
        bins = position_deciles(v["position"].to_numpy(), cfg.deciles)
        known = self.base_known(ctx, cfg.tau) if cfg.exclude_base_known else np.zeros(n, bool)
        ends = subset_ends(ctx.trajectories) if cfg.scope == "subset" else None
        last = list(ends)[-1] if ends else None  # the right side: the subset trained last
        fired, score, evidence = np.zeros(n, bool), np.zeros(n), []
        for i, vid in enumerate(ctx.ids):
            f = facts.get(vid)
            if f is None:
                evidence.append({"trajectory": "missing"})
                continue
            peak = f["peak_after_p"]
            drop = peak - f["final_p"]
            held = f["held_after"] >= cfg.held_evals
            left = ends is None or (f["subset"] in ends and f["subset"] != last)
            fired[i] = held and left and f["final_p"] < cfg.tau and drop >= cfg.min_drop and not known[i]
            score[i] = drop / peak if fired[i] and peak > 0 else 0.0
            ev = {"learned_at_step": f["first_learned_step"], "peak_p": r3(peak), "peak_step": f["peak_after_step"],
                  "final_p": r3(f["final_p"]), "final_step": f["final_step"], "drop": r3(drop), "tau": cfg.tau,
                  "trained_step": f["trained_step"], "position_decile": int(bins[i]) + 1, "n_evals": f["n_evals"]}
            if f["reached_after"] and not held:
                ev["held_evals"] = f["held_after"]  # right at fewer consecutive evaluations than asked
            if f["reached"] and not f["reached_after"]:
                ev["known_before_training_only"] = True  # learned before its step (e.g. base), lost before it
            if known[i]:
                ev["base_known"] = True
            if ends is not None:
                ev["subset_end_step"] = ends.get(f["subset"])
                if held and not left:
                    ev["last_subset"] = True  # held and lost in the last subset: the right side
            evidence.append({**ev, "steps": f["steps"], "p": f["p"]})
        covered = np.array([vid in facts for vid in ctx.ids])
        eff = position_effect(v, fired, cfg.deciles)
        curves = subset_curves(ctx.trajectories)
        summary = {"tau": cfg.tau, "min_drop": cfg.min_drop, "with_trajectory": int(covered.sum()),
                   "scope": "subset" if ends is not None else "sample", "subset_ends": ends,
                   "base_known_excluded": int((known & covered).sum()),
                   "without_trajectory": int((~covered).sum()), "forgotten": int(fired.sum()),
                   "first_decile_accuracy": r3(eff["accuracy"].iloc[0]),
                   "last_decile_accuracy": r3(eff["accuracy"].iloc[-1])}
        return CauseResult(self.frame(fired, score, evidence), summary, {"position": eff, "curves": curves})

    def coverage(self, ctx: DiagnosisContext, facts: CoverageFacts) -> CauseCoverage:
        """Testable where a sample has ``held_evals + 1`` evaluations at or after its training
        step; under ``scope: subset`` it never fires in the last subset of a sequential run."""
        cfg, n, sched = ctx.config.forgetting, facts.n, facts.schedule
        held, has, pool, diag = cfg.held_evals, facts.has_trajectory, facts.pool, facts.diagnosed
        rows = has & (facts.n_after >= held + 1)
        last = sched["last_subset"] if sched else None
        in_last = ctx.verdicts["subset"].astype(str).to_numpy() == last if last is not None else np.zeros(n, bool)
        fire = rows & ~in_last
        if ctx.trajectories is None:
            why = "no training trajectory was given (diagnose.trajectory, --trajectory)"
        elif not (has & pool).any():
            why = (f"none of the {int(pool.sum())} samples diagnosed has a trajectory (it covers "
                   f"{int(has.sum())} of {n} samples; trajectory.max_items)")
        elif not (rows & pool).any():
            why = (f"no sample has held_evals + 1 = {held + 1} evaluations at or after its training step "
                   f"(the trajectory has {sched['evaluations']} in all)")
        else:
            why = (f"every sample it could test is in the last subset ({last}), the recent data, which is "
                   "never IV under forgetting.scope: subset")
        out = CauseCoverage(rows, why, fire, {"last_subset": int((in_last & diag).sum())},
                            without_trajectory=f"{self.named()} cannot fire",
                            partial_trajectory="IV cannot fire for the other {rest}")
        if sched is None:
            return out
        per = sched["per_subset"]
        blocked = [s for s, r in per.items() if s != sched["last_subset"] and r["samples"] and not r["iv_possible"]]
        for s in blocked:
            out.warnings.append(
                f"IV cannot fire in subset {s}: its samples have at most {per[s]['evals_after_max']} "
                f"evaluation(s) at or after their training step, and IV needs held_evals + 1 = {held + 1} "
                f"(held at {held}, then lost). The trajectory has {sched['evaluations']} evaluation(s) "
                f"over {len(per)} subset(s): record it with the default schedule (trajectory.every_steps: "
                "null, trajectory.min_evals_per_subset) or a shorter interval.")
        if not (fire & pool).any() and not blocked and (has & pool).any():
            out.warnings.append(f"{self.named()} cannot fire: {why}.")
        if out.extra["last_subset"]:
            out.warnings.append(f"{out.extra['last_subset']} diagnosed sample(s) are in the last subset "
                                f"({sched['last_subset']}), the recent data of this sequential run: they are "
                                "never IV (forgetting.scope: subset).")
        return out

    @staticmethod
    def base_known(ctx: DiagnosisContext, tau: float) -> np.ndarray:
        """Rows the base model already answered (p(correct) >= tau); none without a base model.

        Under ``corpus.veto``, a right answer about a fact the corpus lacks is a guess.
        """
        v = ctx.verdicts
        if not ctx.has_base:
            return np.zeros(len(v), bool)
        known = v["base_pass_expected"].to_numpy(dtype=float) >= tau  # the audit's figure
        if ctx.config.corpus.veto:
            known &= ctx.corpus_verdicts() != "absent"
        return known
