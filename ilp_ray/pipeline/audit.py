"""The audit job, the orchestration at the top of the stages: read → validate → the audit stage
(``ilp_ray.audit``: MC items, scores on Ray Data, verdicts) → MLflow, then, when enabled, the
corpus evidence (``ilp_ray.evidence``) and the diagnosis (``ilp_ray.diagnosis``), both logged into
the audit's MLflow run. No stage imports this module; it imports each stage.

Run layout (``cfg.run_dir``)::

    mc/items-<fp>.parquet          MC items (fingerprint of the data and the MC config)
    scores/<tag>-<fp>/shard-*.parquet   option scores per model (fingerprint of the model, the
                                   scoring config and the items); complete shards are reused
    verdicts/_manifest.json, shard-<gen>-*.parquet   the per-sample table (rewritten every run as a
                                   new generation, switched by the manifest)
    summary.json                   the summary figures
    timings.json                   each stage's start (epoch seconds) and wall time, this run
    embeddings/                    the diagnosis's prompt embeddings (diagnose.embed_cache), begun
                                   during scoring on the core the scoring actor leaves free
    audit_config.json              the config, as run (a mitigation re-audits with it)
    ilp_run.json                   the MLflow run of the latest run of the audit
    evidence/                      corpus evidence (evidence.enabled): evidence.parquet,
                                   corpus_evidence.parquet (the diagnosis reads it), summary.json
    diagnosis/                     the diagnosis (diagnose.enabled)
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilp_ray import storage as S
from ilp_ray.config import AuditConfig
from ilp_ray.records import records_frame

log = logging.getLogger(__name__)

CONFIG = "audit_config.json"  # the audit's config, as run

@dataclass
class AuditResult:
    run_dir: Path
    summary: dict[str, Any]
    verdicts: Any  # pandas.DataFrame
    run_id: str | None
    tracking_uri: str | None
    diagnosis: Any = None  # DiagnosisResult when diagnose.enabled
    evidence: dict[str, Any] | None = None  # the corpus-evidence summary when evidence.enabled
    timings: dict[str, dict[str, float]] | None = None  # stage -> {"start": epoch s, "wall_s"} (timings.json)


class _Stages:
    """Each stage's start (epoch seconds, to line up with outside samplers) and wall time."""

    def __init__(self):
        self.marks: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start, t = round(time.time(), 3), time.perf_counter()
        yield
        self.marks[name] = {"start": start, "wall_s": round(time.perf_counter() - t, 3)}


def run_audit(cfg: AuditConfig, progress: bool = True) -> AuditResult:
    """Run (or resume) an audit. Every stage reuses its finished output when the inputs match."""

    from ilp_ray.data import load_sft
    from ilp_ray.env import apply_defaults

    apply_defaults(local_ray=cfg.ray.address is None)
    check_evidence_index(cfg)  # a config error, before any file is written
    t0 = time.perf_counter()
    st = _Stages()
    with st("load"):
        loaded = load_sft(cfg.data, cfg.data_format)  # validates the whole file before anything is written
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    from ilp_ray.track import make_tracker

    # Reached now, before any output: a tracking server that is down fails the job here, clearly.
    tracker = make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment, run_dir.parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    held = [loaded]  # handed over, so that _audit can let the records go before the diagnosis
    del loaded
    with S.run_lock(run_dir, "audit"):  # a second audit on this directory is refused, not mixed in
        res = _audit(cfg, progress, held, run_dir, t0, st, tracker)
    res.timings = st.marks
    S.write_json_atomic(res.timings, run_dir / "timings.json")
    return res


