"""Detection and knowledge-state probing (paper 3.1.2–3.1.5): option scores → per-sample verdicts.

Scoring is deterministic, so everything here is cheap array work over the cached scores; changing
N, τ or the seeds recomputes verdicts without touching a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ilp_ray import metrics as M
from ilp_ray.config import DetectConfig, ScoringConfig
from ilp_ray.records import McItem, OptionScores

SCORE_COLUMNS = ("id", "logprob_sum", "n_tokens", "n_chars", "truncated")


def _probs(scores: pd.DataFrame, scoring: ScoringConfig, prior: np.ndarray | None = None,
           calibrate: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities under the configured score, the acc_norm score) as padded arrays.

    ``prior``: padded question-free log-likelihoods, subtracted from the rows ``calibrate`` marks
    (the PMI of option and question) before any length normalisation.
    """
    lp = M.pad_ragged(list(scores["logprob_sum"]), -np.inf)
    chars = M.pad_ragged(list(scores["n_chars"]), 0)
    toks = M.pad_ragged(list(scores["n_tokens"]), 0)
    norm = M.option_scores(lp, chars, toks, "chars")
    if prior is not None and calibrate is not None and calibrate.any():
        lp = np.where(calibrate[:, None] & np.isfinite(lp), lp - np.where(np.isfinite(prior), prior, 0.0), lp)
    s = M.option_scores(lp, chars, toks, scoring.length_norm)
    return M.option_probs(s, scoring.temperature), norm


def calibrated_rows(items: pd.DataFrame, scoring: ScoringConfig) -> np.ndarray:
    """Which items get the prior subtracted: all ('prior'), none ('none'), or ('auto') the items
    MC conversion built (with distractor ids), not ready-made ones (lm-eval parity)."""
    n = len(items)
    if scoring.calibration == "prior":
        return np.ones(n, bool)
    if scoring.calibration == "none":
        return np.zeros(n, bool)
    return built_items(items)


def built_items(items: pd.DataFrame) -> np.ndarray:
    """Which items MC conversion built from SFT data (they have distractor ids); ready-made MC
    items have none."""
    if "distractor_ids" not in items:
        return np.zeros(len(items), bool)
    return np.array([d is not None and len(d) > 0 for d in items["distractor_ids"]], dtype=bool)


def _prior_array(items: pd.DataFrame, prior: pd.DataFrame | None, what: str) -> np.ndarray | None:
    if prior is None:
        return None
    p = _aligned(items, prior, what, columns=("id", "logprob_sum"))
    return M.pad_ragged(list(p["logprob_sum"]), -np.inf)


def _aligned(items: pd.DataFrame, scores: pd.DataFrame, what: str,
             columns: tuple[str, ...] = SCORE_COLUMNS) -> pd.DataFrame:
    missing = [c for c in columns if c not in scores.columns]
    if missing:
        raise ValueError(f"{what} scores lack columns {missing}")
    out = items[["id"]].merge(scores, on="id", how="left", validate="one_to_one")
    if out["logprob_sum"].isna().any():
        lost = out.loc[out["logprob_sum"].isna(), "id"].head(3).tolist()
        raise ValueError(f"{what} scores are missing items, e.g. {lost}")
    return out


def compute_verdicts(items: pd.DataFrame, sft: pd.DataFrame, base: pd.DataFrame | None,
                     scoring: ScoringConfig, detect: DetectConfig,
                     priors: dict[str, pd.DataFrame] | None = None) -> tuple[pd.DataFrame, float]:
    """One row per MC item with every detection figure, and the seed stability.

    Args:
        items: MC items with ``id, subset, position, answer`` (and ``distractor_ids``, which
            marks the items MC conversion built, for ``calibration: auto``).
        sft: the fine-tuned model's option scores (``SCORE_COLUMNS``), any row order.
        base: the base model's option scores, or None to skip knowledge-state probing.
        scoring: how option scores become probabilities (calibration, length norm, temperature).
        detect: N, τ, seeds, top-K, the knowledge threshold and the fairness check.
        priors: question-free option log-likelihoods by model (``"sft"``, ``"base"``): frames of
            ``id, logprob_sum`` (``ilp_ray.scoring.prior``). Needed where items are calibrated;
            with them every item gets the fairness columns.

    Returns:
        (verdicts, seed_stability). The verdicts are in ``items`` order; ``severity_rank`` is 1 for
        the most severe unlearned item and null for learned ones. The seed stability is the mean
        pairwise Jaccard index of the unlearned sets under ``detect.stability_seeds`` seeds.

    Raises:
        ValueError: calibrated items without the priors of a model they need.
    """
    rows = row_verdicts(items, sft, base, scoring, detect, priors)
    out = rows.frame
    rank, top = severity_ranks(out["unlearned"].to_numpy(), rows.consistency, out["pass_expected"].to_numpy(),
                               detect.top_k)
    out["severity_rank"] = pd.array(np.where(rank > 0, rank, None), dtype="Int64")
    out["in_top_k"] = top
    return out, unlearned_stability(out["id"].tolist(), rows.per_seed)


