"""Compare by sample id: per-sample transitions, the recovery matrix, the study report.

Every arm is re-audited on the original audit's MC items (same distractors, same answer
positions), so a sample's before and after are the same question. Per sample and arm::

    recovered        unlearned before, learned after
    lost             learned before, unlearned after (collateral damage)
    still_unlearned  / still_learned
    dp               p(correct) after − before

The recovery matrix has a row per diagnosed cause of the original audit and a column per arm;
a cell is the share of that cause's unlearned samples the arm recovered. Beside it: each arm's
collateral damage (share of learned samples lost), its accuracy and learn rate after, and the
general MC set's accuracy (the cost of CPT on general ability, paper Table 14).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

#: Metric names identical across arms, so MLflow's compare view lines the arms up.
ARM_METRICS = ("recovered_share", "recovered", "lost", "collateral", "accuracy", "learn_rate", "dp_mean",
               "targets_recovered_share", "general_accuracy", "general_delta")


def p_correct(verdicts) -> np.ndarray:
    return np.array([float(np.asarray(p)[int(a)]) for p, a in zip(verdicts["probs"], verdicts["answer"],
                                                                    strict=True)])


def cause_rows(diagnosis) -> dict[str, str]:
    """Row label of each cause name: its numeral where it has one ("I", …), else the name."""
    from ilp_ray.diagnosis.registry import by_roman

    numerals = {name: r for r, name in by_roman().items()}
    return {str(c): numerals.get(str(c), str(c)) for c in diagnosis["cause"].dropna().unique()}


def transitions(before, diagnosis, after, targets: set[str] | None = None):
    """One row per sample: its cause before, learned/unlearned before and after, Δp(correct).

    Raises:
        ValueError: the two audits did not score the same MC items (ids, questions or options differ).
    """
    import pandas as pd

    b = before.set_index(before["id"].astype(str))
    a = after.set_index(after["id"].astype(str))
    if set(b.index) != set(a.index):
        raise ValueError(f"the re-audit scored other samples: {len(set(b.index) ^ set(a.index))} ids differ")
    a = a.loc[b.index]
    same = (b["question"].to_numpy() == a["question"].to_numpy()) & np.array(
        [list(x) == list(y) for x, y in zip(b["options"], a["options"], strict=True)])
    if not same.all():
        raise ValueError(f"the re-audit's MC items differ from the audit's for {int((~same).sum())} samples "
                         f"(e.g. {b.index[~same][0]}): before and after would not be the same question")
    cause = diagnosis.set_index(diagnosis["id"].astype(str))["cause"].reindex(b.index)
    rows = cause_rows(diagnosis)
    ub, ua = b["unlearned"].astype(bool).to_numpy(), a["unlearned"].astype(bool).to_numpy()
    pb, pa = p_correct(b), p_correct(a)
    kind = np.where(ub & ~ua, "recovered", np.where(~ub & ua, "lost",
                    np.where(ub, "still_unlearned", "still_learned")))
    return pd.DataFrame({
        "id": b.index.to_numpy(), "subset": b["subset"].astype(str).to_numpy(),
        "cause": [rows.get(str(c)) if isinstance(c, str) else None for c in cause],
        "unlearned_before": ub, "unlearned_after": ua, "transition": kind,
        "p_before": pb, "p_after": pa, "dp": pa - pb,
        "correct_before": b["correct"].astype(bool).to_numpy(), "correct_after": a["correct"].astype(bool).to_numpy(),
        "target": [i in targets for i in b.index] if targets is not None else False})


def arm_figures(tr, general: dict | None = None) -> dict[str, Any]:
    """An arm's figures from its transitions (the names of ``ARM_METRICS``, plus per cause)."""
    unl, lrn = tr["unlearned_before"], ~tr["unlearned_before"]
    rec = tr["transition"] == "recovered"
    lost = tr["transition"] == "lost"
    out: dict[str, Any] = {
        "n": len(tr), "unlearned_before": int(unl.sum()), "recovered": int(rec.sum()), "lost": int(lost.sum()),
        "recovered_share": float(rec.sum() / unl.sum()) if unl.any() else float("nan"),
        "collateral": float(lost.sum() / lrn.sum()) if lrn.any() else float("nan"),
        "learn_rate": float(1 - tr["unlearned_after"].mean()), "learn_rate_before": float(1 - unl.mean()),
        "accuracy": float(tr["correct_after"].mean()), "accuracy_before": float(tr["correct_before"].mean()),
        "dp_mean": float(tr["dp"].mean()),
    }
    tgt = tr["target"].astype(bool) & unl
    out["targets_recovered_share"] = float(rec[tgt].sum() / tgt.sum()) if tgt.any() else float("nan")
    per = {}
    for cause, g in tr[unl].groupby("cause", dropna=True):
        per[str(cause)] = {"unlearned": len(g), "recovered": int((g["transition"] == "recovered").sum()),
                           "share": float((g["transition"] == "recovered").mean())}
    out["per_cause"] = per
    if general:
        out.update(general_accuracy=general["after"], general_delta=general["after"] - general["before"])
    return out


def flat_metrics(fig: dict[str, Any]) -> dict[str, float]:
    """An arm's figures under fixed MLflow metric names (``recovered.<cause>`` per cause).

    Every arm logs every name of ``ARM_METRICS`` (a figure that does not apply, such as the targets'
    share of an arm without targets, is NaN), so the MLflow UI compares arms column by column."""
    out = {k: float("nan") if fig.get(k) is None else float(fig[k]) for k in ARM_METRICS}
    for cause, c in fig.get("per_cause", {}).items():
        out[f"recovered.{cause}"] = c["share"]
    return out


def accuracy_of(verdicts) -> float:
    return float(verdicts["correct"].astype(bool).mean())