def _audit(cfg: AuditConfig, progress: bool, held: list, run_dir: Path, t0: float, st: _Stages,
           tracker) -> AuditResult:
    """``run_audit``'s stages, under the run directory's lock. ``held`` holds the loaded data, the
    only reference to it: the records, items, scores and verdicts are let go before the diagnosis,
    which reads its own from the run directory (at 300k samples they are ~1.5 GB of the driver)."""
    from ilp_ray.audit import mc_stage, needs_priors, score_stage, verdict_stage, with_prior_items
    from ilp_ray.track import flatten

    loaded = held.pop()
    records = loaded.records
    # What a later job reuses (a mitigation re-audits on the same items with the same settings).
    S.write_json_atomic(cfg.model_dump(mode="json"), run_dir / CONFIG)
    with st("mc"):
        items, mc_reused = mc_stage(records, cfg, run_dir)
    models = {"sft": cfg.sft_model} | ({"base": cfg.base_model} if cfg.base_model else {})
    with_priors = needs_priors(cfg, items)
    prefetch = _start_prefetch(records, cfg, run_dir)
    try:
        with st("score"):
            scores, stats = score_stage(with_prior_items(items) if with_priors else items, cfg, run_dir, models,
                                        progress)
    finally:
        if prefetch is not None:  # what it embedded stays in the cache; the diagnosis embeds the rest
            st.marks["embed_prefetch"] = prefetch.stop()
    with st("verdicts"):
        verdicts, summary = verdict_stage(items, scores, with_priors, cfg, run_dir)  # its scalar columns
        summary.update(stats, mc_reused=mc_reused, wall_s=round(time.perf_counter() - t0, 3),
                       models=models, data=cfg.data, data_read=_data_read(loaded, cfg), run_dir=str(run_dir))
        S.write_json_atomic(summary, run_dir / "summary.json")

    diagnosis = evidence = None
    with tracker.start(cfg.name or run_dir.name, tags={**_run_tags(cfg), **cfg.tracking.tags}):
        tracker.log_params(flatten(cfg.model_dump()))
        tracker.log_dataset(records_frame(records), cfg.data, "sft", "evaluation")
        if tracker.run_id:  # a later job (a mitigation study) links its runs to this one
            S.write_json_atomic({"mlflow_run_id": tracker.run_id, "tracking_uri": tracker.tracking_uri},
                                run_dir / "ilp_run.json")
        tracker.log_metrics(_metric_view(summary))
        tracker.log_artifact(run_dir / "summary.json")
        tracker.log_artifact(run_dir / "verdicts", "verdicts")
        if cfg.evidence.enabled:  # between detection and diagnosis, logged into the same MLflow run
            with st("evidence"):
                evidence = evidence_stage(records, verdicts, cfg, run_dir, tracker, progress)
        if cfg.diagnose.enabled:  # the last stage, logged into the same MLflow run
            from ilp_ray.diagnosis.run import run_diagnosis

            del records, loaded, items, scores, verdicts  # the diagnosis reads the run directory's
            with st("diagnosis"):
                diagnosis = run_diagnosis(run_dir, diagnosis_config(cfg, evidence), tracker=tracker)
    verdicts = S.load_verdicts(run_dir)  # the whole table just written, for the result
    return AuditResult(run_dir, summary, verdicts, tracker.run_id, tracker.tracking_uri, diagnosis, evidence)


def _start_prefetch(records, cfg: AuditConfig, run_dir: Path):
    """The diagnosis's prompt embeddings, started on a core the scoring leaves free: when the
    diagnosis runs and caches them, and the local scoring actors' threads leave a core of this
    machine (a remote cluster or the Serve endpoint leave the driver's). None otherwise."""
    import os

    if not cfg.diagnose.enabled or not cfg.diagnose.embed_cache:
        return None
    local = cfg.ray.address is None and not str(cfg.scoring.engine).startswith("http")
    busy = cfg.ray.num_actors * cfg.ray.threads_per_actor if local else 0
    if (os.cpu_count() or 1) - busy < 1:
        return None
    from ilp_ray.diagnosis.run import prefetch_prompt_embeddings

    return prefetch_prompt_embeddings([r.prompt for r in records], cfg.diagnose, run_dir)


