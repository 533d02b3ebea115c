"""Hand-built verdict and trajectory tables: every cause is constructed, no model needed."""

import numpy as np
import pandas as pd
import pytest

from ilp_ray import metrics as M


def verdict_row(id, question="q?", options=("right", "wrong1", "wrong2", "wrong3"), answer=0,
                probs=None, base_probs=None, subset="s", position=0, distractor_ids=("x", "y", "z"),
                pass_at_n=None, in_top_k=True, base_pmi=None):
    """One verdict row as the audit writes it; derived columns follow from ``probs``. ``base_pmi``:
    how much the question raised each option for the base (nats; from the audit's option priors)."""
    k = len(options)
    probs = np.asarray(probs if probs is not None else [0.05] + [0.95 / (k - 1)] * (k - 1), dtype=float)
    pc = float(probs[answer])
    row = {"id": id, "subset": subset, "position": position, "answer": answer, "question": question,
           "options": list(options), "distractor_ids": list(distractor_ids), "n_options": k,
           "probs": probs.tolist(), "pred": int(probs.argmax()), "pred_norm": int(probs.argmax()),
           "correct": bool(probs.argmax() == answer), "pass_at_n": pc if pass_at_n is None else pass_at_n,
           "pass_expected": pc, "bon_correct": bool(probs.argmax() == answer),
           "entropy": float(M.entropy(probs[None])[0]), "confidence": float(probs.max()),
           "truncated": False}
    row["unlearned"] = row["pass_at_n"] < 0.2
    row["error_consistency"] = 1.0 if row["unlearned"] else 0.0
    row["in_top_k"] = bool(in_top_k and row["unlearned"])
    row["severity_rank"] = 1 if row["unlearned"] else None
    if base_probs is not None:
        b = np.asarray(base_probs, dtype=float)
        row.update(base_probs=b.tolist(), base_pred=int(b.argmax()), base_correct=bool(b.argmax() == answer),
                   base_pass_expected=float(b[answer]), base_confidence=float(b.max()),
                   known_by_base=bool(b[answer] > 0.8),
                   js_base_sft=float(M.js_divergence(b[None], probs[None])[0]), base_truncated=False)
    if base_pmi is not None:
        row["base_pmi"] = [float(x) for x in base_pmi]
    return row


def verdicts(rows):
    return pd.DataFrame(rows)


def traj_rows(id, ps, subset="s", steps=None, losses=None, trained_step=None):
    """Trajectory rows of one sample (evaluations at steps 10, 20, …); ``trained_step`` adds the
    column the SFT job writes (the first step that trained the sample)."""
    steps = steps or [10 * (i + 1) for i in range(len(ps))]
    losses = losses or [1.0] * len(ps)
    extra = {} if trained_step is None else {"trained_step": trained_step}
    return [{"step": s, "epoch": 0, "reason": "interval", "id": id, "subset": subset, "p_correct": p,
             "correct": p >= 0.5, "loss": lo, **extra} for s, p, lo in zip(steps, ps, losses, strict=False)]


@pytest.fixture
def ctx_factory():
    from ilp_ray.data.embed import HashingEmbedder
    from ilp_ray.diagnosis.base import DiagnosisContext
    from ilp_ray.diagnosis.config import DiagnosisConfig

    def make(rows, traj=None, embedder=None, evidence=None, **cfg):
        from ilp_ray.config import load_config

        conf = load_config(DiagnosisConfig, None, cfg) if cfg else DiagnosisConfig(embedder="hashing")
        return DiagnosisContext(verdicts=verdicts(rows), config=conf,
                                trajectories=None if traj is None else pd.DataFrame(traj),
                                embedder=embedder or HashingEmbedder(), evidence=evidence)
    return make
