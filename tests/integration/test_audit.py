"""The audit job end to end on local Ray, with tiny models built in code and MLflow on sqlite."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ilp_ray.config import AuditConfig, DetectConfig, McConfig, RayConfig, ScoringConfig, TrackingConfig

ROOT = Path(__file__).resolve().parents[2]


def make_cfg(data, ckpts, run_dir, shard_size=5, **kw):
    return AuditConfig(
        data=str(data), sft_model=str(ckpts["sft"]), base_model=str(ckpts["base"]), run_dir=str(run_dir),
        mc=McConfig(k=3), scoring=kw.pop("scoring", ScoringConfig(batch_size=4)),
        detect=DetectConfig(stability_seeds=3, top_k=3),
        ray=RayConfig(num_actors=1, cpus_per_actor=1.0, shard_size=shard_size), **kw)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, facts_jsonl, tiny_checkpoints, ray_session):
    from ilp_ray.pipeline.audit import run_audit

    run_dir = tmp_path_factory.mktemp("runs") / "audit"
    result = run_audit(make_cfg(facts_jsonl, tiny_checkpoints, run_dir), progress=False)
    return result


def test_verdicts_cover_every_record(first_run):
    v = first_run.verdicts
    assert sorted(v["id"]) == [f"f{i:02d}" for i in range(12)]
    assert set(v["n_options"]) == {3}
    np.testing.assert_allclose([sum(p) for p in v["probs"]], 1.0, atol=1e-9)
    assert {"base_probs", "known_by_base", "js_base_sft", "severity_rank", "in_top_k"} <= set(v.columns)
    assert v["in_top_k"].sum() == min(3, v["unlearned"].sum())


def test_scores_match_the_engine_in_process(first_run, tiny_checkpoints):
    """A second route: score the stored MC items directly, and each item's options with an empty
    question (its own pseudo-item, not the pipeline's shared chunks), then compare the stored
    probabilities (calibrated: the question-free log-likelihood subtracted) and fairness columns."""
    from ilp_ray import metrics as M
    from ilp_ray.records import McItem
    from ilp_ray.scoring.engines import make_engine
    from ilp_ray.storage import load_verdicts

    v = load_verdicts(first_run.run_dir)
    assert v["calibrated"].all()  # built by MC conversion: calibration 'auto' subtracts the prior
    items = [McItem(id=r.id, question=r.question, options=tuple(r.options), answer=r.answer)
             for r in v.itertuples()]
    empty = [McItem(id=r.id, question="", options=tuple(r.options), answer=r.answer) for r in v.itertuples()]
    for tag, col in (("sft", "probs"), ("base", "base_probs")):
        engine = make_engine(ScoringConfig(batch_size=3), str(tiny_checkpoints[tag]))
        scores, priors = engine.score(items), engine.score(empty)
        for sc, pr, probs in zip(scores, priors, v[col]):
            pmi = np.array(sc.logprob_sum) - np.array(pr.logprob_sum)
            np.testing.assert_allclose(M.option_probs(pmi[None])[0], probs, atol=1e-6)
        if tag == "base":  # the fairness check reads the base model's prior
            for pr, pp, r in zip(priors, v["prior_probs"], v.itertuples()):
                want = M.option_probs(np.array([pr.logprob_sum]))[0]
                np.testing.assert_allclose(want, pp, atol=1e-6)
                assert r.prior_answer_wins == (want[r.answer] >= 0.9)
                assert r.fair == (want.max() < 0.9)


def test_summary_and_cli_report_the_fairness_check(first_run, capsys):
    from ilp_ray.report_cli import print_summary

    v, s = first_run.verdicts, first_run.summary
    f = s["fairness"]
    assert f["model"] == "base" and f["unfair"] == int((~v["fair"]).sum())
    assert f["unlearned_unfair"] == int((~v["fair"] & v["unlearned"]).sum())
    assert s["calibrated_items"] == 12 and s["mc_fallback"]  # every item was built, so calibrated
    print_summary(first_run)
    out = " ".join(capsys.readouterr().out.split())
    assert f"fairness: {f['unfair']} of 12 items won without the question" in out
    assert "Calibrated items: 12" in out


def test_summary_and_files(first_run):
    s = json.loads((first_run.run_dir / "summary.json").read_text())
    v = first_run.verdicts
    assert s["n"] == 12 and s["unlearned"] == int(v["unlearned"].sum())
    assert s["accuracy"] == pytest.approx(v["correct"].mean())
    assert set(s["per_subset"]) == {"geo", "sci"}
    assert 0.0 <= s["seed_stability"] <= 1.0
    assert s["shards_total"] == 6 and s["shards_scored"] == 6  # 12 items / 5 per shard × 2 models
    assert len(list((first_run.run_dir / "verdicts").glob("shard-*.parquet"))) == 3
    assert first_run.evidence is None and not (first_run.run_dir / "evidence").exists()  # evidence is off by default


def test_mlflow_run_has_params_metrics_artifacts(first_run, tiny_checkpoints):
    import mlflow

    from ilp_ray.train.state import checkpoint_id

    client = mlflow.MlflowClient(tracking_uri=first_run.tracking_uri)
    run = client.get_run(first_run.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["ilp.checkpoint_id"] == checkpoint_id(tiny_checkpoints["sft"])
    assert run.data.tags["ilp.base_checkpoint_id"] == checkpoint_id(tiny_checkpoints["base"])
    assert run.data.params["detect.n"] == "5" and run.data.params["mc.k"] == "3"
    assert run.data.metrics["accuracy"] == pytest.approx(first_run.summary["accuracy"])
    assert "subset.geo.learn_rate" in run.data.metrics
    names = {a.path for a in client.list_artifacts(first_run.run_id)}
    assert {"summary.json", "verdicts"} <= names
    assert first_run.tracking_uri == f"sqlite:///{first_run.run_dir.parent / 'mlflow.db'}"


def test_rerun_reuses_every_shard(first_run, facts_jsonl, tiny_checkpoints):
    from ilp_ray.pipeline.audit import run_audit

    shards = sorted((first_run.run_dir / "scores").rglob("shard-*.parquet"))
    before = {p: p.stat().st_mtime_ns for p in shards}
    again = run_audit(make_cfg(facts_jsonl, tiny_checkpoints, first_run.run_dir,
                               tracking=TrackingConfig(enabled=False)), progress=False)
    assert again.summary["shards_scored"] == 0 and again.summary["shards_reused"] == 6
    assert again.summary["mc_reused"] is True
    assert {p: p.stat().st_mtime_ns for p in shards} == before
    assert again.verdicts["unlearned"].tolist() == first_run.verdicts["unlearned"].tolist()


def test_a_cut_short_shard_is_scored_again_not_trusted(first_run, facts_jsonl, tiny_checkpoints, tmp_path):
    """A shard whose file was cut short (a copy or a disk that stopped) is scored again on the
    rerun: the rest are reused, and the verdicts equal the first run's."""
    import shutil

    from ilp_ray.pipeline.audit import run_audit

    run_dir = tmp_path / "copy"
    shutil.copytree(first_run.run_dir, run_dir)
    victim = sorted((run_dir / "scores").rglob("shard-*.parquet"))[0]
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    again = run_audit(make_cfg(facts_jsonl, tiny_checkpoints, run_dir, tracking=TrackingConfig(enabled=False)),
                      progress=False)
    assert again.summary["shards_scored"] == 1 and again.summary["shards_reused"] == 5
    assert victim.read_bytes() != whole[: len(whole) // 2]
    np.testing.assert_allclose(np.stack(again.verdicts["probs"]), np.stack(first_run.verdicts["probs"]), atol=1e-6)


def test_changed_detection_config_reuses_scores(first_run, facts_jsonl, tiny_checkpoints):
    """N, τ and the temperature act on cached scores: no model runs again."""
    from ilp_ray.pipeline.audit import run_audit

    cfg = make_cfg(facts_jsonl, tiny_checkpoints, first_run.run_dir, tracking=TrackingConfig(enabled=False))
    cfg = cfg.model_copy(update={"detect": DetectConfig(n=10, tau=0.5, stability_seeds=2)})
    again = run_audit(cfg, progress=False)
    assert again.summary["shards_scored"] == 0
    assert again.summary["pass_at_n"] == {"n": 10, "tau": 0.5, "on": "sampled"}


@pytest.mark.slow
def test_killed_job_resumes_without_recomputing(tmp_path, facts_jsonl, tiny_checkpoints, first_run, ray_session):
    """Kill a real job (its own process and Ray) mid-scoring; the rerun keeps finished shards."""
    from ilp_ray.pipeline.audit import run_audit

    run_dir = tmp_path / "audit"
    cfg_path = tmp_path / "audit.yaml"
    cfg_path.write_text(
        f"data: {facts_jsonl}\nsft_model: {tiny_checkpoints['sft']}\nbase_model: {tiny_checkpoints['base']}\n"
        f"run_dir: {run_dir}\nmc: {{k: 3}}\nscoring: {{batch_size: 4}}\n"
        "detect: {stability_seeds: 3, top_k: 3}\nray: {shard_size: 1, num_actors: 1, cpus_per_actor: 1.0}\n"
        "tracking: {enabled: false}\n")
    env = dict(os.environ, ILP_SLOW_SHARD_S="0.5")  # a test hook: sleep per shard so the kill lands mid-run
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "audit.py"), "--config", str(cfg_path),
                             "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(run_dir.glob("scores/*/shard-*.parquet"))) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in run_dir.glob("scores/*/shard-*.parquet")}
    # 12 items in shards of 1 under two models is 24 shards, and the prior pseudo-items
    # (ilp_ray.scoring.prior) add theirs after them
    assert 3 <= len(done) < 24, "the kill should land mid-run"
    partial = next(iter(done)).parent / ".tmp-shard-99999.parquet-1"
    partial.write_bytes(b"PAR1 half a shard")  # what a writer killed mid-write leaves

    result = run_audit(AuditConfig.model_validate(
        __import__("yaml").safe_load(cfg_path.read_text())), progress=False)
    assert result.summary["shards_reused"] == len(done)
    total = result.summary["shards_total"]
    assert total > 24  # the prior pseudo-items are scored (and resumed) like the items
    assert result.summary["shards_scored"] == total - len(done)
    assert len(list(run_dir.glob("scores/*/shard-*.parquet"))) == total
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done} == done
    assert not partial.exists()
    # the same verdicts as an uninterrupted run with other shard sizes
    np.testing.assert_allclose(np.stack(result.verdicts["probs"]), np.stack(first_run.verdicts["probs"]),
                               atol=1e-6)