def check_evidence_index(cfg: AuditConfig) -> None:
    """With evidence enabled, its index must exist (the section's other rules are validators).

    Raises:
        ConfigError: no index at ``evidence.index.location`` (tantivy), or the Elasticsearch
            cluster or index cannot be reached (``evidence.index``).
    """
    if not cfg.evidence.enabled:
        return
    from ilp_ray.errors import ConfigError
    from ilp_ray.evidence.index import EvidenceError, open_index

    index = cfg.evidence.index
    try:
        open_index(index, must_exist=True).close()
    except EvidenceError as e:
        where = "evidence.index.location" if index.backend == "tantivy" else "evidence.index"
        raise ConfigError(str(e), field=where) from None


def evidence_stage(records, verdicts, cfg: AuditConfig, run_dir: Path, tracker, progress: bool) -> dict[str, Any]:
    """Corpus evidence of the records ``evidence.scope`` picks, written to ``run_dir/evidence``
    and logged into ``tracker`` (the audit's run); returns the stage's summary."""
    from ilp_ray.evidence.run import run_evidence

    scope = cfg.evidence.scope
    if scope != "all":
        picked = verdicts["unlearned" if scope == "unlearned" else "in_top_k"].astype(bool)
        ids = set(verdicts.loc[picked, "id"].astype(str))
        records = [r for r in records if r.id in ids]
    log.info("corpus evidence: %d records (scope %s)", len(records), scope)
    stage_cfg = cfg.evidence.run_config(cfg.data, str(run_dir / "evidence"))
    return run_evidence(stage_cfg, progress=progress, records=records, tracker=tracker)


def diagnosis_config(cfg: AuditConfig, evidence: dict[str, Any] | None):
    """The diagnosis config of the audit's last stage: the audit's data unless ``diagnose.data``
    names a file, and the evidence stage's table unless ``diagnose.evidence`` names one."""
    update: dict[str, Any] = {}
    if not cfg.diagnose.data:
        update["data"] = cfg.data
    if evidence is not None and not cfg.diagnose.evidence:
        update["evidence"] = evidence["outputs"]["corpus_evidence"]
    return cfg.diagnose.model_copy(update=update)


def _run_tags(cfg: AuditConfig) -> dict[str, str]:
    """MLflow tags; ``ilp.checkpoint_id`` links the audit to the training run that made the model."""
    from ilp_ray.train.state import checkpoint_id

    tags = {"ilp.kind": "audit", "ilp.sft_model": cfg.sft_model}
    for key, spec in (("ilp.checkpoint_id", cfg.sft_model), ("ilp.base_checkpoint_id", cfg.base_model)):
        if spec and Path(spec).expanduser().is_dir():
            tags[key] = checkpoint_id(Path(spec).expanduser())
    return tags


def _data_read(loaded, cfg: AuditConfig) -> dict[str, Any]:
    """How the data was read, and whether its conversations are scored as they were trained."""
    out = loaded.summary()
    if out["conversation_turns"] and cfg.scoring.format != "chat":
        out["warning"] = (f"{out['conversation_turns']} samples are conversation turns, scored under "
                          f"scoring.format '{cfg.scoring.format}' (earlier turns as plain lines); "
                          "'ilp train sft' renders them with the chat template: set scoring.format: chat "
                          "to audit them as they were trained")
    return out


def _metric_view(summary: dict[str, Any]) -> dict[str, float]:
    keys = ("accuracy", "accuracy_norm", "learn_rate", "unlearned", "pass_at_n_mean", "pass_expected_mean",
            "bon_accuracy", "seed_stability", "truncated_items", "base_accuracy", "known_by_base_rate",
            "js_base_sft_mean", "wall_s", "shards_scored", "shards_reused", "n")
    out = {k: float(summary[k]) for k in keys if k in summary}
    for subset, block in summary.get("per_subset", {}).items():
        for k in ("accuracy", "learn_rate", "unlearned"):
            out[f"subset.{subset}.{k}"] = float(block[k])
    return out
