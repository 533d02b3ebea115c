"""``ilp lab run``: generate a world, pretrain a base on its corpus, fine-tune it sequentially, audit
and diagnose the result, and score the diagnosis against the truth.

Layout of ``out``::

    world/       sft.jsonl, corpus.jsonl, truth.jsonl, world.json (+ probe.json with --base smollm2)
    pretrain/    the base model's training run (Ray Train + DeepSpeed); the base is its final
                 checkpoint (with --base smollm2 there is none: the base is the bundled model)
    sft/         the sequential SFT run, with trajectory.parquet
    index/       the corpus, indexed with tantivy
    evidence/    the corpus evidence of every SFT fact (supports / contradicts / absent)
    audit/       the audit and its diagnosis (diagnosis/report.html), which reads the evidence
    metrics.json the diagnosis against the truth (``ilp_ray.lab.score``), plus wall time per stage
    mlflow.db    every stage's MLflow run (``mlflow ui --backend-store-uri sqlite:///…/mlflow.db``)

Each stage is resumable on its own terms (training from its checkpoints, the audit from its
shards), so rerunning an interrupted lab continues it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilp_ray.lab.config import LabConfig
from ilp_ray.storage import write_json_atomic


@dataclass
class LabResult:
    out: Path
    metrics: dict[str, Any]
    report: Path | None
    run_id: str | None
    tracking_uri: str | None
    base: str | None = None  # the base model SFT started from (a checkpoint, or the bundled model)
    sft: str | None = None   # the audited SFT checkpoint


def _log(msg: str, progress: bool) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]lab[/] {msg}")


def pretrain_config(cfg: LabConfig, corpus: Path, out: Path) -> dict[str, Any]:
    p = cfg.pretrain
    return {
        "run_dir": str(out), "name": "pretrain",
        "model": {"tiny": {**p.model.model_dump(), "seed": cfg.seed_model}},
        "mixture": {"knowledge": str(corpus), "ratio": 1.0, "seed": cfg.seed_model},
        "block_size": p.block_size,
        "engine": {"strategy": p.strategy},
        "scaling": {"threads_per_worker": cfg.threads},
        "optim": {"lr": p.lr, "epochs": p.epochs, "batch_size": p.batch_size, "schedule": "cosine",
                  "warmup_steps": p.warmup_steps, "seed": cfg.seed_model},
        "checkpoint": {"every_steps": 10_000, "keep": 1},
        "tracking": {"experiment": cfg.experiment},
        "log_every": 10,
    }


def sft_config(cfg: LabConfig, base: str, data: Path, out: Path, n_samples: int) -> dict[str, Any]:
    s = cfg.sft_settings()
    return {
        "run_dir": str(out), "name": "sft",
        "model": {"spec": base},
        "data": str(data),
        "sft": {"format": "plain"},
        "scaling": {"threads_per_worker": cfg.threads},
        "order": {"sampler": "sequential", "subset_order": ["s1", "s2", "s3"], "seed": cfg.seed_model},
        "optim": {"lr": s.lr, "epochs": s.epochs, "batch_size": s.batch_size, "seed": cfg.seed_model,
                  "warmup_steps": s.warmup_steps},
        "trajectory": {"every_steps": s.eval_every, "max_items": n_samples, "embedder": "hashing"},
        "checkpoint": {"every_steps": 10_000, "keep": 1},
        "tracking": {"experiment": cfg.experiment},
        "log_every": 10,
    }


def corpus_evidence(cfg: LabConfig, paths: dict[str, Path], out: Path, progress: bool) -> dict[str, Any]:
    """Index the world's corpus and judge every SFT fact against it (the evidence stage)."""
    from ilp_ray.evidence.config import CorpusConfig, EvidenceConfig
    from ilp_ray.evidence.ingest import ingest
    from ilp_ray.evidence.run import run_evidence

    corpus = CorpusConfig.model_validate({"index": {"location": str(out / "index")}})
    # The index is a function of the corpus: another world's corpus starts a new one (an ingest
    # re-run adds a changed file's new passages but cannot know which old ones to drop).
    stamp, text = out / "index.corpus.json", paths["corpus"].read_bytes()
    ident = {"corpus": str(paths["corpus"]), "sha256": hashlib.sha256(text).hexdigest()}
    if not stamp.is_file() or json.loads(stamp.read_text()) != ident:
        shutil.rmtree(out / "index", ignore_errors=True)
        from ilp_ray.evidence.ingest import manifest_path

        manifest_path(corpus.index).unlink(missing_ok=True)
    ingest([str(paths["corpus"])], corpus.index, corpus.chunk, corpus.ingest, progress=False)
    write_json_atomic(ident, stamp)
    ev = EvidenceConfig.model_validate({
        "data": str(paths["sft"]), "out": str(out / "evidence"), "index": corpus.index.model_dump(),
        # Every passage is one templated sentence: BM25 plus the subject/option rules suffice.
        # K = 100: a value shared by many entities (a founder's name) outweighs the subject in BM25,
        # so a small K fills up with other entities' passages and misses the subject's own.
        "match": {"enabled": False}, "retrieve": {"k": 100}, "tracking": {"experiment": cfg.experiment}})
    return run_evidence(ev, progress=progress)