def compare_study(study_dir: str | Path) -> dict[str, Any]:
    """Transitions of every finished arm, the recovery matrix and the report, under ``compare/``.

    Raises:
        ConfigError: no plan, or no finished arm.
    """
    import pandas as pd

    from ilp_ray.errors import ConfigError
    from ilp_ray.storage import load_verdicts, write_json_atomic, write_table_atomic

    study = Path(study_dir).expanduser().resolve()
    plan_path = study / "plan.json"
    if not plan_path.is_file():
        raise ConfigError("not a mitigation study (no plan.json)", file=str(study))
    plan = json.loads(plan_path.read_text())
    audit = Path(plan["audit"])
    before = load_verdicts(audit)
    diagnosis = pd.read_parquet(audit / "diagnosis" / "diagnosis.parquet")
    frames, figures = [], {}
    for name, arm in plan["arms"].items():
        res = study / "arms" / name / "result.json"
        if arm.get("skipped") or not res.is_file():
            continue
        after = load_verdicts(study / "arms" / name / "audit")
        tr = transitions(before, diagnosis, after, set(arm.get("targets") or []))
        general = json.loads(res.read_text()).get("general")
        figures[name] = arm_figures(tr, general)
        frames.append(tr.assign(arm=name))
    if not frames:
        raise ConfigError("no arm of this study has finished: run `ilp mitigate run` first", file=str(study))
    out = study / "compare"
    table = pd.concat(frames, ignore_index=True)
    import pyarrow as pa

    write_table_atomic(pa.Table.from_pandas(table, preserve_index=False), out / "transitions.parquet")
    causes = sorted({c for f in figures.values() for c in f["per_cause"]}, key=_cause_key)
    matrix = {c: {a: figures[a]["per_cause"].get(c, {}).get("share") for a in figures} for c in causes}
    unlearned = {c: next((f["per_cause"][c]["unlearned"] for f in figures.values() if c in f["per_cause"]), 0)
                 for c in causes}
    summary = {"study": str(study), "audit": str(audit), "arms": list(figures), "causes": causes,
               "unlearned_per_cause": unlearned, "matrix": matrix, "figures": figures,
               "before": {"accuracy": accuracy_of(before), "learn_rate": float(1 - before["unlearned"].mean())}}
    write_json_atomic(summary, out / "recovery.json")
    report = write_report(summary, table, plan, out)
    summary["report"] = str(report)
    return summary


def _cause_key(c: str):
    order = ["I", "II", "III", "IV", "V"]
    return (order.index(c) if c in order else len(order), c)


def heatmap(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    causes, arms = summary["causes"], summary["arms"]
    m = np.array([[np.nan if summary["matrix"][c][a] is None else summary["matrix"][c][a] for a in arms]
                  for c in causes], float)
    fig, ax = plt.subplots(figsize=(1.3 * len(arms) + 2.5, 0.6 * len(causes) + 1.8))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
    ax.set_yticks(range(len(causes)), [f"{c} (n={summary['unlearned_per_cause'][c]})" for c in causes])
    for i in range(len(causes)):
        for j in range(len(arms)):
            if not np.isnan(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w" if m[i, j] < 0.6 else "k")
    ax.set_xlabel("arm")
    ax.set_ylabel("diagnosed cause")
    ax.set_title("share of unlearned samples recovered")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(summary: dict[str, Any], table, plan: dict, out: Path) -> Path:
    """``compare/report.html``: the recovery matrix as a heatmap, each arm's figures, and the
    samples each arm recovered and lost."""
    from ilp_ray.storage import write_text_atomic

    heatmap(summary, out / "figures" / "recovery.png")
    e = html.escape
    rows = []
    for a, f in summary["figures"].items():
        rows.append(f"<tr><td>{e(a)}</td><td>{e(str(plan['arms'][a].get('cause') or '-'))}</td>"
                    f"<td>{f['recovered']}/{f['unlearned_before']}</td><td>{f['lost']}</td>"
                    f"<td>{f['collateral']:.3f}</td><td>{f['learn_rate_before']:.3f} → {f['learn_rate']:.3f}</td>"
                    f"<td>{f['dp_mean']:+.3f}</td><td>{_fmt(f.get('general_accuracy'))}"
                    f" ({_fmt(f.get('general_delta'), '+')})</td></tr>")
    lists = []
    for a in summary["arms"]:
        t = table[table["arm"] == a]
        for kind in ("recovered", "lost"):
            g = t[t["transition"] == kind].sort_values("dp", ascending=kind == "lost")
            items = "".join(f"<li><code>{e(r.id)}</code> ({e(str(r.cause or 'learned before'))}, "
                            f"p {r.p_before:.2f} → {r.p_after:.2f})</li>" for r in g.head(50).itertuples())
            lists.append(f"<details><summary>{e(a)}: {len(g)} {kind}</summary><ul>{items}</ul></details>")
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Mitigation study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}</style>
</head><body><h1>Mitigation study</h1>
<p>Audit: <code>{e(summary['audit'])}</code>. Every arm re-audited on the audit's own MC items.
Before: accuracy {summary['before']['accuracy']:.3f}, learn rate {summary['before']['learn_rate']:.3f}.</p>
<h2>Recovery matrix</h2><img src="figures/recovery.png" alt="recovery matrix">
<h2>Arms</h2><table><tr><th>arm</th><th>cause</th><th>recovered</th><th>lost</th><th>collateral</th>
<th>learn rate</th><th>mean Δp</th><th>general MC (Δ)</th></tr>{''.join(rows)}</table>
<h2>Samples</h2>{''.join(lists)}</body></html>"""
    path = out / "report.html"
    write_text_atomic(doc, path)
    return path


def _fmt(v, sign: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:{sign}.3f}"
