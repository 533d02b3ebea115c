"""The decision: one primary cause per unlearned sample, every signal kept (paper Fig. 3).

Each unlearned sample is tested in this order, and its cause is the first test that fires:

1. **III, SFT-internal conflict**: the data contradicts itself, so no model could fit both
   sides; every other test is moot while the label itself is in dispute.
2. **IV, left-side forgetting**: the trajectory shows the sample *was* learned, which rules out
   missing or conflicting base knowledge as the blocker; it was lost to later training.
3. **II, base conflict**: the base model confidently believes another answer. A specific,
   positive signal, so it is tested before the negative one that follows.
4. **I, knowledge gap**: the base model does not know it (fails pass@10 and BoN-5) without
   believing anything else. Tested after II, which it explicitly excludes.
5. **V, insufficient training**: still improving at the end, or a rare/long pattern. The
   weakest and most generic signal, so the last resort.

One exception (``relapse_to_base``): a sample IV claims is II when II fires too and its final
answer is the base model's own (confident, and with corpus evidence, what the corpus says). It
was learned and then fell back to its pretrained belief: the conflict is why it did not hold.
Forgetting to any other answer stays IV. The table's ``relapsed`` column marks these samples.

None fires → ``unattributed``: a label is never forced. Learned samples get no cause (null).
With ``scope: top_k`` only the audit's top-K unlearned samples are diagnosed (the paper's 1,000);
the others keep a null cause and ``in_scope`` false. All detector columns stay in the table, so
a sample's secondary signals are visible (``signals`` lists every cause that fired).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ilp_ray.diagnosis.base import CauseResult
from ilp_ray.diagnosis.registry import UNATTRIBUTED, decision_order


def _json(obj: Any) -> str:
    def conv(x):
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, (np.floating,)):
            return None if np.isnan(x) else float(x)
        if isinstance(x, np.ndarray):
            return x.tolist()
        return str(x)
    return json.dumps(obj, default=conv)  # insertion order: each detector puts its key numbers first


def decide(verdicts: pd.DataFrame, results: dict[str, CauseResult], scope: str = "unlearned",
           relapse: bool = True) -> pd.DataFrame:
    """The diagnosis table: one row per sample.

    Args:
        verdicts: the audit's verdict table.
        results: detector name → its ``CauseResult`` (any registered causes).
        scope: "unlearned" (every unlearned sample) or "top_k" (``in_top_k`` only).
        relapse: IV that fell back to the base's confident wrong answer is II (see above).

    Returns:
        ``id, subset, position, unlearned, in_scope, cause, cause_score, signals, relapsed``, then each
        detector's ``is_<name>``, ``<name>_score`` and ``<name>_evidence`` (a JSON string for the
        samples in scope and those the detector fired on; null for the other samples, whose
        evidence nothing reads: at 300k samples it was most of the driver's memory).
    """
    unl = verdicts["unlearned"].to_numpy(dtype=bool)
    in_scope = unl & verdicts["in_top_k"].to_numpy(dtype=bool) if scope == "top_k" else unl
    order = decision_order(results)
    n = len(verdicts)
    cause = np.full(n, None, dtype=object)
    cause_score = np.full(n, np.nan)
    open_ = in_scope.copy()  # diagnosed, no cause yet
    signals: list[list[str]] = [[] for _ in range(n)]
    for name in order:
        f = results[name].frame
        fired = f[f"is_{name}"].to_numpy(dtype=bool)
        score = f[f"{name}_score"].to_numpy(dtype=float)
        for s in np.flatnonzero(fired & in_scope):
            signals[s].append(name)
        first = fired & open_
        cause[first] = name
        cause_score[first] = score[first]
        open_ &= ~first
    cause[open_] = UNATTRIBUTED
    relapsed = np.zeros(n, dtype=bool)
    iv, ii = "left_side_forgetting", "base_conflict"
    if relapse and iv in results and ii in results and "base_pred" in verdicts:
        back = verdicts["pred"].to_numpy() == verdicts["base_pred"].to_numpy()  # NaN (no base) never matches
        relapsed = (cause == iv) & results[ii].frame[f"is_{ii}"].to_numpy(dtype=bool) & back
        cause[relapsed] = ii
        cause_score[relapsed] = results[ii].frame[f"{ii}_score"].to_numpy(dtype=float)[relapsed]
    out = pd.DataFrame({
        "id": verdicts["id"].astype(str).to_numpy(), "subset": verdicts["subset"].astype(str).to_numpy(),
        "position": verdicts["position"].to_numpy(dtype=np.int64), "unlearned": unl, "in_scope": in_scope,
        "cause": cause, "cause_score": cause_score, "signals": signals, "relapsed": relapsed})
    for name in order:
        f = results[name].frame
        fired = f[f"is_{name}"].to_numpy(dtype=bool)
        out[f"is_{name}"] = fired
        out[f"{name}_score"] = f[f"{name}_score"].to_numpy(dtype=float)
        keep = in_scope | fired  # evidence where it is read: the diagnosed samples, and where it fired
        out[f"{name}_evidence"] = [_json(e) if k else None for e, k in zip(f[f"{name}_evidence"], keep, strict=True)]
    return out


def cause_table(diag: pd.DataFrame, causes: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The paper's Table 10: the share of diagnosed (unlearned, in-scope) samples per cause,
    overall and per subset. Shares sum to 1 with ``unattributed``; counts ride along."""
    labels = list(decision_order() if causes is None else causes) + [UNATTRIBUTED]

    def block(df: pd.DataFrame) -> dict[str, Any]:
        d = df[df["in_scope"]]
        counts = d["cause"].value_counts()
        total = len(d)
        return {"n_diagnosed": total,
                "counts": {c: int(counts.get(c, 0)) for c in labels},
                "shares": {c: (float(counts.get(c, 0)) / total if total else 0.0) for c in labels}}

    out = block(diag)
    out["n_samples"] = len(diag)
    out["n_unlearned"] = int(diag["unlearned"].sum())
    out["per_subset"] = {str(s): block(g) for s, g in diag.groupby("subset", sort=True)}
    return out
