"""The diagnosis report: one self-contained HTML file a person reads instead of the Parquet.

Figures are PNGs saved under ``figures/`` and embedded in the HTML as base64 data URIs, so the
file can be mailed or opened from an MLflow artifact view without its folder. Sections: what this
run could and could not show (per cause, whether its inputs were there, the trajectory's coverage
per subset, and the warnings; ``run.coverage``), the cause distribution (overall and per subset), pass@N histograms of the base and fine-tuned
models, confidence against correctness, per-subset learning curves (with a trajectory),
accuracy by training-position decile, the corpus-evidence rates and how they met the causes (with
corpus evidence), the worst samples per cause with their evidence, and the conflict groups.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ilp_ray.diagnosis.registry import color, label

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1320px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}td,th{border:1px solid #ddd;padding:4px 7px;
vertical-align:top;text-align:left}th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.ev{font-family:ui-monospace,monospace;font-size:.92em;white-space:pre-wrap}.fig{display:inline-block;margin:.4em;max-width:640px;vertical-align:top}
.warn li{color:#8a5a00;margin:.2em 0}.bad{color:#b00}.ok{color:#070}.muted{color:#777}.grid{display:flex;flex-wrap:wrap}"""


def _fig_bytes(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


class _Figures:
    def __init__(self, folder: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.folder, self.items = plt, folder, []
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):  # a figure this diagnosis does not draw is not left from the last
            old.unlink()

    def add(self, name: str, fig, caption: str) -> None:
        data = _fig_bytes(fig)
        self.plt.close(fig)
        (self.folder / f"{name}.png").write_bytes(data)
        self.items.append((name, caption, base64.b64encode(data).decode()))

    def html(self, names: list[str] | None = None) -> str:
        return "".join(f'<div class="fig"><img alt="{n}" src="data:image/png;base64,{b}"><br>'
                       f'<span class="muted">{html.escape(c)}</span></div>'
                       for n, c, b in self.items if names is None or n in names)


def _cause_figure(F: _Figures, ct: dict[str, Any]) -> None:
    plt = F.plt
    causes = [c for c in ct["shares"]]
    subsets = list(ct["per_subset"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    ax = axes[0]
    shares = [ct["shares"][c] for c in causes]
    ax.barh([label(c) for c in causes], shares, color=[color(c) for c in causes])
    for y, (c, s) in enumerate(zip(causes, shares, strict=False)):
        ax.text(s, y, f" {s:.0%} ({ct['counts'][c]})", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max([*shares, 0.01]) * 1.35)
    ax.set_title(f"cause of {ct['n_diagnosed']} diagnosed samples")
    ax = axes[1]
    left = np.zeros(len(subsets))
    for c in causes:
        vals = np.array([ct["per_subset"][s]["shares"][c] for s in subsets])
        ax.barh(subsets, vals, left=left, color=color(c), label=label(c))
        left += vals
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title("share per subset")
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.08), ncol=3)
    F.add("cause_distribution", fig, "Primary cause of each diagnosed (unlearned) sample: the paper's Table 10.")


def _pass_figure(F: _Figures, v: pd.DataFrame, base_pass: np.ndarray | None, base_n: int | None) -> None:
    plt = F.plt
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    bins = np.linspace(0, 1, 12)
    ax.hist(v["pass_at_n"], bins=bins, alpha=0.6, label="fine-tuned pass@N", color="#d62728")
    if base_pass is not None:
        ax.hist(base_pass, bins=bins, alpha=0.6, label=f"base pass@{base_n}", color="#1f77b4")
    ax.set_xlabel("pass@N (share of draws that picked the trained answer)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    F.add("pass_at_n", fig, "pass@N of every sample under the fine-tuned and the base model.")


def _calibration_figure(F: _Figures, v: pd.DataFrame) -> None:
    plt = F.plt
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    bins = np.linspace(0, 1, 11)
    for prefix, name, hue in (("", "fine-tuned", "#d62728"), ("base_", "base", "#1f77b4")):
        if f"{prefix}confidence" not in v or f"{prefix}correct" not in v:
            continue
        conf = v[f"{prefix}confidence"].to_numpy(dtype=float)
        corr = v[f"{prefix}correct"].to_numpy(dtype=float)
        b = np.clip(np.digitize(conf, bins) - 1, 0, len(bins) - 2)
        xs = [conf[b == k].mean() for k in range(len(bins) - 1) if (b == k).any()]
        ys = [corr[b == k].mean() for k in range(len(bins) - 1) if (b == k).any()]
        ax.plot(xs, ys, "o-", color=hue, label=name)
    ax.plot([0, 1], [0, 1], ":", color="#999")
    ax.set_xlabel("confidence (probability of the top option)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    F.add("confidence", fig, "Confidence against correctness (binned): points below the diagonal are "
                             "over-confident, i.e. confidently wrong.")


def _curves_figure(F: _Figures, curves: pd.DataFrame) -> None:
    plt = F.plt
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for subset, g in curves.groupby("subset"):
        ax.plot(g["step"], g["accuracy"], "o-", ms=3, label=str(subset))
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy on the trajectory sample")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    F.add("trajectories", fig, "Per-subset accuracy during training: a subset learned and then lost is "
                               "left-side forgetting.")


def _position_figure(F: _Figures, eff: pd.DataFrame) -> None:
    plt = F.plt
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    x = eff["bin"].to_numpy() + 1
    ax.bar(x, eff["accuracy"].fillna(0), color="#1f77b4", label="accuracy")
    ax.plot(x, eff["unlearned_share"].fillna(0), "o-", color="#d62728", label="unlearned share")
    if eff["forgotten_share"].fillna(0).any():
        ax.plot(x, eff["forgotten_share"].fillna(0), "s--", color="#9467bd", label="forgotten share")
    ax.set_xticks(x)
    ax.set_xlabel("training-position decile (1 = first 10% of training)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    F.add("position", fig, "Accuracy by training position: the paper's 'first 10%' is the left bar.")


def _esc(x: Any, n: int = 160) -> str:
    s = str(x)
    return html.escape(s if len(s) <= n else s[: n - 1] + "…")


def _evidence_html(ev: dict) -> str:
    """Key numbers as ``key: value`` lines; partner lists and series get their own short form."""
    lines = []
    for k, val in ev.items():
        if k in ("steps", "p", "partners", "response"):
            continue
        if isinstance(val, float):
            val = f"{val:.3f}"
        lines.append(f"{html.escape(k)}: {_esc(val, 80)}")
    if "p" in ev and "steps" in ev:
        pts = ", ".join(f"{s}:{p:.2f}" for s, p in zip(ev["steps"], ev["p"], strict=False))
        lines.append(f"p(correct) by step: {_esc(pts, 300)}")
    for p in ev.get("partners", [])[:5]:
        lines.append(f"↔ {_esc(p['id'], 40)} (cos {p['similarity']}): “{_esc(p['response'], 60)}” "
                     f"[{_esc(p['why'], 40)}; judge: this sample {p['this_side']}]")
    return '<div class="ev">' + "<br>".join(lines) + "</div>"


def _worst_tables(v: pd.DataFrame, table: pd.DataFrame, causes: list[str], worst: int) -> str:
    parts = []
    vi = v.set_index(v["id"].astype(str))
    for cause in [*causes, "unattributed"]:
        rows = table[table["cause"] == cause]
        if rows.empty:
            continue
        score_col = f"{cause}_score" if cause != "unattributed" else None
        rows = rows.sort_values(score_col, ascending=False) if score_col else rows
        rows = rows.head(worst)
        parts.append(f'<h3 id="cause-{cause}" style="color:{color(cause)}">{label(cause)}'
                     f' <span class="muted">({int((table["cause"] == cause).sum())} samples; worst {len(rows)})</span></h3>')
        parts.append("<table><tr><th>id</th><th>subset</th><th>question</th><th>trained answer</th>"
                     "<th>model's pick</th><th class=num>p(correct)</th><th>signals</th><th>evidence</th></tr>")
        for r in rows.itertuples():
            x = vi.loc[r.id]
            opts = list(x["options"])
            pick = opts[int(x["pred"])]
            ev = json.loads(getattr(r, f"{cause}_evidence")) if cause != "unattributed" else {}
            group = ""
            if ev.get("group_id") is not None:
                group = f'<br><a href="#group-{ev["group_id"]}">conflict group {ev["group_id"]}</a>'
            sig = ", ".join(label(s).split()[0] for s in r.signals) or "—"
            parts.append(
                f'<tr id="s-{_esc(r.id)}"><td>{_esc(r.id)}{group}</td><td>{_esc(r.subset)}</td>'
                f"<td>{_esc(x['question'], 200)}</td><td class=ok>{_esc(opts[int(x['answer'])])}</td>"
                f"<td class=bad>{_esc(pick)}</td><td class=num>{float(x['pass_expected']):.3f}</td>"
                f"<td>{sig}</td><td>{_evidence_html(ev) if ev else ''}</td></tr>")
        parts.append("</table>")
    return "".join(parts)


def _corpus_html(v: pd.DataFrame, table: pd.DataFrame, evidence: pd.DataFrame | None, causes: list[str]) -> str:
    """The corpus-evidence rates (overall, per subset) and how the verdicts met the causes."""
    if evidence is None:
        return ("<p class=muted>No corpus evidence was given: causes I and II rest on the models alone "
                "(enable <code>evidence</code> in the audit config, or set <code>diagnose.evidence</code>).</p>")
    from ilp_ray.evidence.judge import CORPUS_VERDICTS
    from ilp_ray.evidence.run import rates

    ids = v["id"].astype(str)
    ev = evidence.merge(pd.DataFrame({"id": ids, "subset": v["subset"].astype(str)}), on="id", how="inner")
    blocks = {"all": rates(ev), **rates(ev, "subset")}
    rows = "".join(f"<tr><td>{_esc(name)}</td><td class=num>{b['n']}</td>"
                   + "".join(f"<td class=num>{b[c]}</td>" for c in CORPUS_VERDICTS)
                   + f"<td class=num>{b['non_existence_rate']:.1%}</td><td class=num>{b['conflict_rate']:.1%}</td></tr>"
                   for name, b in blocks.items())
    said = dict(zip(ev["id"], ev["corpus_verdict"], strict=True))
    diag = table[table["in_scope"]]
    verdict = diag["id"].astype(str).map(said).fillna("no evidence")
    order = [*CORPUS_VERDICTS, "no evidence"]
    cols = [*causes, "unattributed"]
    cross = pd.crosstab(verdict, diag["cause"]).reindex(index=order, columns=cols, fill_value=0)
    head = "".join(f'<th style="color:{color(c)}">{label(c)}</th>' for c in cols)
    cross_rows = "".join(f"<tr><td>{_esc(r)}</td>" + "".join(f"<td class=num>{int(cross.loc[r, c])}</td>" for c in cols)
                         + "</tr>" for r in order)
    return (f"<p>{len(ev)} samples were judged against the pretraining corpus: <i>supports</i> (a passage "
            "states the trained answer), <i>contradicts</i> (it states another value), <i>absent</i> "
            "(nothing matched). The non-existence rate is the share absent, the conflict rate the share "
            "contradicted (the paper's Table 13).</p>"
            "<table><tr><th>subset</th><th>judged</th>" + "".join(f"<th>{c}</th>" for c in CORPUS_VERDICTS)
            + f"<th>non-existence rate</th><th>conflict rate</th></tr>{rows}</table>"
            "<p>Corpus verdict against the primary cause of each diagnosed sample (absent strengthens I, "
            f"contradicts strengthens II):</p><table><tr><th>corpus</th>{head}</tr>{cross_rows}</table>")


def _range(a, b) -> str:
    return "—" if a is None else str(a) if a == b else f"{a}–{b}"


def _coverage_html(cov: dict[str, Any]) -> str:
    """The "What this run could and could not show" section: causes, trajectory, warnings."""
    from ilp_ray.diagnosis.registry import decision_order

    warn = "".join(f"<li>{html.escape(w)}</li>" for w in cov.get("warnings", []))
    parts = [f'<ul class="warn">{warn}</ul>' if warn else
             "<p class=ok>Every cause had the inputs to be tested on this run.</p>"]
    rows = []
    for c in decision_order():
        e = cov.get(c)
        if e is None:
            continue
        mark = '<span class="ok">yes</span>' if e["testable"] else '<span class="bad">no</span>'
        rows.append(f"<tr><td>{label(c)}</td><td>{mark}</td><td class=num>{e['samples']} of {e['of']}</td>"
                    f"<td>{_esc(e['why'] or '', 300)}</td></tr>")
    parts.append("<table><tr><th>cause</th><th>can fire</th><th>diagnosed samples with its inputs</th>"
                 f"<th>why not</th></tr>{''.join(rows)}</table>")
    t = cov.get("trajectory") or {}
    if not t.get("given"):
        parts.append("<p>No training trajectory was given.</p>")
    else:
        sched = t.get("schedule")
        how = ""
        if sched:
            how = (f"; schedule: every {sched['every_steps']} steps" if sched.get("mode") == "interval" else
                   f"; schedule: automatic, at least {sched.get('min_evals_per_subset')} evaluations per subset")
        parts.append(f"<p>Trajectory: {t['samples']} of {t['of']} samples ({t['share']:.0%}), {t['unlearned']} of "
                     f"{t['unlearned_of']} unlearned ({t['unlearned_share']:.0%}); {t['evaluations']} evaluations"
                     f"{_esc(how)}. IV needs {t['needed_for_iv']} evaluations at or after a sample's training "
                     "step.</p>")
        srows = "".join(
            f"<tr><td>{_esc(s)}</td><td class=num>{r['samples']}</td><td class=num>{r['evaluations']}</td>"
            f"<td class=num>{_range(r['evals_after_min'], r['evals_after_max'])}</td><td class=num>{r['iv_samples']}</td>"
            f"<td>{'yes' if r['iv_possible'] else '<span class=bad>no</span>'}</td><td>{_esc(r.get('why', ''), 200)}</td></tr>"
            for s, r in t.get("per_subset", {}).items())
        parts.append("<table><tr><th>subset</th><th>samples with a trajectory</th><th>evaluations</th>"
                     "<th>evaluations after training (min–max)</th><th>samples IV can test</th><th>IV can fire</th>"
                     f"<th>why not</th></tr>{srows}</table>")
    u = cov.get("untested") or {}
    if u.get("n"):
        parts.append(f"<p class=bad>{u['n']} of {u['of']} diagnosed samples: {_esc(u['why'])} "
                     f"({_esc(', '.join(u['ids']), 400)}{'…' if u['n'] > len(u['ids']) else ''}).</p>")
    return "".join(parts)


def _groups_html(v: pd.DataFrame, groups: pd.DataFrame, limit: int = 30) -> str:
    if groups is None or groups.empty:
        return "<p>No conflicting pairs were found.</p>"
    vi = v.set_index(v["id"].astype(str))
    order = groups.groupby("group_id")["group_size"].first().sort_values(ascending=False, kind="stable")
    parts = [f"<p>{len(order)} groups, {len(groups)} samples; the {min(limit, len(order))} largest:</p>"]
    for gid in order.index[:limit]:
        g = groups[groups["group_id"] == gid]
        parts.append(f'<h4 id="group-{gid}">group {gid} ({len(g)} samples)</h4><table><tr><th>id</th>'
                     "<th>question</th><th>trained answer</th><th class=num>p(correct)</th><th>unlearned</th>"
                     "<th>judged wrong</th></tr>")
        for r in g.itertuples():
            x = vi.loc[r.id]
            parts.append(f"<tr><td>{_esc(r.id)}</td><td>{_esc(x['question'], 200)}</td>"
                         f"<td>{_esc(list(x['options'])[int(x['answer'])])}</td>"
                         f"<td class=num>{float(x['pass_expected']):.3f}</td><td>{'yes' if r.unlearned else ''}</td>"
                         f"<td class=bad>{'yes' if r.judged_wrong else ''}</td></tr>")
        parts.append("</table>")
    return "".join(parts)


def write_report(out: Path, ctx, table: pd.DataFrame, ct: dict[str, Any], results: dict,
                 coverage: dict[str, Any] | None = None) -> Path:
    """Write ``out/report.html`` and ``out/figures/*.png``; returns the HTML path.

    ``coverage``: ``run.coverage`` of this diagnosis (computed here when not given).
    """
    v = ctx.verdicts
    if coverage is None:
        from ilp_ray.diagnosis.run import coverage as compute_coverage

        coverage = compute_coverage(ctx, table)
    F = _Figures(out / "figures")
    _cause_figure(F, ct)
    # The figures read what the detectors computed (their ``info``), never their config sections:
    # a detector that did not run draws nothing.
    kg = results.get("base_knowledge_gap")
    info = kg.info if kg is not None else {}
    _pass_figure(F, v, info.get("base_pass"), info.get("n"))
    _calibration_figure(F, v)
    fg = results.get("left_side_forgetting")
    if fg is not None and "curves" in fg.info:
        _curves_figure(F, fg.info["curves"])
    if fg is not None and "position" in fg.info:
        _position_figure(F, fg.info["position"])

    causes = list(results)
    rows = "".join(f'<tr><td><a href="#cause-{c}">{label(c)}</a></td><td class=num>{ct["counts"][c]}</td>'
                   f'<td class=num>{ct["shares"][c]:.1%}</td>'
                   + "".join(f'<td class=num>{b["shares"][c]:.0%}</td>' for b in ct["per_subset"].values())
                   + "</tr>" for c in ct["shares"])
    head = "".join(f"<th>{_esc(s)}</th>" for s in ct["per_subset"])
    summaries = "".join(f"<tr><td>{label(n)}</td><td class=ev>{_esc(json.dumps(r.summary, default=str), 600)}"
                        f"</td></tr>" for n, r in results.items())
    groups = results["sft_internal_conflict"].info.get("groups") if "sft_internal_conflict" in results else None
    body = f"""<h1>Why did SFT fail to learn these samples?</h1>
<p>Run <code>{_esc(ctx.run_dir)}</code>: {ct['n_samples']} samples, {ct['n_unlearned']} unlearned,
{ct['n_diagnosed']} diagnosed. Each diagnosed sample gets the first cause that fires in the order
III → IV → II → I → V; <i>unattributed</i> when none does.</p>
<h2 id="coverage">What this run could and could not show</h2>{_coverage_html(coverage)}
<h2>Cause distribution</h2>
<table><tr><th>cause</th><th>count</th><th>share</th>{head}</tr>{rows}</table>
{F.html(['cause_distribution'])}
<h2>Pretraining-corpus evidence</h2>{_corpus_html(v, table, ctx.evidence, causes)}
<h2>Models</h2><div class=grid>{F.html(['pass_at_n', 'confidence'])}</div>
<h2>Training dynamics</h2><div class=grid>{F.html(['trajectories', 'position'])}</div>
<h2>Worst samples per cause</h2>{_worst_tables(v, table, causes, ctx.config.report_worst)}
<h2>Conflict groups (III)</h2>{_groups_html(v, groups) if groups is not None else '<p>not tested</p>'}
<h2>Detector summaries</h2><table>{summaries}</table>"""
    doc = (f'<!doctype html><html><head><meta charset="utf-8"><title>ILP diagnosis</title>'
           f"<style>{CSS}</style></head><body>{body}</body></html>")
    from ilp_ray.storage import write_text_atomic

    path = out / "report.html"
    write_text_atomic(doc, path)
    return path
