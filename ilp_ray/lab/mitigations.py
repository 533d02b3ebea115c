"""``ilp lab experiment mitigations``: the mitigation loop as the lab's second truth test.

The lab runs (or a finished ``ilp lab run`` in the same ``--out`` is reused), then ``ilp mitigate
plan`` and ``run`` on its audit with every arm. The lab supplies what a real team would have:

- **an encyclopedia** (``mitigations/encyclopedia.jsonl``, indexed with tantivy): every fact SFT
  teaches with the value SFT teaches, written from the world in its declarative statements
  (never the SFT question lines), one document per fact. It is not the pretraining corpus: it
  states the I facts the corpus never does and the II facts with the SFT's value, against the
  corpus's. III facts (two values in SFT) are left out: no source can back both. Both CPT arms
  search it, ``conflict_cpt`` keeping only documents that name the SFT's value;
- **a general MC set** (``world/general_mc.jsonl``: the background facts, in the corpus, never in
  SFT) for the general-ability check;
- the world's corpus as D_general.

The recovery matrix is scored twice: against the diagnosed cause (``compare/recovery.json`` of the
study) and against the **true category** (``truth.jsonl``). ``mitigations/table.json`` holds both,
the diagonal test (the arm aimed at a cause against the best other arm), each arm's collateral
damage and general ability, the paper's tables as rows of the same runs (Tables 2, 4, 8, 11), and
the field's single-signal baselines beside the diagnosis (``ilp_ray.lab.baselines``).

The protocol is fixed by the paper and the mitigation loop's defaults; the CPT arms take the
lab's own CPT settings (``experiment_epochs_vs_cpt``: 100 passes at lr 1e-3, fixed before this
experiment), since the loop's default of one pass over a handful of documents is a few steps.

``budget="matched"`` (``--budget matched``) runs the same study at equal training budget, a second
design added after the first sweep showed that the arm adding epochs wins every row: every arm's
SFT (the control's too) takes progressive epochs' cap, ``4 × e₀`` epochs, while progressive epochs
keeps ``e₀`` and its cap, so it trains at most as long as the others. The question it answers: at
the same number of passes, does the arm aimed at a cause recover more of it than plain training
does? It writes ``mitigations/study-matched/`` and ``mitigations/table-matched.json`` beside the
paper-budget study, which it leaves alone; Table 4 (its own 10-epoch design) is not rerun.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilp_ray.lab.config import LabConfig
from ilp_ray.storage import write_json_atomic

#: The arm aimed at each cause (the paper's remedy); the diagonal of the recovery matrix.
AIMED = {"I": "knowledge_cpt", "II": "conflict_cpt", "III": "conflict_bucket", "IV": "dynamic_resample",
         "V": "progressive_epochs"}
#: The margin by which the aimed arm must beat every other arm on its cause (issue 19's target).
MARGIN = 0.10
#: The study's training budgets: the paper's (each arm as its algorithm says) or matched (above).
BUDGETS = ("paper", "matched")


@dataclass
class MitigationsResult:
    out: Path
    table: dict[str, Any]
    wall_s: float


def encyclopedia(world) -> list[dict]:
    """One reference entry per entity, its SFT facts (III left out) with the SFT's values as an
    infobox: "Greece. Capital: Thessaloniki. Official language: Greek."

    The form is a reference work's, not the world's statement templates: those share most of
    their 3-grams with the SFT questions ("The capital of Greece is …" against "Name the capital
    city of Greece."), and the mitigation loop rightly leaves a document that restates its own
    sample out of D_k (``sources.max_overlap``), which left conflict_cpt 2-5 documents for 7-9 II
    triples on the smollm2 base."""
    facts: dict[str, dict[str, str]] = {}
    for t in world.truth:
        if t["category"] == "III" or t["relation"] not in world.relations:
            continue
        facts.setdefault(t["entity"], {}).setdefault(t["relation"], t["value"])
    docs = []
    for entity, rels in facts.items():
        fields = " ".join(f"{world.relations[r].heading.capitalize()}: {v}." for r, v in rels.items())
        docs.append({"id": f"enc-{len(docs):05d}", "text": f"{entity}. {fields}"})
    return docs


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    from ilp_ray.storage import write_text_atomic

    write_text_atomic(text, path)


def build_encyclopedia(world, out: Path) -> Path:
    """``out/encyclopedia.jsonl`` and its tantivy index ``out/encyclopedia-index`` (rebuilt when the
    world changed); returns the index location."""
    import hashlib
    import shutil

    from ilp_ray.evidence.config import CorpusConfig
    from ilp_ray.evidence.ingest import ingest, manifest_path

    docs = out / "encyclopedia.jsonl"
    _write_if_changed(docs, "".join(json.dumps(d) + "\n" for d in encyclopedia(world)))
    corpus = CorpusConfig.model_validate({"index": {"location": str(out / "encyclopedia-index")}})
    stamp = out / "encyclopedia-index.json"
    ident = {"sha256": hashlib.sha256(docs.read_bytes()).hexdigest()}
    if not stamp.is_file() or json.loads(stamp.read_text()) != ident:
        shutil.rmtree(out / "encyclopedia-index", ignore_errors=True)
        manifest_path(corpus.index).unlink(missing_ok=True)
    ingest([str(docs)], corpus.index, corpus.chunk, corpus.ingest, progress=False)
    write_json_atomic(ident, stamp)
    return out / "encyclopedia-index"


def _suffix(budget: str) -> str:
    if budget not in BUDGETS:
        from ilp_ray.errors import ConfigError

        raise ConfigError(f"budget {budget!r} is not one of {', '.join(BUDGETS)}", field="budget")
    return "" if budget == "paper" else f"-{budget}"


def table_name(budget: str) -> str:
    """The experiment's table file under ``mitigations/``: ``table.json``, ``table-matched.json``."""
    return f"table{_suffix(budget)}.json"


def mitigate_config(cfg: LabConfig, out: Path, paths: dict[str, Path], index: Path, arms: list[str] | None,
                    budget: str = "paper"):
    from ilp_ray.mitigate.config import EPOCH_CAP, MitigateConfig
    from ilp_ray.track import default_tracking_uri

    x = cfg.experiment_epochs_vs_cpt
    cpt = {"sources": {"index": {"location": str(index)}, "k": 5}, "general": str(paths["corpus"]),
           "ratio": x.cpt_ratio, **x.cpt_settings(cfg.base)}
    extra: dict[str, Any] = {}
    if _suffix(budget):  # matched: every arm's SFT at progressive epochs' cap; progressive keeps e0 → cap
        e0 = cfg.sft_settings().epochs
        extra = {"sft": {"optim": {"epochs": EPOCH_CAP * e0}},
                 "progressive_epochs": {"initial_epochs": e0, "max_epochs": EPOCH_CAP * e0}}
    return MitigateConfig.model_validate({
        **extra,
        "audit": str(out / "audit"), "out": str(out / "mitigations" / f"study{_suffix(budget)}"), "arms": arms,
        "knowledge_cpt": cpt, "conflict_cpt": cpt,
        "general_mc": str(paths["world"].parent / "general_mc.jsonl"), "general_format": "plain",
        "tracking": {"experiment": cfg.experiment, "uri": default_tracking_uri(out)[0]}})


def truth_matrix(transitions, truth) -> dict[str, Any]:
    """Share of each true category's unlearned samples every arm recovered (and how many)."""
    t = transitions.merge(truth[["id", "category"]], on="id", how="left")
    unl = t[t["unlearned_before"]]
    cats = [c for c in ("I", "II", "III", "IV", "V", "control") if (unl["category"] == c).any()]
    arms = list(dict.fromkeys(t["arm"]))
    matrix = {c: {a: _share(unl[(unl.category == c) & (unl.arm == a)]) for a in arms} for c in cats}
    n = {c: int(((unl.category == c) & (unl.arm == arms[0])).sum()) for c in cats}
    return {"matrix": matrix, "unlearned": n, "arms": arms}


def _share(g) -> float | None:
    return float((g["transition"] == "recovered").mean()) if len(g) else None


def diagonal(matrix: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Per cause: the aimed arm's share, the best other arm's, the margin, and the verdict."""
    out = {}
    for cause, arm in AIMED.items():
        row = matrix.get(cause)
        if not row or row.get(arm) is None:
            out[cause] = {"arm": arm, "share": None, "note": "no unlearned sample of this cause, or arm not run"}
            continue
        others = {a: v for a, v in row.items() if a != arm and v is not None}
        best = max(others, key=others.get) if others else None
        margin = row[arm] - (others[best] if best else 0.0)
        out[cause] = {"arm": arm, "share": row[arm], "best_other": best,
                      "best_other_share": others.get(best), "margin": margin, "dominates": margin >= MARGIN}
    return out


def accuracy_rows(t, truth) -> dict[str, Any]:
    """The paper's tables as rows of the same runs: accuracy (argmax right) of a set of samples
    before (the lab's SFT) and after each arm that the table compares."""
    t = t.merge(truth[["id", "category"]], on="id", how="left")

    def acc(mask, arm):
        g = t[mask & (t.arm == arm)]
        return {"n": len(g), "after": float(g.correct_after.mean()) if len(g) else None,
                "before": float(g.correct_before.mean()) if len(g) else None}

    arms = set(t.arm)
    out: dict[str, Any] = {}
    for name, cat, rows in (("table4_I", "I", ("progressive_epochs", "knowledge_cpt")),
                            ("table8_III", "III", ("conflict_delete", "conflict_bucket")),
                            ("table2_conflict_II", "II", ("conflict_cpt",)),
                            ("table2_insufficient_V", "V", ("progressive_epochs",))):
        present = [a for a in (*rows, "control") if a in arms]
        if present:
            out[name] = {a: acc(t.category == cat, a) for a in present}
    if "dynamic_resample" in arms:
        pos = t[t.arm == "dynamic_resample"]["position"]
        lo, hi = pos.quantile(0.1), pos.quantile(0.9)
        bands = {"first_10pct": t.position <= lo, "middle": (t.position > lo) & (t.position < hi),
                 "last_10pct": t.position >= hi}
        out["table11_positions"] = {b: acc(m, "dynamic_resample") for b, m in bands.items()}
    return out


def score_items(checkpoint: str, records) -> dict[str, float]:
    """Accuracy, expected pass@10 and learn rate of ``checkpoint`` on the MC ``records``."""
    import numpy as np

    from ilp_ray.metrics import option_probs, pad_ragged, pass_expected
    from ilp_ray.records import McItem
    from ilp_ray.scoring.hf import TransformersEngine

    items = [McItem(id=r.id, question=r.prompt, options=tuple(r.options), answer=int(r.answer), subset=r.subset)
             for r in records]
    scores = TransformersEngine(checkpoint, fmt="plain").score(items)
    probs = option_probs(pad_ragged([s.logprob_sum for s in scores], -np.inf))
    answers = np.array([it.answer for it in items])
    p = pass_expected(probs, answers)
    return {"items": len(items), "accuracy": float((probs.argmax(axis=1) == answers).mean()),
            "pass_at_10": float(p.mean()), "learn_rate": float((p >= 0.5).mean())}


def table4(cfg: LabConfig, out: Path, paths: dict[str, Path], world, lab, knowledge: dict | None,
           progress: bool) -> dict[str, Any]:
    """The paper's Table 4 (folded in from the former ``epochs-vs-cpt`` experiment) on the true
    category I samples: the lab's SFT (its own epochs), the same SFT for ``long_epochs`` (10, the
    paper's) from the same base, and ``knowledge_cpt`` (CPT on D_k, then the lab's SFT), with the
    base and the base after CPT for reference. Every model is scored by one route, on the samples'
    own options: accuracy, expected pass@10 and learn rate (p(correct) >= 0.5); deltas against the
    lab's SFT."""
    import pandas as pd

    from ilp_ray.data import read_sft
    from ilp_ray.lab.run import _log, sft_config, train_fresh
    from ilp_ray.train.config import SftTrainConfig

    x = cfg.experiment_epochs_vs_cpt
    truth = pd.read_json(paths["truth"], lines=True)
    gap_ids = set(truth.loc[truth.category == "I", "id"])
    gap = [r for r in read_sft(paths["sft"]) if r.id in gap_ids]
    if not gap:
        return {"note": "no category I sample in this world"}
    _log(f"Table 4: the lab's SFT for {x.long_epochs} epochs from the same base", progress)
    c = sft_config(cfg, lab.base, paths["sft"], out / "mitigations" / "table4", len(world.sft))
    c.update(name="sft_long_epochs", trajectory={"enabled": False})
    c["optim"]["epochs"] = x.long_epochs
    long_ = train_fresh(SftTrainConfig.model_validate(c), progress)
    epochs = cfg.sft_settings().epochs
    models = [("base", lab.base, "the base, no SFT"), ("sft", lab.sft, f"the lab's SFT ({epochs} epoch(s))"),
              ("sft_long_epochs", str(long_.checkpoint), f"the same SFT for {x.long_epochs} epochs")]
    if knowledge and knowledge.get("cpt_checkpoint"):
        models += [("cpt_only", knowledge["cpt_checkpoint"], "the base after knowledge_cpt's CPT, no SFT"),
                   ("knowledge_cpt", knowledge["sft_checkpoint"], "knowledge_cpt: CPT, then the lab's SFT")]
    rows = [{"arm": arm, "what": what, **score_items(ckpt, gap)} for arm, ckpt, what in models]
    ref = next(r for r in rows if r["arm"] == "sft")
    for r in rows:
        r.update({f"delta_{k}": r[k] - ref[k] for k in ("accuracy", "pass_at_10", "learn_rate")})
    return {"items": len(gap), "rows": rows, "settings": {"epochs": epochs, "long_epochs": x.long_epochs}}


def _baselines(out: Path, truth, metrics: dict) -> dict[str, Any]:
    """The single-signal baselines (``ilp_ray.lab.baselines``) on the same lab run, beside ours."""
    import pandas as pd

    from ilp_ray.lab.baselines import score
    from ilp_ray.storage import load_verdicts

    traj = out / "sft" / "trajectory.parquet"
    return score(load_verdicts(out / "audit"), pd.read_parquet(traj) if traj.is_file() else None, truth, metrics)


def run_mitigations(cfg: LabConfig, progress: bool = True, arms: list[str] | None = None,
                    table4_long: bool = True, budget: str = "paper") -> MitigationsResult:
    """The lab, then the study on its audit, then both matrices and the tables in ``table.json``
    (``table-matched.json`` under ``budget="matched"``, see the module docstring).

    With ``knowledge_cpt`` among the arms and ``table4_long``, Table 4's extra model (the lab's SFT
    for ``long_epochs``) is trained and every Table 4 model scored (``table["table4"]``)."""
    import pandas as pd

    from ilp_ray.lab.run import _log, run_lab
    from ilp_ray.mitigate.plan import make_plan
    from ilp_ray.mitigate.run import run_study
    from ilp_ray.storage import load_verdicts

    suffix = _suffix(budget)  # a bad budget fails before the lab runs
    t0 = time.perf_counter()
    out = Path(cfg.out).resolve()
    lab = run_lab(cfg, progress)
    from ilp_ray.lab.run import build_world

    world, paths = build_world(cfg, out)
    _log("the encyclopedia: every SFT fact with the SFT's value (not the pretraining corpus), indexed", progress)
    index = build_encyclopedia(world, out / "mitigations")
    mcfg = mitigate_config(cfg, out, paths, index, arms, budget)
    _, plan = make_plan(mcfg)
    study = run_study(mcfg.out, arms, progress=progress)
    tr = pd.read_parquet(Path(mcfg.out) / "compare" / "transitions.parquet")
    verdicts = load_verdicts(out / "audit")[["id", "position"]]
    tr = tr.merge(verdicts, on="id", how="left")
    truth = pd.read_json(paths["truth"], lines=True)
    true = truth_matrix(tr, truth)
    cmp = study.compare or {}
    table = {
        "seed": cfg.seed, "size": cfg.size, "base": cfg.base, "lab_macro_f1": lab.metrics.get("macro_f1"),
        "budget": {"design": budget, "sft_epochs": (mcfg.sft.get("optim") or {}).get("epochs",
                                                                                 cfg.sft_settings().epochs),
                   "progressive": plan["arms"].get("progressive_epochs", {}).get("data")},
        "arms": true["arms"], "aimed": AIMED, "margin_target": MARGIN,
        "truth": {"matrix": true["matrix"], "unlearned": true["unlearned"], "diagonal": diagonal(true["matrix"])},
        "diagnosed": {"matrix": cmp.get("matrix"), "unlearned": cmp.get("unlearned_per_cause"),
                      "diagonal": diagonal(cmp.get("matrix") or {})},
        "arm_figures": {a: {k: f.get(k) for k in ("recovered", "lost", "collateral", "accuracy", "learn_rate",
                                                   "general_accuracy", "general_delta")}
                        for a, f in (cmp.get("figures") or {}).items()},
        "tables": accuracy_rows(tr, truth),
        "plan_skipped": {a: p["skipped"] for a, p in plan["arms"].items() if p["skipped"]},
        "baselines": _baselines(out, truth, lab.metrics),
    }
    if "knowledge_cpt" in true["arms"] and table4_long and not suffix:
        kc = json.loads((Path(mcfg.out) / "arms" / "knowledge_cpt" / "result.json").read_text())
        table["table4"] = table4(cfg, out, paths, world, lab, kc, progress)
    table["wall_s"] = time.perf_counter() - t0
    write_json_atomic(table, out / "mitigations" / table_name(budget))
    return MitigationsResult(out / "mitigations", table, table["wall_s"])


def print_mitigations(result: MitigationsResult) -> None:
    t = result.table
    budget = t.get("budget") or {}
    design = budget.get("design", "paper")
    print(f"mitigations (seed {t['seed']}, {t['size']}, {t['base']}, {design} budget"
          f"{', every SFT ' + str(budget.get('sft_epochs')) + ' epochs' if design == 'matched' else ''}): "
          "recovery of each TRUE category's unlearned samples")
    arms = t["arms"]
    print("  cause   n   " + " ".join(f"{a[:12]:>12}" for a in arms))
    for c, row in t["truth"]["matrix"].items():
        cells = " ".join(f"{'-' if row[a] is None else format(row[a], '.2f'):>12}" for a in arms)
        print(f"  {c:<7} {t['truth']['unlearned'][c]:<3} {cells}")
    for c, d in t["truth"]["diagonal"].items():
        if d.get("share") is None:
            print(f"  {c}: {d['note']}")
            continue
        other = "-" if d["best_other"] is None else f"{d['best_other']} {d['best_other_share']:.2f}"
        print(f"  {c}: {d['arm']} {d['share']:.2f} vs best other {other} "
              f"(margin {d['margin']:+.2f}: {'dominates' if d['dominates'] else 'does not dominate'})")
    print("  single-signal baselines on the same run (precision / recall on the true category; ours beside):")
    for key, b in t.get("baselines", {}).items():
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"    {key:<26} {f(b['precision'])} / {f(b['recall'])}   ours {f(b['ours_precision'])} / "
              f"{f(b['ours_recall'])}")
    if t.get("table4", {}).get("rows"):
        print_table4(t["table4"])
    print(f"table: {result.out / table_name(design)}  ({t['wall_s']:.0f} s)")


def print_table4(t4: dict[str, Any]) -> None:
    """Table 4's layout: one row per model on the category I samples, deltas vs the lab's SFT."""
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"Table 4 on the category I samples ({t4['items']}): accuracy, pass@10, learn rate")
    for col in ("model", "accuracy", "pass@10", "learn rate", "Δ learn rate vs the lab's SFT"):
        tab.add_column(col, justify="left" if col == "model" else "right")
    for r in t4["rows"]:
        tab.add_row(r["what"], f"{r['accuracy']:.3f}", f"{r['pass_at_10']:.3f}", f"{r['learn_rate']:.3f}",
                    f"{r['delta_learn_rate']:+.3f}")
    Console().print(tab)
