"""The audit job: read → validate → MC convert → score (base and fine-tuned) → verdicts → MLflow,
then, when enabled, corpus evidence and the diagnosis (both logged into the audit's MLflow run).

Run layout (``cfg.run_dir``)::

    mc/items-<fp>.parquet          MC items (fingerprint of the data and the MC config)
    scores/<tag>-<fp>/shard-*.parquet   option scores per model (fingerprint of the model, the
                                   scoring config and the items); complete shards are reused
    verdicts/_manifest.json, shard-<gen>-*.parquet   the per-sample table (rewritten every run as a
                                   new generation, switched by the manifest)
    summary.json                   the summary figures
    timings.json                   each stage's start (epoch seconds) and wall time, this run
    audit_config.json              the config, as run (a mitigation re-audits with it)
    ilp_run.json                   the MLflow run of the latest run of the audit
    evidence/                      corpus evidence (evidence.enabled): evidence.parquet,
                                   corpus_evidence.parquet (the diagnosis reads it), summary.json
    diagnosis/                     the diagnosis (diagnose.enabled)

Scoring runs in a Ray Data actor pool whose actors each hold every model once. Shards stream back
to the driver, which writes each one atomically as soon as all its items have arrived: a killed
job loses only the shards in flight, and the workers need no filesystem shared with the driver.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilp_ray import storage as S
from ilp_ray.config import AuditConfig, ScoringConfig
from ilp_ray.records import history_from_messages, history_messages, records_frame

log = logging.getLogger(__name__)

# Seconds to sleep per shard: lets the kill-and-resume test land its kill mid-run. Zero otherwise.
_SLOW_SHARD_S = float(os.environ.get("ILP_SLOW_SHARD_S", "0") or 0)
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


# --------------------------------------------------------------------------- stages

def mc_stage(records, cfg: AuditConfig, run_dir: Path):
    """MC items for ``records`` as a pyarrow Table, cached under ``mc/`` by fingerprint."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ilp_ray.data import build_mc_items

    # a conversation's history joins the key only where there is one: older runs' items stay valid
    data_fp = S.fingerprint([(r.id, r.prompt, r.response, r.subset, r.position, r.options, r.answer)
                             + ((r.history,) if r.history else ()) for r in records])
    path = run_dir / "mc" / f"items-{S.fingerprint([data_fp, cfg.mc.model_dump()])}.parquet"
    S.clean_partial(path.parent)
    if path.exists():
        return with_history(pq.read_table(path)), True
    items = build_mc_items(records, k=cfg.mc.k, seed=cfg.mc.seed, near_dup=cfg.mc.near_dup,
                           prefer_same_subset=cfg.mc.prefer_same_subset, distractors=cfg.mc.distractors,
                           length_ratio=cfg.mc.length_ratio, subject_check=cfg.mc.subject_check)
    table = pa.table({
        "id": [it.id for it in items],
        "question": [it.question for it in items],
        "options": [list(it.options) for it in items],
        "answer": pa.array([it.answer for it in items], pa.int64()),
        "distractor_ids": pa.array([list(it.distractor_ids) for it in items], pa.list_(pa.string())),
        "subset": [it.subset for it in items],
        "position": pa.array([it.position for it in items], pa.int64()),
        "fallback": pa.array([it.fallback for it in items], pa.int64()),
        "history": pa.array([history_messages(it.history) for it in items], history_type()),
    })
    S.write_table_atomic(table, path)
    return table, False


def needs_priors(cfg: AuditConfig, items) -> bool:
    """Score the options without the question when the fairness check or the calibration asks."""
    if cfg.detect.fairness.enabled or cfg.scoring.calibration == "prior":
        return True
    return cfg.scoring.calibration == "auto" and any(len(d) for d in items.column("distractor_ids").to_pylist())


def history_type():
    """Arrow type of the items' ``history`` column: a conversation's earlier turns, oldest first."""
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def with_history(items):
    """``items`` with a ``history`` column: an items file written before conversations has none."""
    import pyarrow as pa

    if "history" in items.column_names:
        return items
    return items.append_column("history", pa.array([[] for _ in range(items.num_rows)], history_type()))


def with_prior_items(items):
    """The items to score, then the prior pseudo-items (``ilp_ray.scoring.prior``) after them."""
    import pyarrow as pa

    from ilp_ray.errors import DataError
    from ilp_ray.scoring.prior import is_prior_id, prior_items

    ids = items.column("id").to_pylist()
    bad = next((i for i in ids if is_prior_id(i)), None)
    if bad is not None:
        raise DataError(f"record id {bad!r} starts with a reserved prefix", field="id")
    pseudo = prior_items(items.column("options").to_pylist())
    cols = ["id", "question", "options", "answer", "history"]
    extra = pa.table({"id": [p.id for p in pseudo], "question": [p.question for p in pseudo],
                      "options": [list(p.options) for p in pseudo],
                      "answer": pa.array([p.answer for p in pseudo], pa.int64()),
                      "history": pa.array([[] for _ in pseudo], history_type())})
    return pa.concat_tables([items.select(cols), extra.cast(items.select(cols).schema)])


