"""``train_loop_per_worker``: the one training loop, for SFT and CPT, run by Ray Train on every rank.

Per step, the global batch is the next ``batch_size × world`` entries of the epoch's order (the
last batch wraps around to the order's start, so every rank has a full batch); rank r trains on
every world-th of them. The loop checkpoints every ``checkpoint.every_steps`` steps and at the
end, and on start resumes from ``ray.train.get_checkpoint()`` (the latest checkpoint of this run
in Ray's storage) at the same step, epoch, position and order.

Trajectories (SFT) are evaluated on rank 0 at every epoch end, after the last step of each subset
when the sampler marks them (sequential order), and at the configured interval
(``trajectory.every_steps``) or, by default, at the automatic schedule: at least
``trajectory.min_evals_per_subset`` evaluations spread over each subset's steps (each epoch's, for
a sampler without subset boundaries; ``order.scheduled_steps``). The schedule of each epoch is a
function of its order, recomputed when a sampler revises it and on resume from the saved order,
and is recorded in ``ilp_logs/schedule.json``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """What one rank holds for the whole run: its place, its model and task, where it writes."""

    cfg: Any
    kind: str
    rank: int
    world: int
    run_path: Path
    task: Any
    strategy: Any
    tokenizer: Any
    pad_id: int
    logs: dict = field(default_factory=dict)
    tracker: Any = None
    evaluator: Any = None

    @property
    def batch(self) -> int:
        """The global batch: ``optim.batch_size`` per rank."""
        return self.cfg.optim.batch_size * self.world

    @property
    def trajectories(self) -> bool:
        return self.kind == "sft" and self.cfg.trajectory.enabled


@dataclass
class Progress:
    """What a checkpoint saves and a resume starts from: step, epoch, position in the epoch's
    order, the order itself (None: the epoch's order is computed afresh), the sampler's state and
    the trajectory history (step, per-subset accuracy) the sampler's feedback carries. The loop
    counts step, epoch and position in locals and hands them to ``saved`` at each checkpoint."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    order: list | None = None
    sampler: dict = field(default_factory=dict)
    history: list = field(default_factory=list)

    def saved(self, step: int, epoch: int, pos: int, order, sampler) -> dict:
        """The train state of a checkpoint at ``step`` (``order`` empty: none, the final one)."""
        return {"step": step, "epoch": epoch, "position": pos, "order": list(order) or None,
                "sampler": sampler.state_dict() if sampler else {}, "history": self.history}


@dataclass
class EpochPlan:
    """One epoch's order and its evaluation steps (recomputed when a sampler revises the order)."""

    order: list
    n_steps: int
    bounds: set
    sched: set
    offset: int  # the global step before this epoch's first

    @classmethod
    def of(cls, w: Worker, order: list, epoch: int, offset: int) -> EpochPlan:
        sampler = w.task.sampler
        bounds = _boundary_steps(order, w.task, epoch, w.batch) if sampler and sampler.marks_subset_boundaries else set()
        sched = _scheduled_steps(w.cfg, w.kind, order, w.task, epoch, w.batch)
        plan = cls(order, math.ceil(len(order) / w.batch), bounds, sched, offset)
        if w.rank == 0:
            _record_schedule(w, plan, epoch)
        return plan


def train_loop_per_worker(config: dict) -> None:
    """Train one rank. ``config`` is the driver's plan (see ``ilp_ray.train.run.plan``):

    ``kind`` ("sft"/"cpt"), ``cfg`` (the pydantic config), ``init_dir`` (the starting HF
    checkpoint), ``payload`` (records or documents), ``items`` (trajectory MC items), ``run_path``,
    ``tracking`` ({uri, run_id} or None) and ``slow_step_s`` (test hook: sleep per step).
    """
    import ray.train
    import torch

    from ilp_ray.env import apply_defaults
    from ilp_ray.train import state as S
    from ilp_ray.train.strategy import lr_at, make_strategy
    from ilp_ray.train.tasks import build_task

    apply_defaults(local_ray=False)
    cfg, kind = config["cfg"], config["kind"]
    torch.set_num_threads(cfg.scaling.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run_path = Path(config["run_path"])

    ckpt = ray.train.get_checkpoint()
    resume_dir = None
    if ckpt is not None:
        resume_dir = Path(tempfile.mkdtemp(prefix="ilp-resume-"))
        ckpt.to_directory(str(resume_dir))
    torch.manual_seed(cfg.optim.seed)
    model, tokenizer = _load(resume_dir or config["init_dir"], cfg.scaling.use_gpu)
    task = build_task(kind, cfg, config["payload"], tokenizer, world)
    strategy = make_strategy(model, cfg.optim, cfg.engine, cfg.scaling.use_gpu, cfg.optim.batch_size, world)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    w = Worker(cfg, kind, rank, world, run_path, task, strategy, tokenizer, pad_id)

    st = Progress()
    if resume_dir is not None:
        strategy.load(resume_dir / S.ENGINE)
        saved = S.load_train_state(resume_dir)
        S.set_rng_state(saved.pop("rng"))
        st = Progress(**{k: saved[k] for k in ("step", "epoch", "position", "order", "sampler", "history")
                         if k in saved})
        if task.sampler is not None:
            task.sampler.load_state_dict(st.sampler)
        shutil.rmtree(resume_dir, ignore_errors=True)
    start_step = st.step
    if resume_dir is not None and rank == 0:
        print(f"ilp-train: resumed at step {start_step} (epoch {st.epoch}, position {st.position})", flush=True)
        # Also on disk: a worker's stdout reaches the driver asynchronously and can be cut off.
        resumes = run_path / "ilp_logs" / "resumes.jsonl"
        resumes.parent.mkdir(parents=True, exist_ok=True)
        with open(resumes, "a") as f:
            f.write(json.dumps({"step": start_step, "epoch": st.epoch, "position": st.position}) + "\n")

    w.logs = {"trajectory": S.RowLog(run_path / "ilp_logs" / "trajectory", rank == 0),
              "batches": S.RowLog(run_path / "ilp_logs" / "batches", rank == 0)}
    w.tracker = _tracker(config.get("tracking")) if rank == 0 else None
    if w.tracker is not None and resume_dir is not None:
        w.tracker.resume()  # the steps replayed from the checkpoint are in MLflow already
    w.evaluator = _evaluator(config, task, tokenizer, pad_id) if rank == 0 else None
    if rank == 0:
        for rl in w.logs.values():
            rl.truncate_after(start_step if resume_dir is not None else -1)
        if w.tracker is not None and start_step == 0:
            w.tracker.log_metrics({"data.truncated_prompts": task.truncated}, step=0)

    G = w.batch
    epochs, max_steps = cfg.optim.epochs, cfg.optim.max_steps or math.inf
    planned = min(max_steps, sum(math.ceil(len(task.order(e)) / G) for e in range(epochs)))
    step, epoch = st.step, st.epoch
    timing = {"t0": None, "tokens": 0, "paused": 0.0, "steps": 0, "eval": 0.0, "start": time.perf_counter()}
    win = {"t": time.perf_counter(), "tokens": 0, "loss": 0.0, "n": 0}
    last_eval_step = start_step if resume_dir is not None else -1
    trained_epoch = epoch
    slow = float(config.get("slow_step_s") or 0)
    metrics: dict = {}
    stopped = False  # a sampler's stop hook ended training (progressive epochs)
    sampler = task.sampler

    while epoch < epochs and step < max_steps and not stopped:
        resumed_epoch = st.order is not None and st.epoch == epoch
        order = list(st.order) if resumed_epoch else task.order(epoch)
        pos = st.position if resumed_epoch else 0
        st.order = None
        examples = task.examples(epoch)
        plan = EpochPlan.of(w, order, epoch, offset=step - pos)
        while pos < plan.n_steps and step < max_steps:
            idx = [plan.order[(pos * G + j) % len(plan.order)] for j in range(G)]
            batch = _collate([examples[i] for i in idx[rank::world]], pad_id, model)
            strategy.set_lr(lr := lr_at(step, planned, cfg.optim))
            if timing["t0"] is None and step - start_step >= cfg.timing_skip_steps:
                timing["t0"] = time.perf_counter()
            loss = strategy.forward(**batch).loss
            strategy.backward_step(loss)
            if slow:
                time.sleep(slow)
            step, pos, trained_epoch = step + 1, pos + 1, epoch
            n_tok = int(batch["attention_mask"].sum()) * world
            if timing["t0"] is not None:
                timing["tokens"] += n_tok
                timing["steps"] += 1
            win["tokens"] += n_tok
            win["loss"] += float(loss.detach())
            win["n"] += 1
            w.logs["batches"].extend([{"step": step, "epoch": epoch, "ids": [examples[i].id for i in idx]}])
            if step % cfg.log_every == 0:
                metrics = _window_metrics(win, world, lr, epoch, batch["input_ids"].device)
                if w.tracker is not None:
                    w.tracker.log_metrics(metrics, step=step)
            last = step >= max_steps or (epoch == epochs - 1 and pos == plan.n_steps)
            reasons = _eval_reasons(cfg, kind, step, pos, plan.n_steps, plan.bounds, plan.sched)
            if reasons:
                t = time.perf_counter()
                new, stopped = _evaluate(w, st, step, epoch, reasons, sampler, plan.order, pos)
                if new is not None:
                    plan = EpochPlan.of(w, plan.order[:pos * G] + new, epoch, plan.offset)
                last_eval_step = step
                timing["paused"] += time.perf_counter() - t
                timing["eval"] += time.perf_counter() - t
                if stopped:
                    break
            epoch_ckpt = bool(sampler and sampler.checkpoint_epochs) and pos == plan.n_steps
            if (step % cfg.checkpoint.every_steps == 0 or epoch_ckpt) and not last:
                t = time.perf_counter()
                _checkpoint(w, st.saved(step, epoch, pos, plan.order, task.sampler),
                            {**metrics, "step": step, "epoch": epoch})
                timing["paused"] += time.perf_counter() - t
        if pos >= plan.n_steps:
            epoch += 1
            pos = 0
    if stopped and w.rank == 0:
        log.info("the %s sampler stopped training after epoch %d (step %d)", sampler.name, trained_epoch, step)

    # The end: a final evaluation (unless this step was just evaluated) and the final checkpoint.
    if w.trajectories and last_eval_step != step and step > 0:
        t = time.perf_counter()
        _evaluate(w, st, step, trained_epoch, ["final"], None, [], 0)
        timing["eval"] += time.perf_counter() - t
    end = time.perf_counter()
    final = {**metrics, "step": step, "epoch": epoch, "done": 1}
    if w.trajectories:  # what the trajectory cost this session of the loop (issue 22: its share of training)
        final.update(trajectory_seconds=timing["eval"], trajectory_share=timing["eval"] / max(end - timing["start"], 1e-9))
    best = sampler.best_step() if sampler is not None else None
    if best is not None:
        final.update(best_step=int(best), stopped_early=int(stopped))
    if timing["t0"] is not None and timing["steps"]:
        span = end - timing["t0"] - timing["paused"]
        final.update({"steady_tokens_per_s": timing["tokens"] / span, "steady_steps": timing["steps"],
                      "steady_seconds": span})
    if w.tracker is not None:
        w.tracker.log_metrics({k: v for k, v in final.items() if k.startswith("steady_")}, step=step)
    # Always: the end's report carries the final metrics (a finished run restarted re-reports it).
    _checkpoint(w, st.saved(step, epoch, 0, [], task.sampler), final)


def _load(path, use_gpu: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if use_gpu:
        model = model.to("cuda")
    model.train()
    return model, AutoTokenizer.from_pretrained(str(path))


def _collate(examples, pad_id: int, model):
    from ilp_ray.train.sft_data import collate

    dev = next(model.parameters()).device
    return {k: v.to(dev) for k, v in collate(examples, pad_id).items()}


def _boundary_steps(order, task, epoch: int, G: int) -> set[int]:
    """Steps (1-based within the epoch) whose batch holds the last example of a subset."""
    from ilp_ray.train.order import boundary_positions

    return {p // G + 1 for p in boundary_positions(order, task.subsets(epoch))}


def _scheduled_steps(cfg, kind: str, order, task, epoch: int, G: int) -> set[int]:
    """The automatic schedule's steps (1-based within the epoch); empty under an explicit interval."""
    if kind != "sft" or not cfg.trajectory.enabled or cfg.trajectory.every_steps is not None:
        return set()
    from ilp_ray.train.order import scheduled_steps

    by_subset = bool(task.sampler and task.sampler.marks_subset_boundaries)
    return scheduled_steps(order, task.subsets(epoch), G, cfg.trajectory.min_evals_per_subset, by_subset)


def _eval_reasons(cfg, kind: str, step: int, pos: int, n_steps: int, bounds: set[int],
                  sched: set[int] = frozenset()) -> list[str]:
    """Why step ``step`` (``pos`` within its epoch) is evaluated; empty: it is not.

    ``schedule`` (the automatic schedule) is named only where no other reason holds, so boundary
    and epoch-end evaluations read as they always have.
    """
    if kind != "sft" or not cfg.trajectory.enabled:
        return []
    every = cfg.trajectory.every_steps
    reasons = [r for r, hit in (("interval", bool(every) and step % every == 0),
                                ("subset_boundary", pos in bounds), ("epoch_end", pos == n_steps)) if hit]
    if not reasons and pos in sched:
        reasons = ["schedule"]
    return reasons


def _record_schedule(w: Worker, plan: EpochPlan, epoch: int) -> None:
    """Write epoch ``epoch``'s planned evaluation steps into ``ilp_logs/schedule.json`` (rank 0)."""
    if not w.trajectories:
        return
    from ilp_ray.storage import write_json_atomic
    from ilp_ray.train.trajectory import schedule_entry

    path = w.run_path / "ilp_logs" / "schedule.json"
    try:
        rec = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        rec = {}
    t = w.cfg.trajectory
    rec.update({"mode": "interval" if t.every_steps is not None else "auto", "every_steps": t.every_steps,
                "min_evals_per_subset": None if t.every_steps is not None else t.min_evals_per_subset,
                "batch": w.batch})
    by_subset = bool(w.task.sampler and w.task.sampler.marks_subset_boundaries)
    rec.setdefault("epochs", {})[str(epoch)] = schedule_entry(
        plan.order, w.task.subsets(epoch), w.batch, plan.offset, plan.n_steps, plan.bounds, plan.sched,
        t.every_steps, by_subset, w.cfg.optim.max_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(rec, path)


def _evaluate(w: Worker, st: Progress, step: int, epoch: int, reasons: list[str], sampler, order, pos: int):
    """Rank 0 scores the trajectory sample; the sampler may revise the order and, at an epoch's
    end, stop training (both broadcast to all ranks). Returns ``(new remainder or None, stop)``."""
    from ilp_ray.train.order import Feedback
    from ilp_ray.train.trajectory import metrics_of

    new, stop = None, False
    if w.rank == 0 and w.evaluator is not None:
        ev = w.evaluator.evaluate(w.strategy.module, step, epoch, "+".join(reasons))
        w.logs["trajectory"].extend(ev.rows)
        if w.tracker is not None:
            w.tracker.log_metrics(metrics_of(ev), step=step)
        log.info("trajectory at step %d (%s): acc %s, %.2fs", step, "+".join(reasons), ev.acc, ev.seconds)
        if sampler is not None:
            rows = ev.rows
            fb = Feedback(step=step, epoch=epoch, acc=ev.acc, p_correct=ev.p_correct, samples=ev.samples,
                          history=tuple((s, dict(a)) for s, a in st.history),
                          overall=sum(bool(r["correct"]) for r in rows) / len(rows) if rows else float("nan"),
                          loss=sum(float(r["loss"]) for r in rows) / len(rows) if rows else float("nan"),
                          epoch_end="epoch_end" in reasons)
            new = sampler.revise(epoch, pos, order, fb)
            if fb.epoch_end:
                stop = bool(sampler.stop(epoch, fb))
        st.history.append((step, ev.acc))
    if w.world > 1 and sampler is not None:
        import torch.distributed as dist

        box = [new, stop]
        dist.broadcast_object_list(box, src=0)
        new, stop = box
    return new, stop


def _checkpoint(w: Worker, train_state: dict, metrics: dict) -> None:
    """Save and report a checkpoint of ``train_state`` (``Progress.saved``) with ``metrics``."""
    import ray.train

    from ilp_ray.train import state as S

    step = train_state["step"]
    for rl in w.logs.values():
        rl.flush(step)
    d = Path(tempfile.mkdtemp(prefix=f"ilp-ckpt-{step}-"))
    try:
        marker = {"id": S.make_checkpoint_id(str(w.run_path), step), "step": step, "epoch": train_state["epoch"],
                  "run": str(w.run_path)}
        S.save_checkpoint(d, rank=w.rank, module=w.strategy.module, tokenizer=w.tokenizer, strategy=w.strategy,
                          train_state=train_state, marker=marker)
        # Rank 0 carries the checkpoint; other ranks only when they hold a ZeRO partition of it.
        has_part = w.rank == 0 or any((d / S.ENGINE).glob("*"))
        ckpt = ray.train.Checkpoint.from_directory(str(d)) if has_part else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"checkpoint_step{step:09d}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _window_metrics(win: dict, world: int, lr: float, epoch: int, device=None) -> dict:
    """Loss (mean over the window's steps and ranks), lr and tokens/s since the last log; resets ``win``.

    ``device``: where the model lives. The all-reduce runs there: Ray Train's process group on GPU
    is NCCL, which takes CUDA tensors only (a CPU tensor fails with "No backend type associated
    with device type cpu").
    """
    loss = win["loss"] / max(win["n"], 1)
    if world > 1:
        import torch
        import torch.distributed as dist

        t = torch.tensor([loss], device=device)
        dist.all_reduce(t)
        loss = float(t) / world
    now = time.perf_counter()
    out = {"loss": loss, "lr": lr, "tokens_per_s": win["tokens"] / max(now - win["t"], 1e-9), "epoch": epoch}
    win.update(t=now, tokens=0, loss=0.0, n=0)
    return out


def _tracker(tracking: dict | None):
    if not tracking:
        return None
    from ilp_ray.track import MLflowTracker

    tracker = MLflowTracker(tracking["uri"], tracking["experiment"])
    tracker.run_id = tracking["run_id"]
    return tracker


def _evaluator(config, task, tokenizer, pad_id):
    cfg = config["cfg"]
    if config["kind"] != "sft" or not cfg.trajectory.enabled or not config.get("items"):
        return None
    from ilp_ray.train.trajectory import TrajectoryEvaluator

    by_id = {e.id: e for e in task.examples(0)}
    return TrajectoryEvaluator(config["items"], by_id, tokenizer, task.format, cfg.trajectory.batch_size,
                               cfg.sft.max_length, pad_id, calibrate=cfg.trajectory.calibration == "prior")
