"""Near-duplicate prompt pairs and response agreement: the search behind cause III.

``similar_pairs`` finds every pair of samples whose prompt cosine is ``>= theta`` (compared in
float32, as the scores are) among each sample's ``k`` nearest prompts, with the blocked,
memory-bounded ``self_topk_neighbours`` (each pair scored once): no n × n matrix, one
2048 × 2048 tile of scores at a time whatever n is. A pair is found from either side, so it is
missed only when *both* samples have k closer neighbours; ``saturated`` flags the samples whose k-th neighbour still passes theta.
``spark_similar_pairs`` (``spark_search.py``) runs the same search by partitions of query blocks
and returns the same arrays.
"""

from __future__ import annotations

import re

import numpy as np

from ilp_ray.data.mc import normalize_text, self_topk_neighbours

_NUM_WORDS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"])}
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")


def pairs_from_topk(offset: int, idx: np.ndarray, sims: np.ndarray, theta: float):
    """(i, j, sim) with i < j and sim >= theta from a block of top-k rows starting at ``offset``,
    and the block's saturation flags (k-th neighbour >= theta)."""
    t = np.float32(theta)
    rows = offset + np.arange(len(idx))[:, None]
    mask = (sims >= t) & (idx != rows)
    i = np.broadcast_to(rows, idx.shape)[mask]
    j = idx[mask]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    saturated = sims[:, -1] >= t if idx.shape[1] else np.zeros(len(idx), bool)
    return lo.astype(np.int64), hi.astype(np.int64), sims[mask].astype(np.float32), saturated


def dedupe_pairs(i: np.ndarray, j: np.ndarray, s: np.ndarray):
    """Each unordered pair once, sorted by (i, j)."""
    if len(i) == 0:
        return i, j, s
    order = np.lexsort((j, i))
    i, j, s = i[order], j[order], s[order]
    keep = np.ones(len(i), bool)
    keep[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return i[keep], j[keep], s[keep]


def similar_pairs(emb: np.ndarray, theta: float, k: int, block_size: int | None = None):
    """All prompt pairs with cosine >= theta among each sample's k nearest, locally.

    Args:
        emb: float32 ``(n, d)`` unit rows.
        theta: cosine threshold (inclusive).
        k: neighbours per sample, self excluded.
        block_size: queries per block; None: bounded by memory (see ``self_topk_neighbours``).

    Returns:
        ``(i, j, sim, saturated)``: pair arrays with ``i < j``, sorted, and a bool per sample.
    """
    n = len(emb)
    if n < 2:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(n, bool))
    return pairs_from_neighbours(*self_topk_neighbours(emb, min(k + 1, n), block_size=block_size), theta)


def pairs_from_neighbours(idx: np.ndarray, sims: np.ndarray, theta: float):
    """``similar_pairs``' result from a ready all-rows top-k table (self included)."""
    i, j, s, sat = pairs_from_topk(0, idx, sims, theta)
    return (*dedupe_pairs(i, j, s), sat)


def _numbers(text: str) -> list[str]:
    words = _WORD.findall(text.casefold())
    return sorted(_NUM.findall(text.replace(",", "")) + [_NUM_WORDS[w] for w in words if w in _NUM_WORDS])


def response_rule(a: str, b: str, exact: bool) -> tuple[bool | None, str]:
    """The text rules of ``responses_disagree``: (verdict, rule), or (None, "") when only the
    response cosine can decide, so that only those pairs need their responses embedded."""
    if normalize_text(a) == normalize_text(b):
        return False, "same text"
    if exact:
        return True, "different MC answer"
    na, nb = _numbers(a), _numbers(b)
    if na and nb and na != nb:
        return True, "different numbers"
    wa, wb = set(_WORD.findall(a.casefold())), set(_WORD.findall(b.casefold()))
    if wa and wb and (wa <= wb or wb <= wa):
        return False, "one contains the other"
    return None, ""


def responses_disagree(a: str, b: str, cos: float | None, theta_response: float, exact: bool) -> tuple[bool, str]:
    """Do two responses to the same question disagree? Returns (verdict, the rule that decided).

    In order: equal after normalisation → agree; ``exact`` mode (pre-built MC answers) → disagree;
    both carry numbers and they differ → disagree (embeddings barely see digits: "100 degrees"
    vs "90 degrees" has cosine 0.90 on MiniLM); every word of one occurs in the other → agree
    ("Paris" vs "The capital of France is Paris."); else disagree when cosine < theta_response.
    """
    verdict, rule = response_rule(a, b, exact)
    if verdict is not None:
        return verdict, rule
    if cos is None:
        return True, "different text"
    if cos < np.float32(theta_response):
        return True, f"response cosine {cos:.3f} < {theta_response}"
    return False, f"response cosine {cos:.3f} >= {theta_response}"
