"""Detection and knowledge-state probing (paper 3.1.2–3.1.5): option scores → per-sample verdicts.

Scoring is deterministic, so everything here is cheap array work over the cached scores; changing
N, τ or the seeds recomputes verdicts without touching a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ilp_ray import metrics as M
from ilp_ray.config import DetectConfig, ScoringConfig

SCORE_COLUMNS = ("id", "logprob_sum", "n_tokens", "n_chars", "truncated")


def _probs(scores: pd.DataFrame, scoring: ScoringConfig) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities under the configured score, the acc_norm score) as padded arrays."""
    lp = M.pad_ragged(list(scores["logprob_sum"]), -np.inf)
    chars = M.pad_ragged(list(scores["n_chars"]), 0)
    toks = M.pad_ragged(list(scores["n_tokens"]), 0)
    s = M.option_scores(lp, chars, toks, scoring.length_norm)
    return M.option_probs(s, scoring.temperature), M.option_scores(lp, chars, toks, "chars")


def _aligned(items: pd.DataFrame, scores: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"{what} scores lack columns {missing}")
    out = items[["id"]].merge(scores, on="id", how="left", validate="one_to_one")
    if out["logprob_sum"].isna().any():
        lost = out.loc[out["logprob_sum"].isna(), "id"].head(3).tolist()
        raise ValueError(f"{what} scores are missing items, e.g. {lost}")
    return out


def compute_verdicts(items: pd.DataFrame, sft: pd.DataFrame, base: pd.DataFrame | None,
                     scoring: ScoringConfig, detect: DetectConfig) -> tuple[pd.DataFrame, float]:
    """One row per MC item with every detection figure, and the seed stability.

    Args:
        items: MC items with ``id, subset, position, answer`` (and ``options``).
        sft: the fine-tuned model's option scores (``SCORE_COLUMNS``), any row order.
        base: the base model's option scores, or None to skip knowledge-state probing.
        scoring: how option scores become probabilities (length norm, temperature).
        detect: N, τ, seeds, top-K and the knowledge threshold.

    Returns:
        (verdicts, seed_stability). The verdicts are in ``items`` order; ``severity_rank`` is 1 for
        the most severe unlearned item and null for learned ones. The seed stability is the mean
        pairwise Jaccard index of the unlearned sets under ``detect.stability_seeds`` seeds.
    """
    sft = _aligned(items, sft, "fine-tuned model")
    ids = items["id"].astype(str).tolist()
    answers = items["answer"].to_numpy(dtype=np.int64)
    probs, norm_scores = _probs(sft, scoring)

    def run(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        draws = M.sample_draws(probs, M.item_uniforms(ids, detect.n, seed))
        sampled = M.pass_at_n_sampled(draws, answers)
        decide = sampled if detect.on == "sampled" else M.pass_expected(probs, answers)
        return sampled, M.bon_correct(probs, draws, answers), M.unlearned(decide, detect.tau)

    sampled, bon, unl = run(detect.seed)
    per_seed = [unl] + [run(detect.seed + s)[2] for s in range(1, detect.stability_seeds)]
    consistency = np.mean(per_seed, axis=0)

    out = pd.DataFrame({
        "id": ids,
        "subset": items["subset"].astype(str).to_numpy(),
        "position": items["position"].to_numpy(dtype=np.int64),
        "answer": answers,
        "n_options": [len(x) for x in sft["logprob_sum"]],
        "probs": [row[: len(x)].tolist() for row, x in zip(probs, sft["logprob_sum"])],
        "pred": probs.argmax(axis=1),
        "pred_norm": norm_scores.argmax(axis=1),
        "correct": probs.argmax(axis=1) == answers,
        "pass_at_n": sampled,
        "pass_expected": M.pass_expected(probs, answers),
        "bon_correct": bon,
        "entropy": M.entropy(probs),
        "confidence": M.confidence(probs),
        "truncated": sft["truncated"].astype(bool).to_numpy(),
        "unlearned": unl,
        "error_consistency": np.where(unl, consistency, 0.0),
    })
    if base is not None:
        base = _aligned(items, base, "base model")
        bprobs, _ = _probs(base, scoring)
        bp = M.pass_expected(bprobs, answers)
        out["base_probs"] = [row[: len(x)].tolist() for row, x in zip(bprobs, base["logprob_sum"])]
        out["base_pred"] = bprobs.argmax(axis=1)
        out["base_correct"] = out["base_pred"].to_numpy() == answers
        out["base_pass_expected"] = bp
        out["base_confidence"] = M.confidence(bprobs)
        out["known_by_base"] = M.known_by_base(bp, detect.known_threshold)
        out["js_base_sft"] = M.js_divergence(bprobs, probs)
        out["base_truncated"] = base["truncated"].astype(bool).to_numpy()

    rank = np.full(len(out), -1, dtype=np.int64)
    idx = np.flatnonzero(unl)
    order = idx[M.severity_order(consistency[idx], out["pass_expected"].to_numpy()[idx])]
    rank[order] = np.arange(1, len(order) + 1)
    out["severity_rank"] = pd.array(np.where(rank > 0, rank, None), dtype="Int64")
    out["in_top_k"] = (rank > 0) & (rank <= detect.top_k)
    stability = M.seed_stability([{ids[i] for i in np.flatnonzero(u)} for u in per_seed])
    return out, stability


def summarize(v: pd.DataFrame, detect: DetectConfig) -> dict[str, Any]:
    """Summary figures: train-set accuracy (Eq. 1), learn rate = 1 − unlearned share, overall and
    per subset, seed stability of the unlearned set, and the base model's knowledge state."""
    def block(df: pd.DataFrame) -> dict[str, Any]:
        d = {
            "n": len(df),
            "accuracy": float(df["correct"].mean()),
            "accuracy_norm": float((df["pred_norm"] == df["answer"]).mean()),
            "pass_at_n_mean": float(df["pass_at_n"].mean()),
            "pass_expected_mean": float(df["pass_expected"].mean()),
            "bon_accuracy": float(df["bon_correct"].mean()),
            "unlearned": int(df["unlearned"].sum()),
            "learn_rate": float(1.0 - df["unlearned"].mean()),
        }
        if "base_correct" in df:
            d["base_accuracy"] = float(df["base_correct"].mean())
            d["known_by_base_rate"] = float(df["known_by_base"].mean())
            d["js_base_sft_mean"] = float(df["js_base_sft"].mean())
        return d

    out = block(v)
    out["per_subset"] = {str(s): block(g) for s, g in v.groupby("subset", sort=True)}
    out["top_k"] = int(v["in_top_k"].sum())
    out["truncated_items"] = int(v["truncated"].sum())
    if "base_truncated" in v:
        out["base_truncated_items"] = int(v["base_truncated"].sum())
    out["pass_at_n"] = {"n": detect.n, "tau": detect.tau, "on": detect.on}
    return out