@dataclass
class RowVerdicts:
    """``row_verdicts``' result: what each item's own scores give, before the set-wide figures."""

    frame: pd.DataFrame  #: every verdict column but ``severity_rank`` and ``in_top_k``
    per_seed: np.ndarray  #: (stability seeds, items) bool: unlearned under each seed
    consistency: np.ndarray  #: the share of seeds under which each item is unlearned


def row_verdicts(items: pd.DataFrame, sft: pd.DataFrame, base: pd.DataFrame | None,
                 scoring: ScoringConfig, detect: DetectConfig,
                 priors: dict[str, pd.DataFrame] | None = None) -> RowVerdicts:
    """The per-item part of ``compute_verdicts`` (same arguments): every figure that depends on
    the item's own scores alone, so that any split of the items into chunks gives the same rows
    (an item's pass@N draws depend only on its id and the seed). The set-wide figures, the
    severity rank and the seed stability, come from ``severity_ranks`` and
    ``unlearned_stability`` over the chunks' results."""
    priors = priors or {}
    sft = _aligned(items, sft, "fine-tuned model")
    ids = items["id"].astype(str).tolist()
    answers = items["answer"].to_numpy(dtype=np.int64)
    calibrate = calibrated_rows(items, scoring)
    need = ["sft"] + (["base"] if base is not None else [])
    if calibrate.any() and any(m not in priors for m in need):
        raise ValueError(f"calibration needs the option priors of {need}; got {sorted(priors)}")
    sft_prior = _prior_array(items, priors.get("sft"), "fine-tuned model prior")
    base_prior = _prior_array(items, priors.get("base"), "base model prior") if base is not None else None
    probs, norm_scores = _probs(sft, scoring, sft_prior, calibrate)

    def run(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        draws = M.sample_draws(probs, M.item_uniforms(ids, detect.n, seed))
        sampled = M.pass_at_n_sampled(draws, answers)
        decide = sampled if detect.on == "sampled" else M.pass_expected(probs, answers)
        return sampled, M.bon_correct(probs, draws, answers), M.unlearned(decide, detect.tau)

    sampled, bon, unl = run(detect.seed)
    per_seed = np.array([unl] + [run(detect.seed + s)[2] for s in range(1, detect.stability_seeds)], dtype=bool)
    consistency = per_seed.mean(axis=0)

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
        "calibrated": calibrate,
    })
    if base is not None:
        base = _aligned(items, base, "base model")
        bprobs, _ = _probs(base, scoring, base_prior, calibrate)
        bp = M.pass_expected(bprobs, answers)
        out["base_probs"] = [row[: len(x)].tolist() for row, x in zip(bprobs, base["logprob_sum"])]
        out["base_pred"] = bprobs.argmax(axis=1)
        out["base_correct"] = out["base_pred"].to_numpy() == answers
        out["base_pass_expected"] = bp
        out["base_confidence"] = M.confidence(bprobs)
        out["known_by_base"] = M.known_by_base(bp, detect.known_threshold)
        out["js_base_sft"] = M.js_divergence(bprobs, probs)
        out["base_truncated"] = base["truncated"].astype(bool).to_numpy()
    if base is not None and base_prior is not None:
        pmi = option_pmi(M.pad_ragged(list(base["logprob_sum"]), -np.inf), base_prior)
        out["base_pmi"] = [r[:k].tolist() for r, k in zip(pmi, out["n_options"], strict=True)]
    fair_prior = base_prior if base_prior is not None else sft_prior
    if fair_prior is not None:
        _fairness(out, fair_prior, sft_prior, base_prior, answers, detect.fairness.prior_threshold,
                  "base" if base_prior is not None else "sft")
    return RowVerdicts(out, per_seed, consistency)