def test_mlflow_ui_server_shows_the_run(first_run):
    """`mlflow ui` over the same sqlite store lists the audit run (real server, real HTTP)."""
    import urllib.request

    from tests.helpers import free_port, wait_http

    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow_bin), "server", "--backend-store-uri", first_run.tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", timeout=90, proc=proc)
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ilp-audit")
        exp = json.load(urllib.request.urlopen(req, timeout=10))["experiment"]
        body = json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode()
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        runs = json.load(urllib.request.urlopen(req, timeout=10))["runs"]
        assert first_run.run_id in {r["info"]["run_id"] for r in runs}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_conversations_without_ids_are_audited_as_trained(tmp_path, tiny_checkpoints, ray_session):
    """The facts as a saved HF dataset of TRL conversations (a system turn, two exchanges each,
    no ids): one sample per assistant turn, ids from the content, and each turn scored under the
    chat template with the turns before it (checked against the engine in process)."""
    import datasets

    from ilp_ray.pipeline.audit import run_audit
    from ilp_ray.records import McItem
    from ilp_ray.scoring.engines import make_engine
    from ilp_ray.storage import load_verdicts
    from tests.conftest import FACTS

    convs = [{"messages": [{"role": "system", "content": "Answer in one word."}]
              + [t for _, q, a in FACTS[i:i + 2] for t in ({"role": "user", "content": q},
                                                           {"role": "assistant", "content": a})]}
             for i in range(0, len(FACTS), 2)]
    datasets.Dataset.from_list(convs).save_to_disk(str(tmp_path / "chats"))
    scoring = ScoringConfig(batch_size=4, format="chat", calibration="none")
    cfg = make_cfg(tmp_path / "chats", tiny_checkpoints, tmp_path / "audit", scoring=scoring,
                   tracking={"enabled": False})
    result = run_audit(cfg, progress=False)
    read = result.summary["data_read"]
    assert (read["format"], read["rows"], read["records"], read["conversation_turns"]) == ("messages", 6, 12, 12)
    assert read["ids_generated"] and read["duplicate_contents"] == 0 and "warning" not in read
    v = load_verdicts(result.run_dir).set_index("id")
    assert all(i.startswith("h") and len(i) == 17 for i in v.index)
    from ilp_ray.data import read_sft

    records = {r.id: r for r in read_sft(tmp_path / "chats")}
    engine = make_engine(ScoringConfig(batch_size=3, format="chat"), str(tiny_checkpoints["sft"]))
    items = [McItem(id=i, question=r.question, options=tuple(r.options), answer=r.answer,
                    history=records[i].history) for i, r in v.iterrows()]
    for it, sc in zip(items, engine.score(items), strict=True):
        s = np.array(sc.logprob_sum)
        np.testing.assert_allclose(np.exp(s - s.max()) / np.exp(s - s.max()).sum(), v.loc[it.id, "probs"], atol=1e-6)
    second = [it for it in items if records[it.id].turn == 1]
    alone = engine.score([McItem(id=it.id, question=it.question, options=it.options, answer=it.answer)
                          for it in second])
    with_history = engine.score(second)
    assert all(a.logprob_sum != b.logprob_sum for a, b in zip(alone, with_history))  # the history is scored


