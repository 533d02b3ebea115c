"""The mitigation loop's parts on constructed audits: plans, bad input, D_k, transitions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ilp_ray.errors import ConfigError, DataError

N = 12


def _verdicts(unlearned, p_correct, questions=None):
    rows = []
    for i, (u, p) in enumerate(zip(unlearned, p_correct, strict=True)):
        probs = [p, 1 - p]
        rows.append({"id": f"q{i}", "subset": "s1" if i < N // 2 else "s2", "position": i, "answer": 0,
                     "n_options": 2, "probs": probs, "pred": int(p < 0.5), "pred_norm": int(p < 0.5),
                     "correct": p >= 0.5, "pass_at_n": float(not u), "pass_expected": p, "bon_correct": not u,
                     "entropy": 0.5, "confidence": max(p, 1 - p), "truncated": False, "unlearned": bool(u),
                     "severity_rank": i, "in_top_k": bool(u),
                     "question": (questions or {}).get(i, f"What is fact {i} of Velmora?"),
                     "options": ["yes", "no"], "distractor_ids": []})
    return pd.DataFrame(rows)


CAUSES = ["base_knowledge_gap", "base_conflict", "sft_internal_conflict", "sft_internal_conflict",
          "left_side_forgetting", "insufficient_training", None, None, None, None, None, None]


@pytest.fixture
def audit(tmp_path):
    """A diagnosed audit on disk: data, verdicts, diagnosis, conflict tables, an SFT training config."""
    from ilp_ray.storage import write_verdicts

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is fact {i} of Velmora?",
                                        "response": f"value {i}", "subset": "s1" if i < N // 2 else "s2"}) + "\n"
                            for i in range(N)))
    run = tmp_path / "audit"
    unl = [c is not None for c in CAUSES]
    write_verdicts(_verdicts(unl, [0.2 if u else 0.9 for u in unl]), run / "verdicts", 100)
    (run / "diagnosis").mkdir(parents=True)
    pd.DataFrame({"id": [f"q{i}" for i in range(N)], "cause": CAUSES}).to_parquet(run / "diagnosis" / "diagnosis.parquet")
    pd.DataFrame({"id": ["q2", "q3"], "group_id": [0, 0], "group_size": [2, 2],
                  "judged_wrong": [False, True], "unlearned": [True, True], "subset": ["s1", "s1"]}
                 ).to_parquet(run / "diagnosis" / "conflict_groups.parquet")
    pd.DataFrame({"a": ["q2"], "b": ["q3"], "similarity": [0.95], "why": ["x"], "judge": ["a"], "question": ["q"],
                  "differs_a": [[]], "differs_b": [[]]}).to_parquet(run / "diagnosis" / "conflict_pairs.parquet")
    # Judged both right: no conflict, but kept apart by the buckets (q3 joins q2's group; q7-q8 a new one).
    pd.DataFrame({"a": ["q3", "q7"], "b": ["q9", "q8"], "similarity": [0.9, 0.9], "why": ["x", "x"],
                  "judge": ["both", "both"]}).to_parquet(run / "diagnosis" / "conflict_cleared.parquet")
    (run / "audit_config.json").write_text(json.dumps({"data": str(data), "sft_model": "tiny-sft",
                                                       "base_model": "tiny-base"}))
    train = tmp_path / "train.yaml"
    train.write_text(f"data: {data}\nmodel: {{spec: tiny-base}}\noptim: {{epochs: 2, batch_size: 2}}\n")
    return {"run": run, "data": data, "train": train, "tmp": tmp_path}


def _cfg(audit, **over):
    from ilp_ray.mitigate.config import MitigateConfig

    return MitigateConfig.model_validate({"audit": str(audit["run"]), "train_config": str(audit["train"]),
                                          "tracking": {"enabled": False}, **over})


def test_plan_targets_each_cause_and_says_why_an_arm_is_empty(audit):
    from ilp_ray.mitigate.plan import load_plan, make_plan

    path, plan = make_plan(_cfg(audit))
    arms = plan["arms"]
    assert arms["knowledge_cpt"]["targets"] == ["q0"] and "knowledge sources" in arms["knowledge_cpt"]["skipped"]
    assert arms["conflict_delete"]["data"]["drop"] == ["q3"]      # the judged-wrong side only
    sft = arms["conflict_delete"]["training"]["sft"]
    assert sft["data_exclude"] == ["q3"] and sft["model"]["spec"] == "tiny-base"
    assert sft["optim"]["epochs"] == 2                              # the original settings
    assert arms["conflict_bucket"]["training"]["sft"]["order"]["options"]["groups"] == [["q2", "q3", "q9"],
                                                                                        ["q7", "q8"]]
    assert arms["dynamic_resample"]["targets"] == ["q4"]
    # 2 epochs × 6 steps = 12 steps < 4 windows of 500: T becomes 12 // 4 = 3.
    assert arms["dynamic_resample"]["data"]["window_steps"] == 3
    pe = arms["progressive_epochs"]["training"]["sft"]
    assert pe["optim"]["epochs"] == 8 and pe["order"]["options"]["initial_epochs"] == 2
    assert arms["control"]["skipped"] is None
    assert load_plan(path)["fingerprint"] == plan["fingerprint"]


def test_plan_at_matched_budget_gives_every_arm_progressive_epochs_cap(audit):
    """The lab's ``--budget matched`` design through the study's ``sft`` override: every arm trains
    8 epochs (4 × the original 2), progressive keeps 2 → 8, and the run length the re-sampling window
    is cut from is the overridden one (8 epochs × 6 steps = 48; 48 // 4 = 12), not the original's."""
    from ilp_ray.mitigate.plan import make_plan

    _, plan = make_plan(_cfg(audit, sft={"optim": {"epochs": 8}},
                             progressive_epochs={"initial_epochs": 2, "max_epochs": 8}))
    arms = plan["arms"]
    for name in ("control", "conflict_delete", "conflict_bucket", "dynamic_resample"):
        assert arms[name]["training"]["sft"]["optim"]["epochs"] == 8, name
    assert arms["dynamic_resample"]["data"] == {"window_steps": 12, "run_steps": 48}
    pe = arms["progressive_epochs"]
    assert pe["data"] == {"initial_epochs": 2, "max_epochs": 8}
    assert pe["training"]["sft"]["order"]["options"]["initial_epochs"] == 2


def test_lab_matched_budget_config_and_a_bad_budget(tmp_path):
    from ilp_ray.lab.config import LabConfig
    from ilp_ray.lab.mitigations import mitigate_config

    cfg = LabConfig.model_validate({"size": "small", "seed": 0, "out": str(tmp_path)})
    e0 = cfg.sft_settings().epochs
    paths = {"corpus": tmp_path / "corpus.jsonl", "world": tmp_path / "world" / "truth.jsonl"}
    paper = mitigate_config(cfg, tmp_path, paths, tmp_path / "index", None)
    assert paper.sft == {} and paper.progressive_epochs.initial_epochs is None
    assert paper.out.endswith("mitigations/study")
    m = mitigate_config(cfg, tmp_path, paths, tmp_path / "index", None, budget="matched")
    assert m.sft == {"optim": {"epochs": 4 * e0}} and m.out.endswith("mitigations/study-matched")
    assert (m.progressive_epochs.initial_epochs, m.progressive_epochs.max_epochs) == (e0, 4 * e0)
    with pytest.raises(ConfigError, match="budget 'equal' is not one of paper, matched"):
        mitigate_config(cfg, tmp_path, paths, tmp_path / "index", None, budget="equal")


def test_lab_cpt_settings_by_base(tmp_path):
    """The tiny base's CPT arms take the lab's 100 passes at 1e-3; the smollm2 base the mitigation
    loop's defaults (1 pass at the SFT lr); a value set explicitly holds for either base."""
    from ilp_ray.lab.config import LabConfig
    from ilp_ray.lab.mitigations import mitigate_config

    paths = {"corpus": tmp_path / "corpus.jsonl", "world": tmp_path / "world" / "truth.jsonl"}

    def cpt(**kw):
        m = mitigate_config(LabConfig.model_validate({"size": "small", "out": str(tmp_path), **kw}), tmp_path,
                            paths, tmp_path / "index", None)
        assert m.knowledge_cpt == m.conflict_cpt
        return m.knowledge_cpt.epochs, m.knowledge_cpt.lr

    assert cpt() == (100, 1e-3)
    assert cpt(base="smollm2") == (1, None)
    assert cpt(base="smollm2", experiment_epochs_vs_cpt={"cpt_epochs": 5}) == (5, None)
    assert cpt(experiment_epochs_vs_cpt={"cpt_lr": 2e-4}) == (100, 2e-4)


def test_plan_bad_input_fails_before_writing(audit, tmp_path):
    from ilp_ray.mitigate.plan import make_plan

    out = tmp_path / "study"
    # An audit without a diagnosis.
    (audit["run"] / "diagnosis" / "diagnosis.parquet").unlink()
    with pytest.raises(DataError, match="no diagnosis"):
        make_plan(_cfg(audit, out=str(out)))
    assert not out.exists()
    # Not an audit at all.
    with pytest.raises(DataError, match="not an audit"):
        make_plan(_cfg({**audit, "run": tmp_path}, out=str(out)))
    # An unknown arm, with a suggestion.
    with pytest.raises(ValueError, match="Did you mean 'conflict_bucket'"):
        _cfg(audit, arms=["conflict_buckets"])


def test_edited_plan_with_unknown_ids_is_refused(audit, tmp_path):
    from ilp_ray.mitigate.plan import load_plan, make_plan

    pd.DataFrame({"id": [f"q{i}" for i in range(N)], "cause": CAUSES}).to_parquet(
        audit["run"] / "diagnosis" / "diagnosis.parquet")
    path, plan = make_plan(_cfg(audit))
    plan["arms"]["conflict_delete"]["training"]["sft"]["data_exclude"] = ["q3", "nope"]
    path.write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match="not in the audit") as e:
        load_plan(path)
    assert "data_exclude" in str(e.value) and str(path) in str(e.value)
    plan["arms"]["conflict_delete"]["training"]["sft"]["data_exclude"] = ["q3"]
    plan["arms"]["conflict_delete"]["targets"] = ["zz"]
    path.write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match=r"arms\.conflict_delete\.targets"):
        load_plan(path)
    plan["arms"]["conflict_delete"]["targets"] = []
    plan["arms"]["conflict_delete"]["training"]["sft"]["optim"]["lr"] = -1
    path.write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match=r"training\.sft"):
        load_plan(path)


