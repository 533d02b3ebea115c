"""Per-item figures for scored MC items: the one path shared by ``ilp score``, the Serve endpoint
and (through ``compute_verdicts``) the audit, so every surface reports the same numbers."""

from __future__ import annotations

from collections.abc import Sequence

from ilp_ray.config import DetectConfig, ScoringConfig
from ilp_ray.records import McItem, OptionScores


def item_results(items: Sequence[McItem], scores: Sequence[OptionScores], scoring: ScoringConfig,
                 n: int = 5, seed: int = 0) -> list[dict]:
    """One dict per item: option log-likelihoods and counts, probabilities, acc and acc_norm
    predictions, pass@N (sampled, seeded per item; and expected), BoN-N, entropy and confidence.

    Args:
        items: the MC items, with their answers.
        scores: ``engine.score(items)``, in the same order.
        scoring: length normalisation and temperature of the option distribution.
        n: N of pass@N and BoN-N.
        seed: seed of the N draws (an item's draws depend only on the seed and its id).
    """
    import pandas as pd

    from ilp_ray.detect import compute_verdicts

    items_df = pd.DataFrame({"id": [it.id for it in items], "subset": "default",
                             "position": range(len(items)), "answer": [it.answer for it in items]})
    scores_df = pd.DataFrame({"id": [s.id for s in scores], "logprob_sum": [list(s.logprob_sum) for s in scores],
                              "n_tokens": [list(s.n_tokens) for s in scores],
                              "n_chars": [list(s.n_chars) for s in scores],
                              "truncated": [s.truncated for s in scores]})
    v, _ = compute_verdicts(items_df, scores_df, None, scoring,
                            DetectConfig(n=n, seed=seed, stability_seeds=1, on="sampled"))
    out = []
    for s, (_, row) in zip(scores, v.iterrows()):
        r = {"id": s.id, "loglikelihoods": list(s.logprob_sum), "n_tokens": list(s.n_tokens),
             "n_chars": list(s.n_chars), "answer": int(row["answer"])}
        r["probs"] = [float(p) for p in row["probs"]]
        r.update({f: int(row[f]) for f in ("pred", "pred_norm")})
        r.update({f: bool(row[f]) for f in ("correct", "bon_correct", "truncated")})
        r.update({f: float(row[f]) for f in ("pass_at_n", "pass_expected", "entropy", "confidence")})
        out.append(r)
    return out