def severity_ranks(unlearned: np.ndarray, consistency: np.ndarray, p_correct: np.ndarray,
                   top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(severity rank, in the top K) of every item over the whole set: rank 1 is the most severe
    unlearned item (``metrics.severity_order``), learned items get -1."""
    unlearned = np.asarray(unlearned, dtype=bool)
    rank = np.full(len(unlearned), -1, dtype=np.int64)
    idx = np.flatnonzero(unlearned)
    order = idx[M.severity_order(np.asarray(consistency)[idx], np.asarray(p_correct)[idx])]
    rank[order] = np.arange(1, len(order) + 1)
    return rank, (rank > 0) & (rank <= top_k)


def unlearned_stability(ids: Sequence[str], per_seed: np.ndarray) -> float:
    """The seed stability: mean pairwise Jaccard index of the unlearned sets (``per_seed`` rows)."""
    return M.seed_stability([{ids[i] for i in np.flatnonzero(u)} for u in per_seed])


def _probs_of(prior: np.ndarray) -> np.ndarray:
    """Softmax of padded log-likelihoods (-inf padding gets 0)."""
    return M.option_probs(prior, 1.0)


def _fairness(out: pd.DataFrame, prior: np.ndarray, sft_prior, base_prior, answers: np.ndarray,
              threshold: float, model: str) -> None:
    """The fairness columns: each option's probability without the question, and the flags.

    ``prior_answer_wins``: the answer alone reaches ``threshold`` without the question (the item
    can be answered from its options); ``prior_distractor_wins``: a distractor does (the item is
    stacked against the answer). ``fair`` is neither. ``prior_model`` names whose prior decides:
    the base model's when it was scored (what pretraining alone prefers), else the fine-tuned one's.
    """
    n_opts = out["n_options"].to_numpy()
    pp = _probs_of(prior)
    rows = np.arange(len(out))
    pa = pp[rows, answers]
    others = pp.copy()
    others[rows, answers] = -1.0
    out["prior_probs"] = [r[:k].tolist() for r, k in zip(pp, n_opts, strict=True)]
    out["prior_pred"] = pp.argmax(axis=1)
    out["prior_answer_wins"] = pa >= threshold
    out["prior_distractor_wins"] = others.max(axis=1) >= threshold
    out["fair"] = ~(out["prior_answer_wins"].to_numpy() | out["prior_distractor_wins"].to_numpy())
    out["prior_model"] = model
    if sft_prior is not None:
        out["sft_prior_logprob"] = [r[:k].tolist() for r, k in zip(sft_prior, n_opts, strict=True)]
    if base_prior is not None:
        out["base_prior_probs"] = [r[:k].tolist() for r, k in zip(_probs_of(base_prior), n_opts, strict=True)]


def option_pmi(lp: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Per option, ``log q(o | question) - log q(o)``, each distribution renormalised over the
    item's options (padded rows; padding is -inf): how much the question raised the option."""
    with np.errstate(divide="ignore", invalid="ignore"):  # padding: -inf - -inf, cut off by the caller
        return np.log(M.option_probs(lp, 1.0)) - np.log(M.option_probs(prior, 1.0))


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
    out["calibrated_items"] = int(v["calibrated"].sum()) if "calibrated" in v else 0
    if "fallback" in v:
        out["mc_fallback"] = {str(k): int(c) for k, c in v["fallback"].value_counts().sort_index().items()}
    if "fair" in v:
        unfair = ~v["fair"].astype(bool)
        out["fairness"] = {
            "model": str(v["prior_model"].iloc[0]) if len(v) else None,
            "threshold": detect.fairness.prior_threshold,
            "answer_wins": int(v["prior_answer_wins"].sum()),
            "distractor_wins": int(v["prior_distractor_wins"].sum()),
            "unfair": int(unfair.sum()), "unfair_share": float(unfair.mean()) if len(v) else 0.0,
            "unlearned_unfair": int((unfair & v["unlearned"].astype(bool)).sum())}
    return out


def item_results(items: Sequence[McItem], scores: Sequence[OptionScores], scoring: ScoringConfig,
                 n: int = 5, seed: int = 0) -> list[dict]:
    """Per-item figures of scored MC items: the one path shared by ``ilp score``, the Serve endpoint
    and (through ``compute_verdicts``) the audit, so every surface reports the same numbers.

    One dict per item: option log-likelihoods and counts, probabilities, acc and acc_norm
    predictions, pass@N (sampled, seeded per item; and expected), BoN-N, entropy and confidence.

    Args:
        items: the MC items, with their answers.
        scores: ``engine.score(items)``, in the same order.
        scoring: length normalisation and temperature of the option distribution.
        n: N of pass@N and BoN-N.
        seed: seed of the N draws (an item's draws depend only on the seed and its id).
    """
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