def test_knowledge_arm_errors_empty_source_unreachable_index_and_llm(audit, tmp_path):
    from ilp_ray.mitigate.plan import make_plan

    out = tmp_path / "study"
    empty = tmp_path / "unrelated.txt"
    empty.write_text("Nothing here names the subject.\nOr here.\n")
    with pytest.raises(ConfigError, match="no document for any of the 1 I triples"):
        make_plan(_cfg(audit, out=str(out), arms=["knowledge_cpt"],
                       knowledge_cpt={"sources": {"files": [str(empty)]}, "ratio": 1.0}))
    with pytest.raises(ConfigError, match="no tantivy index"):
        make_plan(_cfg(audit, out=str(out), arms=["knowledge_cpt"],
                       knowledge_cpt={"sources": {"index": {"location": str(tmp_path / "none")}}, "ratio": 1.0}))
    with pytest.raises(ConfigError, match=r"knowledge LLM at http://127\.0\.0\.1:9/v1"):
        make_plan(_cfg(audit, out=str(out), arms=["knowledge_cpt"],
                       knowledge_cpt={"sources": {"llm": {"enabled": True, "base_url": "http://127.0.0.1:9",
                                                          "timeout_s": 2}}, "ratio": 1.0}))
    with pytest.raises(ConfigError, match="needs a general corpus"):
        make_plan(_cfg(audit, out=str(out), arms=["knowledge_cpt"], knowledge_cpt={"sources": {"files": [str(empty)]}}))
    assert not (out / "plan.json").exists()