def test_bad_data_fails_before_anything_is_written(tmp_path, tiny_checkpoints):
    from ilp_ray.errors import DataError
    from ilp_ray.pipeline.audit import run_audit

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
                   '{"messages": [{"role": "user", "content": "q2"}, {"role": "robot", "content": "b"}]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'messages\[1\].role': unknown role 'robot'"):
        run_audit(make_cfg(bad, tiny_checkpoints, tmp_path / "audit"), progress=False)
    assert not (tmp_path / "audit").exists()


def test_conversations_scored_off_their_chat_template_are_flagged(tmp_path, tiny_checkpoints, ray_session, capsys):
    """A conversation audited under the default lm-eval layout is not what training saw: said."""
    from ilp_ray.pipeline.audit import run_audit
    from ilp_ray.report_cli import print_summary
    from tests.conftest import FACTS

    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                            + "\n" for _, q, a in FACTS))
    result = run_audit(make_cfg(path, tiny_checkpoints, tmp_path / "audit", tracking={"enabled": False}), progress=False)
    assert "set scoring.format: chat" in result.summary["data_read"]["warning"]
    print_summary(result)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "12 samples are conversation turns, scored under scoring.format 'lm-eval'" in out


def test_a_second_audit_on_a_busy_run_directory_is_refused(tmp_path, facts_jsonl, tiny_checkpoints):
    """Issue 20, finding 8: while one audit holds the run directory, `ilp audit` on it exits with a
    message naming the directory and the holder, and writes nothing there."""
    from typer.testing import CliRunner

    from ilp_ray import storage as S
    from ilp_ray.cli import app

    run_dir = tmp_path / "audit"
    held = S.run_lock(run_dir, "audit").__enter__()
    try:
        res = CliRunner().invoke(app, ["audit", "--data", str(facts_jsonl), "--sft-model", str(tiny_checkpoints["sft"]),
                                       "--run-dir", str(run_dir), "--no-progress"])
    finally:
        held.__exit__(None, None, None)
    assert res.exit_code == 2, res.output
    assert "in use by another audit (pid" in res.output and str(run_dir) in res.output.replace("\n", "")
    assert sorted(p.name for p in run_dir.iterdir()) == [".ilp.lock"]


