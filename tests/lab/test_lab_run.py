"""The small lab end to end through the CLI: every stage for real (Ray Train + DeepSpeed
pretraining and SFT, tantivy evidence, the Ray Data audit, the diagnosis with MiniLM, MLflow).

The floors sit at or below the lowest figure of the small sweep (docs/benchmarks.md, "Current
figures", 2026-12-02 evening: seeds 0-9, 12 IV facts taught 6x, 16 mottos twice; macro-F1
0.996 +- 0.006, min 0.985, every recall >= 0.86; lowest yields over the ten seeds: I 0.17 (seed 0),
II 0.67, III 0.58, IV 0.08, V 0.12; control at most 0.25. Seed 0 there: macro-F1 0.985, yields
control 0.25, I 0.17, II 0.92, III 0.83, IV 0.25, V 0.47; unseen seeds 10-19: macro-F1 >= 0.960, lowest
yields I 0.58, II 0.58, III 0.50, IV 0.08, V 0.19, control at most 0.38, lowest recall II 0.78 on one
seed, 0.88 on the others). They catch a broken stage, not a tuning regression, and leave room for
another CPU's arithmetic: which facts a tiny model learns and forgets moves with it (each machine
this project ran on gave the same seeds other yields).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
#: Floors of the mitigation experiment's diagonal cells (share of the true category's unlearned
#: samples the aimed arm recovered), from the sweep over unseen seeds 20-24 (docs/benchmarks.md,
#: "Mitigations as causal tests"): progressive_epochs on V 0.90, 0.72, 0.50, 1.00, 1.00 (seed 0:
#: 1.00), floor 0.4 below the lowest; knowledge_cpt on I 0.00, 0.25, 0.20, 0.30, 0.50 (seed 0:
#: 0.50): its lowest is 0, so no floor above 0 is justified and I is not asserted.
FLOORS = {"V": 0.4}


def test_small_lab_run(tmp_path):
    out = tmp_path / "lab"
    proc = subprocess.run([sys.executable, "-m", "ilp_ray.cli", "lab", "run", "--size", "small", "--seed", "0",
                           "--out", str(out), "--no-progress"], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    y = m["yield"]
    # What the world is built to do: control facts mostly survive, the categories mostly don't.
    assert y["control"] <= 0.5
    # IV: at least one unlearned plant (a machine of 2026-12-04 gave 2 of 72, 0.028, on seed 0, below
    # the sweep's lowest 0.08: how many plants a 1-layer model forgets moves with the CPU's arithmetic).
    assert y["I"] >= 0.08 and y["II"] >= 0.5 and y["III"] >= 0.4 and y["IV"] > 0 and y["V"] >= 0.05
    assert m["macro_f1"] >= 0.85
    # Every cause is found; III (paraphrased contradictions), II (a corpus that says otherwise) and
    # IV (a trajectory that rose and fell) are the sharpest signals.
    assert min(m["recall"].values()) >= 0.6
    assert m["recall"]["III"] >= 0.8 and m["recall"]["II"] >= 0.8 and m["recall"]["IV"] >= 0.8
    # The evidence stage against the generator's record of the corpus: within 3 points.
    ev = m["evidence"]
    assert abs(ev["nonexistence_rate"] - ev["true_nonexistence_rate"]) <= 0.03
    assert abs(ev["conflict_rate"] - ev["true_conflict_rate"]) <= 0.03
    # The console shows the confusion matrix and says where the report and MLflow are.
    assert "macro-F1" in proc.stdout and "report:" in proc.stdout and "mlflow ui" in proc.stdout
    assert (out / "audit" / "diagnosis" / "report.html").is_file()
    assert (out / "mlflow.db").is_file()
    # A rerun finds every training stage finished and does not train again.
    again = subprocess.run([sys.executable, "-m", "ilp_ray.cli", "lab", "run", "--size", "small", "--seed", "0",
                            "--out", str(out), "--no-progress"], cwd=ROOT, env=os.environ.copy(),
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["stage_wall_s"]["pretrain"] < 5 and m2["stage_wall_s"]["sft"] < 5
    assert m2["base_checkpoint"] == m["base_checkpoint"] and m2["macro_f1"] == pytest.approx(m["macro_f1"])

    # The mitigation experiment on the same folder (issue 19's floor test, and issue 18's loop end to
    # end: nothing in ilp_ray/mitigate knows it is the lab). It reuses the lab's stages, then plans
    # and runs knowledge_cpt (CPT on D_k from the lab's encyclopedia, mixed with the world's corpus)
    # and progressive_epochs, re-audits both on the audit's MC items, prices each on the lab's
    # general MC set, and trains Table 4's extra model (cut to 2 epochs here: mechanics only).
    done = out / "pretrain" / "ilp_done.json"  # rewritten whenever the base is trained
    stamp = done.stat().st_mtime_ns

    def experiment():
        return subprocess.run(
            [sys.executable, "-m", "ilp_ray.cli", "lab", "experiment", "mitigations", "--size", "small", "--seed", "0",
             "--out", str(out), "--no-progress", "--arms", "knowledge_cpt,progressive_epochs",
             "--set", "experiment_epochs_vs_cpt.long_epochs=2"],
            cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=900)

    x = experiment()
    assert x.returncode == 0, x.stdout[-3000:] + x.stderr[-3000:]
    assert done.stat().st_mtime_ns == stamp  # the base was not trained again
    assert "recovery of each TRUE category" in x.stdout and "Table 4" in x.stdout
    table = json.loads((out / "mitigations" / "table.json").read_text())
    # The diagonal cells against the truth, at floors from the sweep (FLOORS above).
    d = table["truth"]["diagonal"]
    assert d["V"]["share"] >= FLOORS["V"] and 0 <= d["I"]["share"] <= 1
    # Table 4: one route for every model, on the true I samples.
    t4 = table["table4"]
    rows = {r["arm"]: r for r in t4["rows"]}
    assert list(rows) == ["base", "sft", "sft_long_epochs", "cpt_only", "knowledge_cpt"]
    for r in rows.values():
        assert r["items"] == m["samples"]["I"] and 0 <= r["accuracy"] <= 1 and 0 <= r["learn_rate"] <= 1
    assert rows["sft"]["delta_learn_rate"] == 0
    # The lab's encyclopedia states facts, never the SFT's question lines.
    docs = [json.loads(line)["text"] for line in (out / "mitigations" / "encyclopedia.jsonl").read_text().splitlines()]
    assert docs and not any("?" in d for d in docs)

    study = out / "mitigations" / "study"
    plan = json.loads((study / "plan.json").read_text())
    res = {a: json.loads((study / "arms" / a / "result.json").read_text()) for a in ("knowledge_cpt", "progressive_epochs")}
    # Progressive epochs recover cause-V samples that were unlearned before it.
    pe = res["progressive_epochs"]["figures"]
    assert pe["per_cause"]["V"]["recovered"] >= 1
    # Knowledge CPT: D_k serves the I targets and its SFT starts from the CPT checkpoint.
    kc = res["knowledge_cpt"]
    assert kc["cpt_checkpoint"] and plan["arms"]["knowledge_cpt"]["targets"]
    sft_cfg = json.loads((study / "arms" / "knowledge_cpt" / "train" / "sft" / "ilp_config.json").read_text())
    assert sft_cfg["config"]["model"]["spec"] == kc["cpt_checkpoint"]
    assert all(0 <= r["general"]["after"] <= 1 for r in res.values())
    assert res["knowledge_cpt"]["general"]["before"] == res["progressive_epochs"]["general"]["before"]
    # The comparison and its report.
    rec = json.loads((study / "compare" / "recovery.json").read_text())
    assert set(rec["arms"]) == set(res) and "V" in rec["matrix"]
    assert (study / "compare" / "report.html").is_file() and (study / "compare" / "figures" / "recovery.png").is_file()
    # MLflow: one parent run, a child per arm with the same metric names, datasets logged.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ilp-lab")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("ilp.kind") == "mitigation-study"]
    assert len(parent) == 1
    children = [r for r in runs if r.data.tags.get("ilp.kind") == "mitigation-arm"]
    assert sorted(r.data.tags["ilp.arm"] for r in children) == sorted(res)
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in children)
    names = [{k for k in r.data.metrics if not k.startswith("recovered.")} for r in children]
    assert all(n == names[0] for n in names) and {"recovered_share", "lost", "collateral", "general_accuracy"} <= names[0]
    assert all(r.inputs.dataset_inputs for r in children)
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {c.info.run_id for c in children}]
    assert {r.data.tags.get("ilp.arm") for r in nested} == set(res)  # training and re-audit runs nest per arm
    # A rerun: a finished arm is never rerun, and a killed arm (trained, not yet re-audited)
    # resumes where it stopped, with no training again.
    stamps = {"knowledge_cpt": (study / "arms" / "knowledge_cpt" / "result.json").stat().st_mtime_ns}
    (study / "arms" / "progressive_epochs" / "result.json").unlink()
    trained = study / "arms" / "progressive_epochs" / "train" / "sft" / "ilp_done.json"
    t0 = trained.stat().st_mtime_ns
    again = experiment()
    assert again.returncode == 0, again.stderr[-3000:]
    assert (study / "arms" / "knowledge_cpt" / "result.json").stat().st_mtime_ns == stamps["knowledge_cpt"]
    assert (study / "arms" / "progressive_epochs" / "result.json").is_file() and trained.stat().st_mtime_ns == t0
    assert json.loads((out / "mitigations" / "table.json").read_text())["truth"] == table["truth"]