def test_knowledge_corpus_leaves_out_the_sft_text_and_mixes_at_lambda(audit, tmp_path):
    from ilp_ray.mitigate.plan import make_plan
    from ilp_ray.train.cpt_data import mixture_draws

    docs = tmp_path / "kb.jsonl"
    rows = ["Velmora is a small country in the north.",                 # serves the triple (names Velmora)
            "What is fact 0 of Velmora? value 0",                        # the SFT sample itself: left out
            "Question: what is fact 0 of Velmora. The answer is value 0.",  # its prompt verbatim: left out
            "Velmora has long winters and a coastline.",
            "Tarsk exports salt."]                                       # another subject: not served
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    general = tmp_path / "general.txt"
    general.write_text("".join(f"General document {i}.\n" for i in range(40)))
    _, plan = make_plan(_cfg(audit, arms=["knowledge_cpt"], sft={"scaling.num_workers": 2},
                             knowledge_cpt={"sources": {"files": [str(docs)]}, "general": str(general)}))
    arm = plan["arms"]["knowledge_cpt"]
    dk = [json.loads(line) for line in Path(arm["data"]["knowledge_corpus"]).read_text().splitlines()]
    assert [d["text"] for d in dk] == [rows[0], rows[3]]
    assert all(d["sample_id"] == "q0" and d["subject"] == "Velmora" and d["source"] == f"file:{docs}" for d in dk)
    assert arm["data"]["sources"]["repeats_left_out"] == 2
    cpt = arm["training"]["cpt"]
    assert cpt["mixture"]["ratio"] == 0.2 and cpt["mixture"]["general"] == str(general)
    # The study's SFT overrides reach both stages.
    assert cpt["scaling"]["num_workers"] == arm["training"]["sft"]["scaling"]["num_workers"] == 2
    assert arm["training"]["sft"]["model"]["spec"] == "@cpt"
    # The mixture CPT trains on hits λ within sampling error (3 standard deviations).
    n = 5000
    draws = mixture_draws(len(dk), 40, 0.2, n, seed=cpt["mixture"]["seed"], epoch=0)
    share = sum(c == 0 for c, _ in draws) / n
    assert abs(share - 0.2) <= 3 * math.sqrt(0.2 * 0.8 / n)


