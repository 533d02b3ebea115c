"""The audit's scoring stage: every MC item under every model, in a Ray Data actor pool.

Each actor holds every model once. Shards stream back to the driver, which writes each one
atomically (``scores/<tag>-<fp>/shard-*.parquet``) as soon as all its items have arrived: a killed
job loses only the shards in flight, and the workers need no filesystem shared with the driver.
Complete shards whose fingerprint (the model, the scoring config, the items) matches are reused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from ilp_ray import storage as S
from ilp_ray.audit.mc import history_type
from ilp_ray.config import AuditConfig, ScoringConfig
from ilp_ray.records import history_from_messages

log = logging.getLogger(__name__)

# Seconds to sleep per shard: lets the kill-and-resume test land its kill mid-run. Zero otherwise.
_SLOW_SHARD_S = float(os.environ.get("ILP_SLOW_SHARD_S", "0") or 0)


def needs_priors(cfg: AuditConfig, items) -> bool:
    """Score the options without the question when the fairness check or the calibration asks."""
    if cfg.detect.fairness.enabled or cfg.scoring.calibration == "prior":
        return True
    return cfg.scoring.calibration == "auto" and any(len(d) for d in items.column("distractor_ids").to_pylist())


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

    from ilp_ray.scoring.prior import option_priors

    real, lookups = prior_lookups(items, scores)
    options = items.column("options").to_pylist()
    ids = items.column("id").to_pylist()
    return real, {tag: pd.DataFrame({"id": ids, "logprob_sum": option_priors(options, lookup)})
                  for tag, lookup in lookups.items()}


def prior_lookups(items, scores: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """({tag: scores of the real items}, {tag: {option text: its prior log-likelihood}}): the
    scores split from their prior pseudo-items (``ilp_ray.scoring.prior``), whose options name the
    texts; ``option_priors`` gives any items' priors from a lookup."""
    import pyarrow.compute as pc

    from ilp_ray.scoring.prior import PRIOR_PREFIX, prior_items, prior_lookup

    pseudo = prior_items(items.column("options").to_pylist())  # the same pseudo-items as were scored
    real, lookups = {}, {}
    for tag, table in scores.items():
        is_prior = pc.starts_with(table.column("id"), PRIOR_PREFIX)
        real[tag] = table.filter(pc.invert(is_prior))
        p = table.filter(is_prior)
        by_id = dict(zip(p.column("id").to_pylist(), p.column("logprob_sum").to_pylist(), strict=True))
        lookups[tag] = prior_lookup(pseudo, [by_id[it.id] for it in pseudo])
    return real, lookups


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
        done = S.complete_shards(folder, {s: min(size, n - s * size) for s in range(n_shards)})
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
