"""The driver of a training job: prepare data and the starting model, run ``TorchTrainer``, log.

Run layout (``run_dir/name``, Ray Train's run folder)::

    checkpoint_step<NNN>/       Ray Train checkpoints (HF model + train state + engine state)
    init/                       the starting model of a ``tiny`` config (built once, reused on resume)
    ilp_logs/trajectory/        trajectory rows, one file per checkpoint interval
    ilp_logs/batches/           the example ids of every step's global batch
    ilp_logs/schedule.json      each epoch's planned trajectory evaluations (steps, per subset)
    trajectory.parquet          all trajectory rows (written at the end; also an MLflow artifact);
                                its Parquet metadata ``ilp.schedule`` holds schedule.json
    ilp_run.json                the MLflow run id, so a restarted job logs into the same run
    ilp_config.json             the job's config as trained (a mitigation retrains with it)

Restarting the same config continues the run: Ray Train v2 restores the run's checkpoint manager
from ``run_dir/name`` and ``ray.train.get_checkpoint()`` in the loop returns the latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilp_ray.train.config import CptTrainConfig, SftTrainConfig

log = logging.getLogger(__name__)

# Seconds to sleep per training step: lets the kill-and-resume test land its kill mid-run.
_SLOW_STEP_S = float(os.environ.get("ILP_SLOW_STEP_S", "0") or 0)


@dataclass
class TrainResult:
    run_path: Path
    checkpoint: Path          # the final checkpoint: a HF checkpoint directory
    checkpoint_id: str
    metrics: dict[str, Any]   # the final report (step, loss, steady_tokens_per_s, …)
    trajectory: Path | None   # trajectory.parquet (SFT with trajectories)
    run_id: str | None        # MLflow run


def training_texts(kind: str, payload: dict) -> list[str]:
    """Texts a ``tiny`` model's tokenizer is trained on: the training data itself."""
    if kind == "sft":
        return [f"{r.prompt}\n{r.response}" for r in payload["records"]]
    return list(payload["knowledge"]) + list(payload["general"])


def prepare_model(cfg, kind: str, payload: dict, run_path: Path) -> Path:
    """The starting checkpoint directory: a resolved spec, or a tiny model built (once) under ``init/``."""
    from ilp_ray.models import resolve_model

    if cfg.model.spec is not None:
        return resolve_model(cfg.model.spec)
    init = run_path / "init"
    if (init / "config.json").is_file():  # a restarted job must start from the same weights
        return init
    from ilp_ray.models.tiny import make_tiny_llama, make_tiny_tokenizer

    t = cfg.model.tiny
    tokenizer = make_tiny_tokenizer(training_texts(kind, payload), vocab_size=t.vocab_size)
    model = make_tiny_llama(tokenizer, seed=t.seed, hidden_size=t.hidden_size, num_layers=t.num_layers,
                            num_heads=t.num_heads, num_kv_heads=t.num_kv_heads,
                            max_position_embeddings=t.max_position_embeddings)
    tmp = run_path / ".init-tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, init)
    return init


def load_payload(cfg, kind: str) -> dict:
    """Read and validate the training data on the driver (errors name file, line and field)."""
    if kind == "sft":
        from ilp_ray.data import read_sft

        records = read_sft(cfg.data, cfg.data_format)
        if cfg.data_exclude:
            from ilp_ray.errors import ConfigError

            unknown = sorted(set(cfg.data_exclude) - {r.id for r in records})
            if unknown:
                raise ConfigError(f"data_exclude names {len(unknown)} ids not in the data: {unknown[:5]}",
                                  file=cfg.data, field="data_exclude")
            drop = set(cfg.data_exclude)
            records = [r for r in records if r.id not in drop]
        return {"records": records}
    from ilp_ray.train.cpt_data import read_documents

    m = cfg.mixture
    return {"knowledge": read_documents(m.knowledge), "general": read_documents(m.general) if m.general else []}


def _log_datasets(tracker, cfg, payload: dict) -> None:
    """The training data as MLflow dataset inputs: the SFT records, or CPT's two corpora."""
    import pandas as pd

    if isinstance(cfg, SftTrainConfig):
        from ilp_ray.records import records_frame

        tracker.log_dataset(records_frame(payload["records"]), cfg.data, "sft", "training")
        return
    for key in ("knowledge", "general"):
        if payload[key]:
            tracker.log_dataset(pd.DataFrame({"text": payload[key]}), getattr(cfg.mixture, key), key, "training")


def _start_tracking(cfg, run_path: Path, payload: dict):
    from ilp_ray.track import flatten, make_tracker

    t = cfg.tracking
    tracker = make_tracker(t.enabled, t.uri, t.experiment, cfg.run_dir)
    if not t.enabled:
        return tracker, None
    marker = run_path / "ilp_run.json"
    if marker.is_file():
        tracker.run_id = json.loads(marker.read_text())["mlflow_run_id"]
    else:
        tracker.start(cfg.name, tags={"ilp.job": "train", **t.tags})
        tracker.log_params(flatten(cfg.model_dump(mode="json")))
        _log_datasets(tracker, cfg, payload)
        from ilp_ray.storage import write_json_atomic

        write_json_atomic({"mlflow_run_id": tracker.run_id}, marker)
    return tracker, {"uri": tracker.tracking_uri, "experiment": t.experiment, "run_id": tracker.run_id}