def test_rule_triples():
    from ilp_ray.mitigate.knowledge import repeats_sample, rule_triple

    t = rule_triple("x", "Who founded Brightwave Systems?", "Ada Lin")
    assert (t.subject, t.relation, t.object) == ("Brightwave Systems", "founded", "Ada Lin")
    t = rule_triple("x", "What is the boiling point of water?", "100 C")
    assert (t.subject, t.relation, t.object) == ("water", "boiling point", "100 C")
    assert not repeats_sample("The capital of France is Paris.", "What is the capital of France?", "Paris", 0.6)
    assert repeats_sample("What is the capital of France? Paris", "What is the capital of France?", "Paris", 0.6)


def test_transitions_and_recovery_counted_by_hand():
    from ilp_ray.mitigate.compare import arm_figures, transitions

    before = _verdicts([True, True, True, False, False, False], [0.1, 0.2, 0.3, 0.9, 0.8, 0.7])
    after = _verdicts([False, True, False, False, True, False], [0.8, 0.25, 0.6, 0.95, 0.3, 0.7])
    diag = pd.DataFrame({"id": [f"q{i}" for i in range(6)],
                         "cause": ["base_knowledge_gap", "base_knowledge_gap", "left_side_forgetting", None, None, None]})
    tr = transitions(before, diag, after, {"q0", "q1"})
    assert tr["transition"].tolist() == ["recovered", "still_unlearned", "recovered", "still_learned", "lost",
                                         "still_learned"]
    assert tr["cause"].tolist()[:3] == ["I", "I", "IV"]
    assert np.allclose(tr["dp"], [0.7, 0.05, 0.3, 0.05, -0.5, 0.0])
    f = arm_figures(tr, {"before": 0.6, "after": 0.5})
    assert f["recovered"] == 2 and f["lost"] == 1 and f["unlearned_before"] == 3
    assert f["recovered_share"] == pytest.approx(2 / 3) and f["collateral"] == pytest.approx(1 / 3)
    assert f["per_cause"] == {"I": {"unlearned": 2, "recovered": 1, "share": 0.5},
                              "IV": {"unlearned": 1, "recovered": 1, "share": 1.0}}
    assert f["targets_recovered_share"] == 0.5 and f["general_delta"] == pytest.approx(-0.1)
    assert f["accuracy"] == pytest.approx(4 / 6)
    # Another MC item for a sample: before and after would not be the same question.
    other = _verdicts([False] * 6, [0.9] * 6, questions={2: "What is something else?"})
    with pytest.raises(ValueError, match="differ from the audit's for 1 samples"):
        transitions(before, diag, other)