def test_a_tracking_server_that_is_down_fails_the_audit_first_and_clearly(tmp_path, facts_jsonl, tiny_checkpoints,
                                                                           monkeypatch):
    """Issue 20's fault scenario: the MLflow server is down. The audit stops before it writes
    anything, with one error naming the server (no userinfo) and what to do; the CLI prints it
    without a traceback."""
    from typer.testing import CliRunner

    from ilp_ray.cli import app
    from ilp_ray.errors import TrackingError
    from ilp_ray.pipeline.audit import run_audit
    from tests.helpers import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    port = free_port()  # nothing listens there
    uri = f"http://user:secret@127.0.0.1:{port}"
    run_dir = tmp_path / "audit"
    cfg = make_cfg(facts_jsonl, tiny_checkpoints, run_dir, tracking=TrackingConfig(uri=uri))
    with pytest.raises(TrackingError) as e:
        run_audit(cfg, progress=False)
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}" in msg and "secret" not in msg and "tracking.enabled=false" in msg
    assert not run_dir.exists()  # nothing written: no lock, no items, no scores
    cfg_path = tmp_path / "audit.yaml"
    cfg_path.write_text(__import__("yaml").safe_dump(cfg.model_dump(mode="json")))
    r = CliRunner().invoke(app, ["audit", "--config", str(cfg_path), "--no-progress"])
    assert r.exit_code != 0 and "tracking" in r.output.lower() and "Traceback" not in r.output
