"""The audit's corpus-evidence stage (``evidence:`` in the audit config) on local Ray and tantivy:
it judges the audit's own records between detection and diagnosis, writes under the run dir,
logs into the audit's MLflow run, feeds the diagnosis; and a bad section fails before any work."""

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from ilp_ray.cli import app
from ilp_ray.config import TrackingConfig
from ilp_ray.diagnosis.config import DiagnosisConfig
from ilp_ray.errors import ConfigError
from ilp_ray.evidence.config import AuditEvidenceConfig, IndexConfig, MatchConfig, RetrieveConfig
from tests.integration.test_audit import make_cfg

CORPUS = ("Paris is the capital of France.\n\nThe capital of Japan is Kyoto, wrote a confused blog.\n\n"
          "Bees make honey in hives.\n\nJupiter is the largest planet.\n")


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory, ray_session):
    from ilp_ray.evidence.config import ChunkConfig, IngestConfig
    from ilp_ray.evidence.ingest import ingest

    root = tmp_path_factory.mktemp("corpus")
    (root / "corpus.txt").write_text(CORPUS)
    index = IndexConfig(location=str(root / "idx"))
    ingest([str(root / "corpus.txt")], index, ChunkConfig(words=20, overlap=5), IngestConfig(), progress=False)
    return index


def evidence_section(index, **kw):
    # BM25 + the rule judge: no Spark, so the audit stays fast (Spark matching has its own tests)
    return AuditEvidenceConfig(enabled=True, index=index, retrieve=RetrieveConfig(k=3),
                               match=MatchConfig(enabled=False), **kw)


@pytest.fixture(scope="module")
def audited(tmp_path_factory, facts_jsonl, tiny_checkpoints, corpus_index):
    """An audit with evidence on every record, then the diagnosis, tracked in MLflow (sqlite)."""
    from ilp_ray.pipeline.audit import run_audit

    run_dir = tmp_path_factory.mktemp("runs") / "audit"
    cfg = make_cfg(facts_jsonl, tiny_checkpoints, run_dir, evidence=evidence_section(corpus_index, scope="all"),
                   diagnose=DiagnosisConfig(enabled=True, embedder="hashing", preset="lab"))
    return run_audit(cfg, progress=False)


def test_evidence_files_in_the_run_dir(audited):
    out = audited.run_dir / "evidence"
    ev = pd.read_parquet(out / "evidence.parquet").set_index("id")
    assert sorted(ev.index) == [f"f{i:02d}" for i in range(12)]  # scope all: every record
    assert ev.loc["f00", "corpus_verdict"] == "supports"  # Paris is the capital of France
    assert ev.loc["f01", "corpus_verdict"] == "contradicts"  # the corpus says Kyoto
    assert ev.loc["f03", "corpus_verdict"] == "absent"  # Spain is nowhere in it
    summary = json.loads((out / "summary.json").read_text())
    assert audited.evidence == summary
    o = summary["overall"]
    assert o["n"] == 12 and o["non_existence_rate"] == pytest.approx((ev["corpus_verdict"] == "absent").mean())
    assert set(summary["by_subset"]) == {"geo", "sci"}


def test_diagnosis_reads_the_stage_evidence(audited):
    d = pd.read_parquet(audited.run_dir / "diagnosis" / "diagnosis.parquet").set_index("id")
    ev = pd.read_parquet(audited.run_dir / "evidence" / "corpus_evidence.parquet").set_index("id")
    run = json.loads((audited.run_dir / "diagnosis" / "summary.json").read_text())["run"]
    assert run["corpus_evidence"] is True
    assert d.loc[~d["in_scope"] & ~d["is_base_knowledge_gap"], "base_knowledge_gap_evidence"].isna().all()
    for vid, row in d[d["in_scope"]].iterrows():  # evidence is kept for the diagnosed samples
        gap = json.loads(row["base_knowledge_gap_evidence"])
        assert gap["corpus_verdict"] == ev.loc[vid, "corpus_verdict"]
        # with corpus.veto (preset lab: this corpus is complete) the corpus decides I
        if gap["corpus_verdict"] == "absent":
            assert row["is_base_knowledge_gap"], vid
        elif gap["corpus_verdict"] == "supports":
            assert not row["is_base_knowledge_gap"], vid
    html = (audited.run_dir / "diagnosis" / "report.html").read_text()
    assert "Pretraining-corpus evidence" in html and "No corpus evidence was given" not in html
    o = audited.evidence["overall"]
    assert f"{o['non_existence_rate']:.1%}" in html and f"{o['conflict_rate']:.1%}" in html


def test_rates_go_into_the_audit_mlflow_run(audited):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=audited.tracking_uri)
    run = client.get_run(audited.run_id)
    o, m = audited.evidence["overall"], run.data.metrics
    assert m["evidence.non_existence_rate"] == pytest.approx(o["non_existence_rate"])
    assert m["evidence.conflict_rate"] == pytest.approx(o["conflict_rate"])
    assert m["evidence.n"] == 12 and "evidence.geo.conflict_rate" in m
    assert "diagnosis.share.unattributed" in m and "accuracy" in m  # one run holds all three stages
    assert run.data.params["evidence.scope"] == "all"
    names = {a.path for a in client.list_artifacts(audited.run_id, "evidence")}
    assert names == {"evidence/summary.json", "evidence/corpus_evidence.parquet"}
    assert len(client.search_runs([run.info.experiment_id])) == 1  # no separate evidence run


