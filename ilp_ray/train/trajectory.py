"""Per-sample learning trajectories: p(correct) and SFT loss of a fixed MC sample during training.

The MC items are built once, before training, from the whole training set (the audit's own
``build_mc_items``), then a seeded sample of at most ``max_items`` is kept, so the cost of one
evaluation is bounded whatever the data size. Each evaluation scores the items with the audit
core's ``TransformersEngine`` on the live (unwrapped) model, so a trajectory's last point and a
later audit of the saved checkpoint agree.

When to evaluate is the loop's (``ilp_ray.train.loop``); ``schedule_entry`` is what it records of
each epoch's plan (``ilp_logs/schedule.json``, then the ``ilp.schedule`` metadata of
``trajectory.parquet``), so a reader knows which steps were meant to be evaluated and why.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ilp_ray.records import McItem, SftRecord
from ilp_ray.train.config import TrajectoryConfig

COLUMNS = ("step", "epoch", "reason", "id", "subset", "p_correct", "correct", "loss")
#: Parquet key-value metadata of trajectory.parquet holding the resolved schedule (JSON).
SCHEDULE_KEY = b"ilp.schedule"


def build_items(records: Sequence[SftRecord], cfg: TrajectoryConfig) -> list[McItem]:
    """MC items for the trajectory sample: all records' items, then a seeded sample of ``max_items``.

    Distractors come from the whole set (a sample-only search would give easier items).
    """
    from ilp_ray.data import HashingEmbedder, build_mc_items

    embedder = HashingEmbedder() if cfg.embedder == "hashing" else None
    items = build_mc_items(records, k=cfg.k, seed=cfg.seed, embedder=embedder)
    if len(items) <= cfg.max_items:
        return items
    keep = np.sort(np.random.default_rng(cfg.seed).choice(len(items), cfg.max_items, replace=False))
    return [items[i] for i in keep.tolist()]


@dataclass
class Evaluation:
    rows: list[dict]
    acc: dict[str, float]
    p_correct: dict[str, float]
    samples: dict[str, float]
    seconds: float


class TrajectoryEvaluator:
    """Scores the trajectory sample with the live model (rank 0 only).

    Args:
        items: the MC items (ids are training example ids).
        examples: the training ``Example`` of each item, by id (for the per-sample SFT loss).
        tokenizer: the model's tokenizer.
        fmt: the scoring format, the one the SFT examples were rendered in.
        batch_size: items per scoring batch.
        max_length: the training max_length (prompts beyond it are left-truncated, as in training).
        pad_id: padding token id.
    """

    def __init__(self, items: Sequence[McItem], examples: dict, tokenizer, fmt: str, batch_size: int,
                 max_length: int, pad_id: int, calibrate: bool = False):
        from ilp_ray.scoring.prior import prior_items

        self.items = list(items)
        # calibrate: each option's question-free score is subtracted (ilp_ray.scoring.prior) from the
        # items MC conversion built, as the audit's calibration 'auto' does; ready-made items stay
        # plain. Every distinct option text is scored once.
        self.priors = prior_items(it.options for it in self.items) if calibrate else None
        self.examples = [examples[it.id] for it in self.items]
        self.tokenizer, self.fmt = tokenizer, fmt
        self.batch_size, self.max_length, self.pad_id = batch_size, max_length, pad_id
        # Samples repeated verbatim (same question, options, answer and tokens) are scored once.
        slot: dict[tuple, int] = {}
        self._unique: list[int] = []  # index of each distinct sample's first occurrence
        of = []  # each item's distinct sample
        for i, (it, ex) in enumerate(zip(self.items, self.examples, strict=True)):
            k = (it.question, tuple(it.options), it.answer, ex.input_ids, ex.labels)
            if k not in slot:
                slot[k] = len(self._unique)
                self._unique.append(i)
            of.append(slot[k])
        self._of = np.array(of, dtype=np.int64)

    def evaluate(self, model, step: int, epoch: int, reason: str) -> Evaluation:
        """Score every item with ``model`` in eval mode under no_grad; leaves it in train mode."""
        import torch

        from ilp_ray.metrics import option_probs, pad_ragged, pass_expected
        from ilp_ray.scoring.hf import TransformersEngine
        from ilp_ray.train.sft_data import per_sample_loss

        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                engine = TransformersEngine((model, self.tokenizer), fmt=self.fmt, batch_size=self.batch_size,
                                            max_length=self.max_length, tag="trajectory")  # sets eval mode
                scores = engine.score([self.items[i] for i in self._unique])
                prior = engine.score(self.priors) if self.priors is not None else None
                losses = per_sample_loss(model, [self.examples[i] for i in self._unique], self.pad_id,
                                         self.batch_size)
        finally:
            model.train()
        scores = [scores[j] for j in self._of]
        losses = np.asarray(losses, dtype=float)[self._of]
        lp = pad_ragged([s.logprob_sum for s in scores], -np.inf)
        if prior is not None:
            from ilp_ray.scoring.prior import option_priors, prior_lookup

            lookup = prior_lookup(self.priors, [s.logprob_sum for s in prior])
            built = np.array([len(it.distractor_ids) > 0 for it in self.items])  # ready-made items stay plain
            lp = lp - built[:, None] * pad_ragged(option_priors([it.options for it in self.items], lookup), 0.0)
        probs = option_probs(lp)
        answers = np.array([it.answer for it in self.items])
        p = pass_expected(probs, answers)
        correct = probs.argmax(axis=1) == answers
        rows = [{"step": step, "epoch": epoch, "reason": reason, "id": it.id, "subset": it.subset,
                 "p_correct": float(p[i]), "correct": bool(correct[i]), "loss": float(losses[i])}
                for i, it in enumerate(self.items)]
        acc, pc = defaultdict(list), defaultdict(list)
        for r in rows:
            acc[r["subset"]].append(r["correct"])
            pc[r["subset"]].append(r["p_correct"])
        return Evaluation(rows=rows, acc={s: float(np.mean(v)) for s, v in acc.items()},
                          p_correct={s: float(np.mean(v)) for s, v in pc.items()},
                          samples={r["id"]: r["p_correct"] for r in rows},
                          seconds=time.perf_counter() - t0)


def metrics_of(ev: Evaluation) -> dict[str, float]:
    """MLflow metrics of one evaluation: per-subset accuracy and p(correct), overall, and its cost."""
    out = {f"traj.acc.{s}": v for s, v in ev.acc.items()}
    out.update({f"traj.p_correct.{s}": v for s, v in ev.p_correct.items()})
    out["traj.acc"] = float(np.mean([r["correct"] for r in ev.rows]))
    out["traj.seconds"] = ev.seconds
    return out


def schedule_entry(order: Sequence[int], subsets: Sequence[str], batch: int, offset: int, n_steps: int,
                   bounds: set[int], sched: set[int], every: int | None, by_subset: bool,
                   max_steps: int | None = None) -> dict:
    """One epoch of the resolved trajectory schedule, in global steps.

    Args:
        order, subsets, batch: the epoch's order, every example's subset, the global batch size.
        offset: the global step before the epoch's first.
        n_steps: the epoch's steps.
        bounds, sched: subset-boundary and automatic-schedule steps, 1-based within the epoch.
        every: the explicit interval (``trajectory.every_steps``), or None.
        by_subset: the sampler marks subset boundaries (the stretches are its subsets).
        max_steps: the run's step limit (a run cut short is evaluated at its last step).

    Returns:
        ``first_step``, ``last_step``, ``steps`` (every planned evaluation, sorted) and
        ``segments``: per stretch of ``order.subset_segments`` (``subset``; ``"*"`` for the whole
        epoch), its ``first_step``, ``last_step`` and the planned evaluations within them (``evals``).
    """
    from ilp_ray.train.order import subset_segments

    last = n_steps if max_steps is None else min(n_steps, max_steps - offset)
    local = set(bounds) | set(sched) | {n_steps}
    if every:
        local |= {p for p in range(1, n_steps + 1) if (offset + p) % every == 0}
    local = {p for p in local if 1 <= p <= last} | ({last} if last >= 1 else set())
    segs = [{"subset": name, "first_step": offset + a, "last_step": offset + b,
             "evals": sum(a <= p <= b for p in local)}
            for name, a, b in subset_segments(order, subsets, batch, by_subset)]
    return {"first_step": offset + 1, "last_step": offset + n_steps, "steps": [offset + p for p in sorted(local)],
            "segments": segs}