def run_training(cfg: SftTrainConfig | CptTrainConfig) -> TrainResult:
    """Run (or continue) the training job that ``cfg`` describes on Ray Train, and log it.

    Raises:
        DataError / ConfigError: bad data or config, before any Ray work starts.
    """
    from ilp_ray.env import apply_defaults, init_ray
    from ilp_ray.train import checkpoint_id
    from ilp_ray.train.state import read_rows

    apply_defaults(local_ray=cfg.scaling.address is None)
    kind = "sft" if isinstance(cfg, SftTrainConfig) else "cpt"
    payload = load_payload(cfg, kind)
    items = None
    if kind == "sft":
        from ilp_ray.train.order import make_sampler

        # Fail on a bad sampler or subset_order now, not inside a Ray worker.
        recs = payload["records"]
        make_sampler(cfg.order.sampler, [r.subset for r in recs], cfg.order.seed, cfg.order.subset_order,
                     dict(cfg.order.options), ids=[r.id for r in recs],
                     batch=cfg.optim.batch_size * cfg.scaling.num_workers)
        if cfg.trajectory.enabled:
            from ilp_ray.train.trajectory import build_items

            items = build_items(payload["records"], cfg.trajectory)
    run_path = Path(cfg.run_dir).resolve() / cfg.name
    run_path.mkdir(parents=True, exist_ok=True)
    done = finished(run_path, cfg)
    if done is not None:
        log.info("%s: finished earlier with this config; nothing to train", run_path)
        return done
    changed = changed_data(run_path, cfg)
    if changed:
        from ilp_ray.errors import ConfigError

        raise ConfigError(f"this run finished training on another version of {changed}; continuing it "
                          "would train one model on two datasets. Delete the run folder or choose another "
                          "name", file=str(run_path), field="data")
    init_dir = prepare_model(cfg, kind, payload, run_path)
    from ilp_ray.storage import write_json_atomic

    # The settings a later job reuses (a mitigation retrains "with the original data and settings").
    write_json_atomic({"kind": kind, "config": cfg.model_dump(mode="json")}, run_path / CONFIG)
    tracker, tracking = _start_tracking(cfg, run_path, payload)

    init_ray(cfg.scaling.address)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ilp_ray.train.loop import train_loop_per_worker

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **(s.resources_per_worker or {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"kind": kind, "cfg": cfg, "init_dir": str(init_dir), "payload": payload,
                           "items": items, "run_path": str(run_path), "tracking": tracking,
                           "slow_step_s": _SLOW_STEP_S},
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(storage_path=str(Path(cfg.run_dir).resolve()), name=cfg.name,
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
                             failure_config=FailureConfig(max_failures=s.max_failures)))
    try:
        result = trainer.fit()
    except BaseException:
        tracker.end("FAILED")
        raise
    final = best_checkpoint(run_path, Path(result.checkpoint.path), result.metrics or {})
    ckpt_id = checkpoint_id(final)
    traj_path = None
    rows = read_rows(run_path / "ilp_logs" / "trajectory")
    schedule = read_schedule(run_path)
    if len(rows):
        traj_path = run_path / "trajectory.parquet"
        rows = with_trained_step(rows, read_rows(run_path / "ilp_logs" / "batches"))
        write_trajectory(rows, traj_path, schedule)
        tracker.log_artifact(traj_path, "trajectory")
    tracker.set_tags({"ilp.checkpoint_id": ckpt_id, "ilp.checkpoint_path": str(final)})
    if not _has_param(tracker, "final_checkpoint"):
        tracker.log_params({"final_checkpoint": str(final)})
    tracker.end("FINISHED")
    out = TrainResult(run_path=run_path, checkpoint=final, checkpoint_id=ckpt_id,
                      metrics=dict(result.metrics or {}), trajectory=traj_path, run_id=tracker.run_id)

    write_json_atomic({"config": _fingerprint(cfg), "data": _data_stats(cfg), "checkpoint": str(final),
                       "checkpoint_id": ckpt_id,
                       "metrics": out.metrics, "trajectory": str(traj_path) if traj_path else None,
                       "trajectory_schedule": schedule, "run_id": out.run_id}, run_path / DONE)
    return out


DONE = "ilp_done.json"
CONFIG = "ilp_config.json"  # the job's config, as trained


def training_config_of(checkpoint: str | os.PathLike) -> tuple[str, dict] | None:
    """``(kind, config)`` of the training run that saved ``checkpoint`` (its marker names the run),
    or None for a checkpoint this project did not train."""
    from ilp_ray.train.state import MARKER

    marker = Path(checkpoint) / MARKER
    try:
        run = Path(json.loads(marker.read_text())["run"])
        rec = json.loads((run / CONFIG).read_text())
    except (FileNotFoundError, NotADirectoryError, KeyError, json.JSONDecodeError):
        return None
    return rec["kind"], rec["config"]