def test_unlearned_scope_and_an_explicit_diagnosis_table(audited, tmp_path, facts_jsonl, tiny_checkpoints,
                                                          corpus_index):
    """scope=unlearned judges only the unlearned records; diagnose.evidence set by hand wins."""
    from ilp_ray.pipeline.audit import run_audit

    run_dir = tmp_path / "audit"
    for part in ("mc", "scores"):  # reuse the finished scores: only detection and later stages run
        shutil.copytree(audited.run_dir / part, run_dir / part)
    mine = tmp_path / "mine.parquet"
    pd.DataFrame({"id": [f"f{i:02d}" for i in range(12)], "corpus_verdict": "contradicts",
                  "corpus_score": 1.0}).to_parquet(mine)
    cfg = make_cfg(facts_jsonl, tiny_checkpoints, run_dir, evidence=evidence_section(corpus_index),
                   diagnose=DiagnosisConfig(enabled=True, embedder="hashing", evidence=str(mine)),
                   tracking=TrackingConfig(enabled=False))
    result = run_audit(cfg, progress=False)
    assert result.summary["shards_scored"] == 0
    unlearned = sorted(result.verdicts.loc[result.verdicts["unlearned"], "id"])
    judged = pd.read_parquet(run_dir / "evidence" / "corpus_evidence.parquet")
    assert sorted(judged["id"]) == unlearned and result.evidence["overall"]["n"] == len(unlearned)
    d = pd.read_parquet(run_dir / "diagnosis" / "diagnosis.parquet")
    assert {json.loads(e)["corpus_verdict"] for e in d.loc[d["in_scope"], "base_knowledge_gap_evidence"]} == {"contradicts"}


def test_nothing_unlearned_judges_nothing(audited, tmp_path, facts_jsonl, tiny_checkpoints, corpus_index):
    """tau=0: no sample is unlearned, the stage judges none (no Ray work) and the diagnosis and
    its report still run on the empty table."""
    from ilp_ray.config import DetectConfig
    from ilp_ray.pipeline.audit import run_audit

    run_dir = tmp_path / "audit"
    for part in ("mc", "scores"):
        shutil.copytree(audited.run_dir / part, run_dir / part)
    cfg = make_cfg(facts_jsonl, tiny_checkpoints, run_dir, evidence=evidence_section(corpus_index),
                   diagnose=DiagnosisConfig(enabled=True, embedder="hashing"), tracking=TrackingConfig(enabled=False))
    cfg = cfg.model_copy(update={"detect": DetectConfig(tau=0.0, stability_seeds=3, top_k=3)})
    result = run_audit(cfg, progress=False)
    assert result.summary["unlearned"] == 0 and result.evidence["overall"]["n"] == 0
    assert pd.read_parquet(run_dir / "evidence" / "corpus_evidence.parquet").empty
    assert result.diagnosis.cause_table["n_diagnosed"] == 0
    assert "0 samples were judged" in (run_dir / "diagnosis" / "report.html").read_text()


def test_missing_index_fails_before_any_work(tmp_path, facts_jsonl, tiny_checkpoints):
    from ilp_ray.pipeline.audit import run_audit

    run_dir = tmp_path / "runs" / "audit"
    cfg = make_cfg(facts_jsonl, tiny_checkpoints, run_dir,
                   evidence=evidence_section(IndexConfig(location=str(tmp_path / "no-index"))))
    with pytest.raises(ConfigError) as e:
        run_audit(cfg, progress=False)
    assert str(e.value).startswith("field 'evidence.index.location': no tantivy index at ")
    assert str(tmp_path / "no-index") in str(e.value)
    assert not (tmp_path / "runs").exists()  # no run dir, no MLflow store
    # an Elasticsearch index on a cluster nobody answers at: the same, naming the section and URL
    from tests.evidence.test_es_errors import es_cfg

    es = es_cfg()
    cfg = cfg.model_copy(update={"evidence": evidence_section(es)})
    with pytest.raises(ConfigError) as e:
        run_audit(cfg, progress=False)
    assert str(e.value).startswith("field 'evidence.index': ") and es.elasticsearch.url in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_cli_names_the_field_and_writes_nothing(tmp_path, facts_jsonl, tiny_checkpoints, corpus_index):
    runner = CliRunner()
    run_dir = tmp_path / "audit"
    cfg = tmp_path / "audit.yaml"
    cfg.write_text(f"data: {facts_jsonl}\nsft_model: {tiny_checkpoints['sft']}\nrun_dir: {run_dir}\n"
                   "evidence:\n  enabled: true\n  scope: unlearned\n")
    r = runner.invoke(app, ["audit", "--config", str(cfg)])
    assert r.exit_code == 2 and f"{cfg}:4: field 'evidence.index': " in r.output
    assert "required when evidence.enabled is true" in r.output
    r = runner.invoke(app, ["audit", "--config", str(cfg), "--set", f"evidence.index.location={corpus_index.location}",
                            "--set", "evidence.judge.name=rules"])
    assert r.exit_code == 2 and "field 'evidence.judge.name'" in r.output and "Did you mean 'rule'?" in r.output
    assert not run_dir.exists()
