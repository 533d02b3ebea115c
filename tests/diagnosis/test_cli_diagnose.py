"""``ilp diagnose`` and the audit's diagnosis stage on a real (tiny) audit run."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from ilp_ray.cli import app
from ilp_ray.diagnosis.config import DiagnosisConfig
from tests.integration.test_audit import make_cfg

runner = CliRunner()


@pytest.fixture(scope="module")
def audited(tmp_path_factory, facts_jsonl, tiny_checkpoints, ray_session):
    """An audit whose last stage is the diagnosis, logged into the audit's MLflow run."""
    from ilp_ray.pipeline.audit import run_audit

    run_dir = tmp_path_factory.mktemp("runs") / "audit"
    cfg = make_cfg(facts_jsonl, tiny_checkpoints, run_dir,
                   diagnose=DiagnosisConfig(enabled=True, embedder="hashing"))
    return run_audit(cfg, progress=False)


def test_audit_runs_diagnosis_as_its_last_stage(audited):
    import mlflow

    out = audited.run_dir / "diagnosis"
    d = pd.read_parquet(out / "diagnosis.parquet")
    assert len(d) == 12 and d["in_scope"].sum() == audited.verdicts["unlearned"].sum()
    assert d.loc[d["unlearned"], "cause"].notna().all() and d.loc[~d["unlearned"], "cause"].isna().all()
    client = mlflow.MlflowClient(tracking_uri=audited.tracking_uri)
    run = client.get_run(audited.run_id)
    assert "diagnosis.share.unattributed" in run.data.metrics
    # What the run could show: a base model was scored, no trajectory was given.
    assert run.data.metrics["diagnosis.coverage.base_conflict.testable"] == 1.0
    assert run.data.metrics["diagnosis.coverage.trajectory_share"] == 0.0
    cov = json.loads((out / "summary.json").read_text())["coverage"]
    assert cov["left_side_forgetting"]["testable"] is False and cov["base_knowledge_gap"]["testable"] is True
    names = {a.path for a in client.list_artifacts(audited.run_id, "diagnosis")}
    assert {"diagnosis/report.html", "diagnosis/figures", "diagnosis/cause_table.json"} <= names
    # Each stage's wall time, in order, and the base was not asked (diagnose.beliefs is off by default).
    timings = json.loads((audited.run_dir / "timings.json").read_text())
    pre = timings.pop("embed_prefetch")  # the diagnosis's prompts embedded while scoring ran
    assert sorted(timings, key=lambda k: timings[k]["start"]) == ["load", "mc", "score", "verdicts", "diagnosis"]
    assert audited.timings == {**timings, "embed_prefetch": pre}
    assert all(t["wall_s"] >= 0 for t in timings.values())
    assert pre["done"] is True and pre["error"] is None and pre["start"] <= timings["score"]["start"]
    assert pre["start"] + pre["wall_s"] <= timings["score"]["start"] + timings["score"]["wall_s"] + 0.1
    assert timings["score"]["start"] >= timings["mc"]["start"] + timings["mc"]["wall_s"] - 1e-3
    asked = json.loads((out / "summary.json").read_text())["base_conflict"]["asked"]
    assert "off" in asked["skipped"]


def test_ilp_diagnose_asks_the_audits_base_model(audited, tmp_path):
    """With beliefs on, the probe finds the audit's base model in its run directory and runs its
    self-check first; the tiny random base recognises nothing, and the summary says so."""
    import shutil

    run = tmp_path / "audit"
    shutil.copytree(audited.run_dir, run)
    r = runner.invoke(app, ["diagnose", "--run", str(run), "--set", "embedder=hashing", "--set", "tracking.enabled=false",
                            "--set", "beliefs.enabled=auto"])
    assert r.exit_code == 0, r.output
    asked = json.loads((run / "diagnosis" / "summary.json").read_text())["base_conflict"]["asked"]
    audit_cfg = json.loads((run / "audit_config.json").read_text())
    assert asked["model"] == audit_cfg["base_model"] and asked["format"] == audit_cfg["scoring"]["format"]
    known = int(audited.verdicts["known_by_base"].sum())
    assert asked["recall_check"]["samples"] == min(known, 32)
    assert asked["asked"] == 0 and ("recognises" in asked["skipped"])