def audit_config(cfg: LabConfig, base: str, sft: str, data: Path, trajectory: Path | None,
                 out: Path, evidence: str | None = None) -> dict[str, Any]:
    diag = cfg.diagnose.model_dump()
    diag.update(enabled=True, data=str(data), trajectory=str(trajectory) if trajectory else None,
                evidence=evidence)
    return {
        "data": str(data), "sft_model": sft, "base_model": base, "run_dir": str(out / "audit"),
        "name": f"lab-{cfg.size}-seed{cfg.seed}",
        "preset": "lab",  # detect: N=1 on p(correct), tau 0.5 (ilp_ray/presets.py)
        "scoring": {"format": "plain", "batch_size": 32},
        "tracking": {"experiment": cfg.experiment},
        "diagnose": diag,
    }


def run_lab(cfg: LabConfig, progress: bool = True) -> LabResult:
    """Run the lab that ``cfg`` describes end to end; see the module docstring for the outputs."""
    import pandas as pd

    from ilp_ray.config import AuditConfig
    from ilp_ray.lab.score import score
    from ilp_ray.pipeline.audit import run_audit
    from ilp_ray.train.config import CptTrainConfig, SftTrainConfig

    out = Path(cfg.out).resolve()
    walls: dict[str, float] = {}
    t_all = time.perf_counter()

    @contextlib.contextmanager
    def stage(name: str, message: str | None = None):
        if message:
            _log(message, progress)
        t = time.perf_counter()
        yield
        walls[name] = time.perf_counter() - t

    with stage("world", "probing what the base knows (real facts)" if cfg.base == "smollm2" else None):
        world, paths = build_world(cfg, out)
    _log(f"world: {len(world.sft)} SFT samples, {len(world.corpus)} corpus documents -> {paths['sft'].parent}",
         progress)
    if cfg.base == "tiny":
        with stage("pretrain", "pretraining the base model on the corpus"):
            pre = train_fresh(CptTrainConfig.model_validate(pretrain_config(cfg, paths["corpus"], out)), progress)
        base, base_id = str(pre.checkpoint), pre.checkpoint_id
    else:
        base, base_id = cfg.smollm2.model, cfg.smollm2.model
    with stage("sft", "sequential SFT (s1 -> s2 -> s3) with trajectories"):
        sft = train_fresh(SftTrainConfig.model_validate(
            sft_config(cfg, base, paths["sft"], out, len(world.sft))), progress)
    with stage("evidence", "corpus evidence: index the corpus (tantivy), search and judge every SFT fact"):
        evidence = corpus_evidence(cfg, paths, out, progress)
    with stage("audit", "audit and diagnosis"):
        audit = run_audit(AuditConfig.model_validate(
            audit_config(cfg, base, str(sft.checkpoint), paths["sft"], sft.trajectory, out,
                         evidence["outputs"]["corpus_evidence"])),
            progress=progress)

    truth = pd.read_json(paths["truth"], lines=True)
    metrics = score(truth, audit.verdicts, audit.diagnosis.table)
    metrics["evidence"] = evidence_vs_truth(truth, pd.read_parquet(evidence["outputs"]["corpus_evidence"]))
    walls["total"] = time.perf_counter() - t_all
    metrics.update(wall_s=walls["total"], stage_wall_s=walls, seed=cfg.seed, size=cfg.size, base=cfg.base,
                   base_checkpoint=base_id, sft_checkpoint=sft.checkpoint_id)
    write_json_atomic(metrics, out / "metrics.json")
    _log_mlflow(audit.run_id, audit.tracking_uri, cfg.experiment, metrics, out / "metrics.json")
    report = audit.diagnosis.report
    return LabResult(out, metrics, report, audit.run_id, audit.tracking_uri, base, str(sft.checkpoint))


