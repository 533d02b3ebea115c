"""Detection metrics of paper section 3.1, as pure functions.

Items have ragged option counts, so per-item option values travel as a padded ``[n_items, k_max]``
array whose padding is ``-inf`` for scores and ``0`` for probabilities (``pad_ragged``). Every
function here is vectorised over items and works on a single item as a 1-row array.

Conventions (each a choice the paper leaves open; the README repeats them):
- Option probabilities are a softmax over option scores at temperature T. The default score is the
  summed log-likelihood, so p(option) is the model's probability of that option's text
  renormalised over the option set.
- pass@N, sampled: N independent draws from the option distribution; the fraction that are correct.
  Draws are seeded per (seed, item id), so an item's draws never depend on the other items.
- pass@N, expected: the exact expectation of the sampled figure, p(correct).
- BoN-N: among the N draws, the one the model is most confident in (highest probability) decides.
- Entropy is in nats. JS divergence uses log base 2, so it lies in [0, 1] like the paper's 0.3 cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import combinations

import numpy as np

NORMS = ("none", "chars", "tokens")


def pad_ragged(rows: Sequence[Sequence[float]], fill: float) -> np.ndarray:
    """Stack ragged per-item option values into ``[n, k_max]``, padding with ``fill``."""
    k_max = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), k_max), fill, dtype=np.float64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def option_scores(logprob_sum: np.ndarray, n_chars: np.ndarray, n_tokens: np.ndarray,
                  norm: str = "none") -> np.ndarray:
    """Per-option score: the summed log-likelihood, optionally divided by characters or tokens.

    ``norm="chars"`` is lm-eval's acc_norm; ``"tokens"`` is the mean per-token log-likelihood.
    Padding (``-inf`` sums) stays ``-inf``.
    """
    if norm == "none":
        return np.asarray(logprob_sum, dtype=np.float64)
    if norm not in NORMS:
        raise ValueError(f"unknown length normalisation {norm!r}; choose one of {', '.join(NORMS)}")
    denom = np.asarray(n_chars if norm == "chars" else n_tokens, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(logprob_sum, dtype=np.float64) / np.maximum(denom, 1.0)
    return np.where(np.isneginf(logprob_sum), -np.inf, out)


def option_probs(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over option scores at temperature T, row-wise; ``-inf`` padding gets probability 0."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64)) / temperature
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(probs: np.ndarray, answers: np.ndarray) -> float:
    """Eq. 1: the fraction of items whose most probable option is the correct one."""
    probs = np.atleast_2d(probs)
    if len(probs) == 0:
        return float("nan")
    return float(np.mean(probs.argmax(axis=1) == np.asarray(answers)))


def item_uniforms(ids: Sequence[str], n: int, seed: int) -> np.ndarray:
    """``[len(ids), n]`` uniforms in [0, 1), seeded by (seed, item id) through a stable hash."""
    out = np.empty((len(ids), n), dtype=np.float64)
    for i, item_id in enumerate(ids):
        h = int.from_bytes(hashlib.blake2b(str(item_id).encode(), digest_size=8).digest(), "little")
        out[i] = np.random.default_rng([seed, h]).random(n)
    return out


def sample_draws(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws: ``[n_items, N]`` option indices, one per uniform."""
    probs = np.atleast_2d(probs)
    cdf = np.cumsum(probs, axis=1)
    draws = (uniforms[:, :, None] >= cdf[:, None, :]).sum(axis=2)
    # Float round-off can leave a row's cdf just under 1; never let a draw land past the last
    # option that has probability (padding columns have none).
    last = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    return np.minimum(draws, last[:, None])


def pass_at_n_sampled(draws: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Fraction of each item's N draws that picked the correct option."""
    return (draws == np.asarray(answers)[:, None]).mean(axis=1)


def pass_expected(probs: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Exact expectation of sampled pass@N for any N: p(correct)."""
    probs = np.atleast_2d(probs)
    return probs[np.arange(len(probs)), np.asarray(answers)]


def bon_correct(probs: np.ndarray, draws: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """BoN-N: is the most confident of the N draws the correct option?"""
    probs = np.atleast_2d(probs)
    conf = np.take_along_axis(probs, draws, axis=1)
    best = draws[np.arange(len(draws)), conf.argmax(axis=1)]
    return best == np.asarray(answers)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each option distribution, in nats (0 · log 0 = 0)."""
    p = np.atleast_2d(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=1)


def confidence(probs: np.ndarray) -> np.ndarray:
    """The probability of the model's top option."""
    return np.atleast_2d(probs).max(axis=1)


def known_by_base(base_pass_expected: np.ndarray, threshold: float = 0.8) -> np.ndarray:
    """Eq. 2: K(x) = 1 when the base model's zero-shot accuracy on x exceeds the threshold.

    The accuracy of repeated zero-shot answers converges to p(correct), which we use exactly.
    """
    return np.asarray(base_pass_expected) > threshold


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Eq. 3: Jensen–Shannon divergence between row-wise distributions, log base 2, in [0, 1]."""
    p, q = np.atleast_2d(p), np.atleast_2d(q)
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / b), 0.0).sum(axis=1)

    return np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, 1.0)


def unlearned(pass_at_n: np.ndarray, tau: float = 0.2) -> np.ndarray:
    """An item is unlearned when its pass@N falls below τ (paper: τ = 0.2 under BoN-5)."""
    return np.asarray(pass_at_n) < tau


def severity_order(error_consistency: np.ndarray, p_correct: np.ndarray) -> np.ndarray:
    """Item indices from most to least severe.

    Error consistency first (the share of seeds under which the item was unlearned), then the
    lower p(correct) first. Ties keep input order (a stable sort), so the order is deterministic.
    """
    return np.lexsort((np.asarray(p_correct), -np.asarray(error_consistency)))


def jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B|; two empty sets are identical (1.0)."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def seed_stability(sets: Sequence[set]) -> float:
    """Mean pairwise Jaccard index of the unlearned sets found under different seeds."""
    pairs = list(combinations(sets, 2))
    if not pairs:
        return 1.0
    return float(np.mean([jaccard(a, b) for a, b in pairs]))