def split_priors(items, scores: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """({tag: scores of the real items}, {tag: frame of id and the options' prior log-likelihoods})."""
    import pandas as pd
    import pyarrow.compute as pc

    from ilp_ray.scoring.prior import PRIOR_PREFIX, option_priors, prior_items, prior_lookup

    options = items.column("options").to_pylist()
    pseudo = prior_items(options)  # the same pseudo-items as were scored: their options name the texts
    real, priors = {}, {}
    for tag, table in scores.items():
        is_prior = pc.starts_with(table.column("id"), PRIOR_PREFIX)
        real[tag] = table.filter(pc.invert(is_prior))
        p = table.filter(is_prior)
        by_id = dict(zip(p.column("id").to_pylist(), p.column("logprob_sum").to_pylist(), strict=True))
        lookup = prior_lookup(pseudo, [by_id[it.id] for it in pseudo])
        priors[tag] = pd.DataFrame({"id": items.column("id").to_pylist(),
                                    "logprob_sum": option_priors(options, lookup)})
    return real, priors


def model_identity(spec: str) -> Any:
    """What makes a model's scores reusable: its files' sizes and times, or the bundle's version."""
    from importlib.metadata import PackageNotFoundError, version

    from ilp_ray.models import BUNDLED

    p = Path(spec).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in {".json", ".safetensors", ".bin"})
        return [str(p.resolve())] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    if spec in BUNDLED:
        try:
            return [spec, version(BUNDLED[spec].package.replace("_", "-"))]
        except PackageNotFoundError:
            return [spec]
    return [spec]


