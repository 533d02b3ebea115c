"""The field's single-signal methods as baseline attributions, scored against the lab's truth.

Each reads only what the project already records (the audit's verdicts with the base model's
scores, and the SFT run's trajectory) and names one cause for an unlearned sample:

- **Forgetting events** (Toneva et al. 2019): a sample correct (argmax) at one trajectory
  evaluation and wrong at the next has a forgetting event. Detector of IV: unlearned, with at
  least one forgetting event after its first training step.
- **SliCK** (Gekhman et al. 2024): a fact is *Unknown* to the base when neither its greedy answer
  nor any of 16 sampled answers is correct. On MC items: greedy = the base's argmax, and a sampled
  answer is correct with probability p = the base's p(correct), so "no correct one in 16" is more
  likely than not when (1 − p)^16 ≥ 0.5 (p ≤ 0.042). Detector of I: unlearned and Unknown.
- **Dataset Cartography** (Swayamdipta et al. 2020): a sample's confidence is its mean p(correct)
  over the evaluations since it was first trained, its variability their standard deviation.
  *Ambiguous*: variability in the top third of all samples; *hard to learn*: confidence in the
  bottom third and not ambiguous (the paper's regions, as terciles). Detectors of III (hard to
  learn) and V (ambiguous), on unlearned samples.

``score`` gives each baseline's precision and recall on the lab's true categories beside the
project's own detector for the same cause.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SLICK_SAMPLES = 16


def forgetting_events(trajectory) -> dict[str, int]:
    """Correct → wrong transitions between consecutive evaluations, per sample, after it was trained."""
    t = trajectory.sort_values(["id", "step"])
    if "trained_step" in t:
        t = t[t["trained_step"].isna() | (t["step"] >= t["trained_step"].fillna(0))]
    out = {}
    for sid, g in t.groupby("id"):
        c = g["correct"].astype(bool).to_numpy()
        out[str(sid)] = int((c[:-1] & ~c[1:]).sum())
    return out


def cartography(trajectory) -> tuple[dict[str, float], dict[str, float]]:
    """Confidence (mean p(correct)) and variability (its std) per sample since its first training."""
    t = trajectory
    if "trained_step" in t:
        t = t[t["trained_step"].isna() | (t["step"] >= t["trained_step"].fillna(0))]
    g = t.groupby("id")["p_correct"]
    return g.mean().astype(float).to_dict(), g.std(ddof=0).fillna(0).astype(float).to_dict()


def attribute(verdicts, trajectory) -> dict[str, set[str]]:
    """Per cause, the unlearned samples each baseline attributes to it."""
    unl = verdicts[verdicts["unlearned"].astype(bool)]
    ids = unl["id"].astype(str).tolist()
    out: dict[str, set[str]] = {}
    if trajectory is not None and len(trajectory):
        ev = forgetting_events(trajectory)
        out["IV:forgetting_events"] = {i for i in ids if ev.get(i, 0) >= 1}
        conf, var = cartography(trajectory)
        vs = np.array(list(var.values()))
        cs = np.array(list(conf.values()))
        v_hi, c_lo = np.quantile(vs, 2 / 3), np.quantile(cs, 1 / 3)
        amb = {i for i in ids if var.get(i, 0) > v_hi}
        out["V:cartography_ambiguous"] = amb
        out["III:cartography_hard"] = {i for i in ids if i not in amb and conf.get(i, 1) <= c_lo}
    if "base_correct" in unl:
        p = np.array([float(np.asarray(b)[int(a)]) for b, a in zip(unl["base_probs"], unl["answer"], strict=True)])
        unknown = (~unl["base_correct"].astype(bool).to_numpy()) & ((1 - p) ** SLICK_SAMPLES >= 0.5)
        out["I:slick_unknown"] = {i for i, u in zip(ids, unknown, strict=True) if u}
    return out


def score(verdicts, trajectory, truth, ours: dict[str, Any] | None = None) -> dict[str, Any]:
    """Precision and recall of every baseline on the true category of its cause (unlearned samples)."""
    cat = dict(zip(truth["id"].astype(str), truth["category"].astype(str), strict=True))
    unl = {str(i) for i in verdicts.loc[verdicts["unlearned"].astype(bool), "id"]}
    out = {}
    for key, picked in attribute(verdicts, trajectory).items():
        cause = key.split(":")[0]
        true = {i for i in unl if cat.get(i) == cause}
        tp = len(picked & true)
        out[key] = {"cause": cause, "picked": len(picked), "true": len(true),
                    "precision": tp / len(picked) if picked else None, "recall": tp / len(true) if true else None,
                    "ours_precision": (ours or {}).get("precision", {}).get(cause),
                    "ours_recall": (ours or {}).get("recall", {}).get(cause)}
    return out