def build_world(cfg: LabConfig, out: Path):
    """The world of ``cfg`` (its size with ``cfg.world``'s overrides), written under ``out/world``.

    With ``--base smollm2`` the base is probed first (cached per base model, see
    ``ilp_ray.lab.real.probe``; the probe is copied to ``out/world/probe.json``). A size the world
    cannot hold fails here, before any output.
    """
    import dataclasses

    from ilp_ray.lab import world as W

    if cfg.base == "smollm2":
        from ilp_ray.lab import real as R

        size = dataclasses.replace(R.REAL_SIZES[cfg.size], **cfg.world)
        R.check_size(size)  # before the probe's minute of scoring
        probe = R.probe(cfg.smollm2.model)
        world = R.generate_real(cfg.seed, size, probe, cfg.smollm2.known_p, cfg.smollm2.unknown_p)
        world.size = cfg.size
        paths = W.write(world, out / "world")
        write_json_atomic({"model": cfg.smollm2.model, "probe": [[*k, p] for k, p in probe.items()]},
                          out / "world" / "probe.json")
        return world, paths
    size = dataclasses.replace(W.SIZES[cfg.size], **cfg.world) if cfg.world else cfg.size
    world = W.generate(cfg.seed, size)
    return world, W.write(world, out / "world")


def train_fresh(tcfg, progress: bool):
    """``run_training``, except that a stage which finished on other inputs (the world or the
    settings changed) starts over: a lab stage is a pure function of its inputs. A run killed
    part-way still resumes."""
    from ilp_ray.train.run import DONE, finished, run_training

    run_path = Path(tcfg.run_dir).resolve() / tcfg.name
    if (run_path / DONE).is_file() and finished(run_path, tcfg) is None:
        _log(f"{run_path.name}: inputs changed since it finished; training it again", progress)
        shutil.rmtree(run_path)
    return run_training(tcfg)


def evidence_vs_truth(truth, evidence) -> dict[str, Any]:
    """The corpus-evidence stage against the generator's record of what the corpus says."""
    from ilp_ray.evidence.run import rates

    df = truth[["id", "corpus_truth"]].merge(evidence[["id", "corpus_verdict"]], on="id")
    judged = rates(df)
    true = rates(df.drop(columns="corpus_verdict").rename(columns={"corpus_truth": "corpus_verdict"}))
    per_verdict = {}
    for v in ("supports", "contradicts", "absent"):
        said, was = df.corpus_verdict == v, df.corpus_truth == v
        tp = int((said & was).sum())
        per_verdict[v] = {"precision": tp / int(said.sum()) if said.any() else float("nan"),
                          "recall": tp / int(was.sum()) if was.any() else float("nan"),
                          "judged": int(said.sum()), "true": int(was.sum())}
    return {"accuracy": float((df.corpus_truth == df.corpus_verdict).mean()) if len(df) else float("nan"),
            "nonexistence_rate": judged["non_existence_rate"], "true_nonexistence_rate": true["non_existence_rate"],
            "conflict_rate": judged["conflict_rate"], "true_conflict_rate": true["conflict_rate"],
            "per_verdict": per_verdict}


def _log_mlflow(run_id: str | None, uri: str | None, experiment: str, metrics: dict[str, Any], path: Path) -> None:
    """The truth scores go into the audit's own MLflow run, next to the audit's figures."""
    if not run_id or not uri:
        return
    from ilp_ray.track import MLflowTracker, flatten

    keys = ("macro_f1", "wall_s", "evidence", "recall", "precision", "f1", "yield")
    tracker = MLflowTracker(uri, experiment).attach(run_id)
    tracker.log_metrics(flatten({"lab": {k: metrics[k] for k in keys}}))  # NaN yields are dropped
    tracker.log_artifact(path, "lab")