class ScoreShards:
    """Ray Data stage: score MC item shards with one of the models it holds.

    Constructor arguments are the model specs by tag and the scoring config; each model is loaded
    once per actor, on first use. Input rows: ``shard``, ``tag``, ``items`` (JSON list of items).
    Output: one row per item with its option scores.
    """

    REQUIRED = ("shard", "tag", "items")

    def __init__(self, models: dict[str, str], scoring: dict[str, Any], threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.models, self.scoring = models, ScoringConfig(**scoring)
        self.engines: dict[str, Any] = {}

    def engine(self, tag: str):
        if tag not in self.engines:
            from ilp_ray.scoring.engines import make_engine

            self.engines[tag] = make_engine(self.scoring, self.models[tag], tag=tag)
        return self.engines[tag]

    def __call__(self, batch: dict) -> Any:
        import pyarrow as pa

        from ilp_ray.records import McItem

        missing = [c for c in self.REQUIRED if c not in batch]
        if missing:
            raise ValueError(f"ScoreShards needs columns {missing}")
        cols: dict[str, list] = {k: [] for k in
                                 ("shard", "tag", "id", "logprob_sum", "n_tokens", "n_chars", "truncated")}
        for shard, tag, payload in zip(batch["shard"], batch["tag"], batch["items"]):
            items = [McItem(id=d["id"], question=d["question"], options=tuple(d["options"]),
                            answer=d["answer"], history=history_from_messages(d["history"]))
                     for d in json.loads(payload)]
            if _SLOW_SHARD_S:
                time.sleep(_SLOW_SHARD_S)
            for sc in self.engine(str(tag)).score(items):
                cols["shard"].append(int(shard))
                cols["tag"].append(str(tag))
                cols["id"].append(sc.id)
                cols["logprob_sum"].append(list(sc.logprob_sum))
                cols["n_tokens"].append(list(sc.n_tokens))
                cols["n_chars"].append(list(sc.n_chars))
                cols["truncated"].append(bool(sc.truncated))
        return pa.table(cols)


def score_stage(items, cfg: AuditConfig, run_dir: Path, models: dict[str, str],
                progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score every item under every model; returns ({tag: scores Table}, stage stats)."""
    n, size = items.num_rows, cfg.ray.shard_size
    n_shards = math.ceil(n / size)
    histories = items.column("history").to_pylist()
    # the questions and histories are scored too: a changed prompt must not reuse the old scores
    items_fp = S.fingerprint(items.column("id").to_pylist() + items.column("options").to_pylist()
                             + items.column("question").to_pylist() + ([histories] if any(histories) else []))
    folders, pending = {}, []
    for tag, spec in models.items():
        scoring_key = cfg.scoring.model_dump(exclude={"length_norm", "temperature", "calibration"})
        fp = S.fingerprint([model_identity(spec), scoring_key, items_fp, size])
        folder = run_dir / "scores" / f"{tag}-{fp}"
        S.clean_partial(folder)
        folders[tag] = folder
        done = S.complete_shards(folder)
        pending += [(s, tag) for s in range(n_shards) if s not in done]
    stats = {"shards_total": n_shards * len(models), "shards_scored": len(pending),
             "shards_reused": n_shards * len(models) - len(pending)}
    if pending:
        _run_pool(items, pending, folders, models, cfg, progress)
    return {tag: S.read_shards(folders[tag]) for tag in models}, stats


def _run_pool(items, pending, folders, models, cfg: AuditConfig, progress: bool) -> None:
    import pyarrow as pa
    import ray
    from rich.progress import Progress

    from ilp_ray.env import init_ray

    init_ray(cfg.ray.address)
    _check_room(ray.cluster_resources().get("CPU", 0.0), cfg)
    import ray.data

    # Ray Data's INFO lines (execution plans, paths to its logs) go to the session's log files.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one progress bar, ours, counting finished shards
    ctx.verbose_progress = False
    rows = items.to_pylist()
    size = cfg.ray.shard_size
    payload = [{"shard": s, "tag": tag,
                "items": json.dumps([{k: r[k] for k in ("id", "question", "options", "answer", "history")}
                                     for r in rows[s * size:(s + 1) * size]])}
               for s, tag in pending]
    expected = {(s, tag): min(size, len(rows) - s * size) for s, tag in pending}
    ds = ray.data.from_items(payload, override_num_blocks=len(payload)).map_batches(
        ScoreShards, batch_size=1, batch_format="numpy",
        fn_constructor_kwargs={"models": models, "scoring": cfg.scoring.model_dump(),
                               "threads": cfg.ray.threads_per_actor},
        compute=ray.data.ActorPoolStrategy(size=cfg.ray.num_actors), num_cpus=cfg.ray.cpus_per_actor)
    buffers: dict[tuple[int, str], list] = {}
    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task("scoring shards", total=len(pending))
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for key, part in _split_by_shard(batch):
                buffers.setdefault(key, []).append(part)
                got = sum(p.num_rows for p in buffers[key])
                if got == expected[key]:
                    table = pa.concat_tables(buffers.pop(key)).drop_columns(["shard", "tag"])
                    S.write_table_atomic(table, S.shard_path(folders[key[1]], key[0]))
                    bar.advance(task)
    if buffers:
        raise RuntimeError(f"scoring ended with incomplete shards: {sorted(buffers)}")


def _split_by_shard(batch):
    import pyarrow.compute as pc

    shards, tags = batch.column("shard").to_pylist(), batch.column("tag").to_pylist()
    for key in dict.fromkeys(zip(shards, tags)):
        mask = pc.and_(pc.equal(batch.column("shard"), key[0]), pc.equal(batch.column("tag"), key[1]))
        yield key, batch.filter(mask)


def _check_room(total_cpus: float, cfg: AuditConfig) -> None:
    # An actor pool that takes every CPU never lets Ray Data's read and write tasks run: a hang.
    need = cfg.ray.num_actors * cfg.ray.cpus_per_actor
    if need > total_cpus - 0.5:
        raise ValueError(
            f"ray.num_actors × ray.cpus_per_actor = {need:g} CPUs, but the Ray cluster has "
            f"{total_cpus:g}: leave at least 0.5 CPU free for Ray Data's read/write tasks "
            f"(e.g. ray.cpus_per_actor={max(0.25, (total_cpus - 0.5) / cfg.ray.num_actors):g})")


# --------------------------------------------------------------------------- the job

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
    with S.run_lock(run_dir, "audit"):  # a second audit on this directory is refused, not mixed in
        res = _audit(cfg, progress, loaded, run_dir, t0, st, tracker)
    res.timings = st.marks
    S.write_json_atomic(res.timings, run_dir / "timings.json")
    return res


def _audit(cfg: AuditConfig, progress: bool, loaded, run_dir: Path, t0: float, st: _Stages, tracker) -> AuditResult:
    """``run_audit``'s stages, under the run directory's lock."""
    from ilp_ray.detect import compute_verdicts, summarize
    from ilp_ray.track import flatten

    records = loaded.records
    # What a later job reuses (a mitigation re-audits on the same items with the same settings).
    S.write_json_atomic(cfg.model_dump(mode="json"), run_dir / CONFIG)
    with st("mc"):
        items, mc_reused = mc_stage(records, cfg, run_dir)
    models = {"sft": cfg.sft_model} | ({"base": cfg.base_model} if cfg.base_model else {})
    with_priors = needs_priors(cfg, items)
    with st("score"):
        scores, stats = score_stage(with_prior_items(items) if with_priors else items, cfg, run_dir, models, progress)
    with st("verdicts"):
        scores, priors = split_priors(items, scores) if with_priors else (scores, None)
        items_df = items.select(["id", "subset", "position", "answer", "distractor_ids"]).to_pandas()
        sft_df = scores["sft"].to_pandas()
        base_df = scores["base"].to_pandas() if "base" in scores else None
        verdicts, stability = compute_verdicts(items_df, sft_df, base_df, cfg.scoring, cfg.detect, priors)
        verdicts = verdicts.merge(items.select(["id", "question", "options", "distractor_ids", "fallback"]).to_pandas(),
                                  on="id", how="left")
        S.write_verdicts(verdicts, run_dir / "verdicts", cfg.ray.shard_size)

        summary = summarize(verdicts, cfg.detect)
        summary["seed_stability"] = stability
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

            with st("diagnosis"):
                diagnosis = run_diagnosis(run_dir, diagnosis_config(cfg, evidence), tracker=tracker)
    return AuditResult(run_dir, summary, verdicts, tracker.run_id, tracker.tracking_uri, diagnosis, evidence)


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