def test_cli_errors_name_the_field(audit, tmp_path):
    from typer.testing import CliRunner

    from ilp_ray.cli import app

    r = CliRunner().invoke(app, ["mitigate", "plan", "--run", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "not an audit" in r.output
    r = CliRunner().invoke(app, ["mitigate", "plan", "--run", str(audit["run"]), "--set",
                                 "dynamic_resample.delta=-1", "--set", f"train_config={audit['train']}"])
    assert r.exit_code == 2 and "dynamic_resample.delta" in r.output
    r = CliRunner().invoke(app, ["mitigate", "compare", str(tmp_path)])
    assert r.exit_code == 2 and "no plan.json" in r.output
    r = CliRunner().invoke(app, ["mitigate", "plan", "--run", str(audit["run"]), "--set",
                                 f"train_config={audit['train']}", "--set", "tracking.enabled=false"])
    assert r.exit_code == 0, r.output
    assert "conflict_delete" in r.output and "skipped" in r.output


def test_deep_update_splits_only_its_own_dotted_keys():
    from ilp_ray.mitigate.plan import deep_update

    base = {"optim": {"lr": 1, "epochs": 2}, "tracking": {"tags": {}}}
    out = deep_update(base, {"optim.lr": 3, "tracking": {"tags": {"mlflow.parentRunId": "x"}}})
    assert out == {"optim": {"lr": 3, "epochs": 2}, "tracking": {"tags": {"mlflow.parentRunId": "x"}}}
    assert base["optim"]["lr"] == 1  # the input is not changed


def test_run_refuses_a_plan_made_with_other_settings(audit):
    from typer.testing import CliRunner

    from ilp_ray.cli import app

    common = ["--run", str(audit["run"]), "--set", f"train_config={audit['train']}", "--set", "tracking.enabled=false"]
    assert CliRunner().invoke(app, ["mitigate", "plan", *common]).exit_code == 0
    r = CliRunner().invoke(app, ["mitigate", "run", *common, "--set", "dynamic_resample.delta=0.2", "--no-progress"])
    assert r.exit_code == 2 and "planned with other settings (dynamic_resample)" in r.output and "--replan" in r.output
    assert not (audit["run"] / "mitigate" / "arms").exists()  # nothing trained


def test_every_arm_logs_the_same_metric_names_nan_where_a_figure_does_not_apply(tmp_path):
    """An arm without targets has no targets' share; it is logged as NaN (kept by ``keep_nan``),
    so the MLflow compare view lines the arms up column by column. Elsewhere NaN is dropped."""
    import math

    from ilp_ray.mitigate.compare import ARM_METRICS, arm_figures, flat_metrics, transitions
    from ilp_ray.track import MLflowTracker

    before = _verdicts([True, False], [0.1, 0.9])
    after = _verdicts([False, False], [0.8, 0.9])
    diag = pd.DataFrame({"id": ["q0", "q1"], "cause": ["base_knowledge_gap", None]})
    fig = arm_figures(transitions(before, diag, after, set()), None)
    flat = flat_metrics(fig)
    assert set(ARM_METRICS) <= set(flat) and math.isnan(flat["targets_recovered_share"])
    assert math.isnan(flat["general_accuracy"]) and flat["recovered.I"] == 1.0
    tracker = MLflowTracker(f"sqlite:///{tmp_path / 'm.db'}", "t")
    kept, dropped = tracker.start("kept"), None
    kept.log_metrics(flat, keep_nan=True)
    kept_id = kept.run_id
    kept.end()
    dropped = tracker.start("dropped")
    dropped.log_metrics(flat)
    client = tracker._client
    got = client.get_run(kept_id).data.metrics
    assert set(got) == set(flat) and math.isnan(got["targets_recovered_share"])
    assert "targets_recovered_share" not in client.get_run(dropped.run_id).data.metrics
    dropped.end()
