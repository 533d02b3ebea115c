"""The diagnosis measured against the lab's truth.

Over the samples the audit found unlearned, the predicted cause is compared with the category the
generator built. ``control`` samples that end unlearned have no true cause: whatever cause they
get counts against that cause's precision. A category sample given no cause (``unattributed``)
counts against its cause's recall.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ilp_ray.lab.world import CATEGORIES, CAUSE_OF

ROMAN = {cause: cat for cat, cause in CAUSE_OF.items()}
PREDICTED = (*CAUSE_OF.values(), "unattributed")


def score(truth: pd.DataFrame, verdicts: pd.DataFrame, diagnosis: pd.DataFrame) -> dict[str, Any]:
    """Yield per category, the confusion matrix, per-cause precision/recall/F1 and macro-F1 (over
    the five causes, and over the causes present: with an unlearned sample or a prediction).

    Args:
        truth: ``truth.jsonl`` of the world (id, category, …).
        verdicts: the audit's verdicts (id, unlearned).
        diagnosis: ``diagnosis.parquet`` (id, cause; cause is null for learned samples).
    """
    df = truth[["id", "category"]].merge(verdicts[["id", "unlearned"]], on="id", how="left")
    if df["unlearned"].isna().any():
        missing = df.loc[df["unlearned"].isna(), "id"].head(3).tolist()
        raise ValueError(f"the audit has no verdict for some lab samples, e.g. {missing}")
    df = df.merge(diagnosis[["id", "cause"]], on="id", how="left")
    yields = {c: _share(df.loc[df.category == c, "unlearned"]) for c in CATEGORIES}
    counts = {c: int((df.category == c).sum()) for c in CATEGORIES}
    unl = df[df.unlearned.astype(bool)].copy()
    unl["cause"] = unl["cause"].fillna("unattributed")
    confusion = {c: {p: int(((unl.category == c) & (unl.cause == p)).sum()) for p in PREDICTED}
                 for c in CATEGORIES}
    per_cause: dict[str, dict[str, float]] = {}
    for cat, cause in CAUSE_OF.items():
        tp = int(((unl.category == cat) & (unl.cause == cause)).sum())
        pred = int((unl.cause == cause).sum())
        true = int((unl.category == cat).sum())
        precision = tp / pred if pred else 0.0
        recall = tp / true if true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_cause[cat] = {"cause": cause, "precision": precision, "recall": recall, "f1": f1,
                          "support": true, "predicted": pred}
    macro = sum(v["f1"] for v in per_cause.values()) / len(per_cause)
    # A cause no unlearned sample has and none is given scores F1 0 above; present: the causes that
    # were there to find or were named (a world whose SFT learned every V sample has no V to find).
    present = [v["f1"] for v in per_cause.values() if v["support"] or v["predicted"]]
    return {
        "macro_f1": macro,
        "macro_f1_present": sum(present) / len(present) if present else 0.0,
        "present": [k for k, v in per_cause.items() if v["support"] or v["predicted"]],
        "recall": {k: v["recall"] for k, v in per_cause.items()},
        "precision": {k: v["precision"] for k, v in per_cause.items()},
        "f1": {k: v["f1"] for k, v in per_cause.items()},
        "support": {k: v["support"] for k, v in per_cause.items()},
        "yield": yields,
        "samples": counts,
        "unlearned": len(unl),
        "confusion": confusion,
    }


def _share(s: pd.Series) -> float:
    return float(s.astype(bool).mean()) if len(s) else float("nan")


def confusion_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """The confusion matrix as a table: true category (rows) × predicted cause (columns, roman)."""
    cols = {p: (ROMAN.get(p, p)) for p in PREDICTED}
    df = pd.DataFrame(metrics["confusion"]).T[list(PREDICTED)].rename(columns=cols)
    df.index.name = "true \\ predicted"
    return df