def test_ilp_diagnose_with_a_trajectory(audited, tmp_path):
    v = audited.verdicts
    traj = []
    for n, vid in enumerate(v["id"]):
        ps = [0.2, 0.7, 0.8, 0.1] if n % 2 == 0 else [0.05, 0.1, 0.15, 0.2]  # learned-then-lost, or still rising
        traj += [{"step": 10 * (s + 1), "epoch": 0, "reason": "interval", "id": vid, "subset": sub,
                  "p_correct": p, "correct": p >= 0.5, "loss": 1.0}
                 for s, (p, sub) in enumerate(zip(ps, [v["subset"].iloc[n]] * 4, strict=False))]
    tpath = tmp_path / "trajectory.parquet"
    pd.DataFrame(traj).to_parquet(tpath)
    r = runner.invoke(app, ["diagnose", "--run", str(audited.run_dir), "--trajectory", str(tpath),
                            "--set", "embedder=hashing", "--set", "tracking.enabled=false"])
    assert r.exit_code == 0, r.output
    assert "Diagnosis:" in r.output and "report:" in r.output
    out = audited.run_dir / "diagnosis"
    d = pd.read_parquet(out / "diagnosis.parquet")
    ct = json.loads((out / "cause_table.json").read_text())
    assert ct["n_diagnosed"] == int(d["in_scope"].sum()) and set(ct["per_subset"]) == {"geo", "sci"}
    diag = d[d["in_scope"]]
    assert (diag["cause"] != "unattributed").all()  # every sample has a trajectory that explains it
    assert {"left_side_forgetting", "insufficient_training"} & set(diag["cause"])
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "Worst samples per cause" in html
    for fig in ("cause_distribution", "pass_at_n", "confidence", "trajectories", "position"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    assert (out / "conflict_groups.parquet").exists()


def test_run_without_verdicts_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["diagnose", "--run", str(tmp_path), "--set", "embedder=hashing"])
    assert r.exit_code == 2 and f"{tmp_path}: no verdicts" in r.output
    r = runner.invoke(app, ["diagnose", "--run", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such audit run directory" in r.output


def test_bad_config_names_file_line_and_field(tmp_path, audited):
    cfg = tmp_path / "diag.yaml"
    cfg.write_text("embedder: hashing\nconflict:\n  theta: 2\n")
    r = runner.invoke(app, ["diagnose", "--run", str(audited.run_dir), "--config", str(cfg)])
    assert r.exit_code == 2 and f"{cfg}:3: field 'conflict.theta'" in r.output
    r = runner.invoke(app, ["diagnose", "--run", str(audited.run_dir), "--set", "conflict.judge=llm"])
    assert r.exit_code == 2 and "judge_url" in r.output


def test_bad_trajectory_names_file_and_column(tmp_path, audited):
    tpath = tmp_path / "t.parquet"
    pd.DataFrame({"step": [1], "id": ["f00"]}).to_parquet(tpath)
    r = runner.invoke(app, ["diagnose", "--run", str(audited.run_dir), "--trajectory", str(tpath),
                            "--set", "embedder=hashing"])
    assert r.exit_code == 2 and f"{tpath}: field 'p_correct': missing column" in r.output


def test_the_report_draws_only_what_the_detectors_that_ran_computed(audited, tmp_path):
    """The report reads the detectors' results, not their config sections: without the forgetting
    and knowledge-gap detectors there is no position figure and no base pass@N histogram, and the
    report is still whole."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(audited.run_dir, run)
    r = runner.invoke(app, ["diagnose", "--run", str(run), "--set", "embedder=hashing", "--set", "tracking.enabled=false",
                            "--set", "causes=[sft_internal_conflict,base_conflict,insufficient_training]"])
    assert r.exit_code == 0, r.output
    figs = {p.stem for p in (run / "diagnosis" / "figures").glob("*.png")}
    assert "position" not in figs and {"cause_distribution", "pass_at_n", "confidence"} <= figs
    html = (run / "diagnosis" / "report.html").read_text()
    assert "Detector summaries" in html and "base pass@" not in html


def test_a_diagnosis_run_again_reads_the_prompt_embeddings_back(audited, tmp_path):
    """The audit's prefetch left every prompt's embedding in the cache: the diagnosis embedded
    none, a second diagnosis embeds none either, and both decide as one without the cache."""
    import shutil

    from ilp_ray.data.embed import HashingEmbedder
    from ilp_ray.data.embed_cache import EmbeddingCache
    from ilp_ray.diagnosis.base import embeddings_dir
    from ilp_ray.diagnosis.run import run_diagnosis

    run = tmp_path / "audit"
    shutil.copytree(audited.run_dir, run)
    parts = sorted(embeddings_dir(run).rglob("part-*.npz"))
    assert parts
    with open(audited.summary["data"]) as f:
        prompts = [json.loads(line)["prompt"] for line in f]
    assert EmbeddingCache(embeddings_dir(run), HashingEmbedder()).missing(prompts) == 0
    cfg = DiagnosisConfig(enabled=True, embedder="hashing", data=audited.summary["data"], tracking={"enabled": False})
    again = run_diagnosis(run, cfg)
    assert sorted(embeddings_dir(run).rglob("part-*.npz")) == parts  # nothing embedded
    plain = run_diagnosis(run, cfg.model_copy(update={"embed_cache": False}))
    pd.testing.assert_frame_equal(again.table, plain.table)


def test_a_large_conflict_group_reaches_the_coverage_warnings(audited, tmp_path):
    """III's own warning (a group over conflict.warn_group_size) is among the warnings of the
    summary and the CLI: three records of the audit's data made one open-ended prompt with three
    answers are a group of three, over a size of 2 and not over the default."""
    import shutil

    run = tmp_path / "audit"
    shutil.copytree(audited.run_dir, run)
    with open(audited.summary["data"]) as f:
        recs = [json.loads(line) for line in f]
    for k, r in enumerate(recs[:3]):
        r.update(prompt="Write a haiku about the sea.", response=f"haiku number {k}")
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))

    def diagnose(*extra):
        r = runner.invoke(app, ["diagnose", "--run", str(run), "--set", "embedder=hashing", "--set",
                                "tracking.enabled=false", "--set", f"data={data}", *extra])
        assert r.exit_code == 0, r.output
        summary = json.loads((run / "diagnosis" / "summary.json").read_text())
        return r.output, summary, [w for w in summary["coverage"]["warnings"] if w.startswith("III: a conflict group")]

    out, summary, ours = diagnose("--set", "conflict.warn_group_size=2")
    sizes = pd.read_parquet(run / "diagnosis" / "conflict_groups.parquet")["group_size"]
    assert int(sizes.max()) == summary["sft_internal_conflict"]["largest_group"] >= 3
    assert len(ours) == 1 and ours == summary["sft_internal_conflict"]["warnings"]
    assert f"holds {int(sizes.max())} samples" in ours[0]
    assert "III: a conflict group holds" in " ".join(out.split())
    assert diagnose()[2] == []