def best_checkpoint(run_path: Path, last: Path, metrics: dict) -> Path:
    """The run's result: the last checkpoint, or the one of ``best_step`` when the sampler named
    one (progressive epochs keep the best epoch, not the last)."""
    best = metrics.get("best_step")
    if best is None or int(best) == int(metrics.get("step", -1)):
        return last
    path = run_path / f"checkpoint_step{int(best):09d}"
    if not path.is_dir():
        from ilp_ray.errors import ConfigError

        raise ConfigError(f"the sampler kept step {best}'s checkpoint, but {path} is gone: "
                          "checkpoint.keep deleted it; leave checkpoint.keep unset", field="checkpoint.keep")
    return path


def read_schedule(run_path: Path) -> dict | None:
    """The trajectory schedule the loop recorded (``ilp_logs/schedule.json``), or None."""
    try:
        return json.loads((run_path / "ilp_logs" / "schedule.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_trajectory(rows, path: Path, schedule: dict | None) -> None:
    """``trajectory.parquet``, with the resolved schedule as its ``ilp.schedule`` metadata."""
    import pyarrow as pa

    from ilp_ray.storage import write_table_atomic
    from ilp_ray.train.trajectory import SCHEDULE_KEY

    table = pa.Table.from_pandas(rows, preserve_index=False)
    if schedule is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               SCHEDULE_KEY: json.dumps(schedule).encode()})
    write_table_atomic(table, path)  # a kill mid-write leaves the old file (or none), never half of one


def with_trained_step(rows, batches):
    """The trajectory rows with ``trained_step``: the first step whose batch held the sample.

    An evaluation at step ``s`` follows the update of step ``s``, so the rows of a sample with
    ``step >= trained_step`` show it after training first reached it (causes IV and V judge a
    sample from there on). Null for a sample no batch held (e.g. a cut-short run).
    """
    import pandas as pd

    first: dict[str, int] = {}
    if len(batches):  # a resumed run may log a step twice, and files come in step order: the min wins
        for step, ids in sorted(zip(batches["step"].to_numpy(), batches["ids"], strict=True), key=lambda t: t[0]):
            for i in ids:
                first.setdefault(str(i), int(step))
    out = rows.copy()
    out["trained_step"] = pd.array([first.get(str(i)) for i in out["id"]], dtype="Int64")
    return out


def _data_stats(cfg) -> list[list]:
    """The identity (path, size, mtime) of every data file ``cfg`` reads."""
    files = [getattr(cfg, "data", None)]
    if isinstance(cfg, CptTrainConfig):
        files += [cfg.mixture.knowledge, cfg.mixture.general]
    stats = []
    for f in files:
        if f and Path(f).is_file():
            st = Path(f).stat()
            stats.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
        elif f:
            stats.append([f, None, None])
    return stats


def _fingerprint(cfg) -> str:
    """The config and the identity (path, size, mtime) of every data file it reads.

    Run tags (``tracking.tags``: which study a run belongs to) do not change what is trained, and
    an empty ``data_exclude`` is the config of before that field: neither enters, so a run that
    finished before them is still found finished.
    """
    from ilp_ray.storage import fingerprint

    dump = cfg.model_dump(mode="json")
    dump["tracking"].pop("tags", None)
    if not dump.get("data_exclude"):
        dump.pop("data_exclude", None)
    return fingerprint([dump, [tuple(s) for s in _data_stats(cfg)]])


def changed_data(run_path: Path, cfg) -> str | None:
    """A data file that changed since the run at ``run_path`` finished, or None.

    A finished run may be continued with another config (more epochs), never on other data.
    """
    try:
        rec = json.loads((run_path / DONE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    before = {s[0]: s for s in rec.get("data") or []}
    for now in _data_stats(cfg):
        if now[0] in before and before[now[0]] != now:
            return now[0]
    return None


def finished(run_path: Path, cfg) -> TrainResult | None:
    """The result of a run that already finished with this very config, or None.

    Rerunning a finished job returns at once instead of starting Ray Train on a run with nothing
    left to do; a changed config (more epochs, another lr) trains as a resumed run.
    """
    try:
        rec = json.loads((run_path / DONE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if rec.get("config") != _fingerprint(cfg) or not Path(rec["checkpoint"]).is_dir():
        return None
    traj = Path(rec["trajectory"]) if rec.get("trajectory") else None
    return TrainResult(run_path=run_path, checkpoint=Path(rec["checkpoint"]), checkpoint_id=rec["checkpoint_id"],
                       metrics=rec.get("metrics") or {}, trajectory=traj, run_id=rec.get("run_id"))


def _has_param(tracker, key: str) -> bool:
    """MLflow refuses to change a logged param; a restarted run must not try (it logs a tag anyway)."""
    client = getattr(tracker, "_client", None)
    if client is None or tracker.run_id is None:
        return True
    return key in client.get_run(tracker.run_id).data.params
