"""The mitigations' data orders (paper, appendices C-E), as ``OrderSampler``s of the one loop.

- ``conflict_bucket`` (Algorithm 3): a global shuffle in which the members of each conflict group
  go to different global batches, so no step ever trains on two of them at once; groups are
  re-evaluated at each trajectory evaluation from the live model's p(correct) (dynamic grouping).
- ``dynamic_resample`` (Algorithm 4): a global shuffle; after each evaluation, a subset whose
  accuracy fell by more than ``delta`` (relative) since the previous one gets extra draws of its
  samples in the next window of steps.
- ``progressive_epochs`` (Algorithm 5): a global shuffle per epoch, with a stop hook: after
  ``initial_epochs``, one more epoch at a time while the epoch-end accuracy improves by at least
  ``epsilon``; the run keeps the best epoch's checkpoint.

Each is a pure function of its arguments, the epoch and its state (``state_dict``), and the loop
saves the realised order of the current epoch in every checkpoint, so a resumed run continues with
the same data. Registered (lazily) in ``ilp_ray.train.order.SAMPLERS``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ilp_ray.train.order import Feedback, OrderSampler


def _shuffle(n: int, *key: int) -> list[int]:
    return np.random.default_rng(list(key)).permutation(n).tolist()


def bucket_order(entries: Sequence[int], groups: Sequence[Sequence[int]], batch: int,
                 rng: np.random.Generator, filler: Sequence[int]) -> list[int]:
    """``entries`` (example indices, repeats allowed) arranged in full batches of ``batch`` such
    that no batch holds two distinct members of one group.

    Groups are placed largest first, each member into a different batch (the batches with the most
    room first, ties broken at random); the other entries fill the rest at random. Slots left in
    the last batch are filled from ``filler`` (ungrouped examples), so the loop never wraps the
    epoch's start into its last batch.

    Raises:
        ValueError: a group has more members in ``entries`` than there are batches.
    """
    n_batches = max(1, math.ceil(len(entries) / batch))
    member_of = {i: g for g, grp in enumerate(groups) for i in grp}
    by_group: dict[int, list[int]] = {}
    free: list[int] = []
    for e in entries:
        (by_group.setdefault(member_of[e], []) if e in member_of else free).append(e)
    batches: list[list[int]] = [[] for _ in range(n_batches)]
    for g in sorted(by_group, key=lambda g: (-len(by_group[g]), g)):
        members = by_group[g]
        distinct = list(dict.fromkeys(members))
        if len(distinct) > n_batches:
            raise ValueError(f"conflict group of {len(distinct)} samples cannot be spread over {n_batches} "
                             f"batches of {batch}: lower the batch size or split the group")
        # A repeated member (re-sampling) stays with its first copy; distinct members never meet.
        room = np.array([batch - len(b) for b in batches], float)
        picks = np.lexsort((rng.random(n_batches), -room))[:len(distinct)]
        if (room[picks] <= 0).any():
            raise ValueError(f"no room to spread a conflict group of {len(distinct)} over {n_batches} batches")
        home = dict(zip(distinct, picks.tolist(), strict=True))
        for m in members:
            batches[home[m]].append(m)
    free = [free[i] for i in rng.permutation(len(free))]
    for b in batches:
        while len(b) < batch and free:
            b.append(free.pop())
    pool = list(filler)
    if pool:
        for b in batches:
            while len(b) < batch:
                b.append(pool[int(rng.integers(len(pool)))])
    out: list[int] = []
    for b in batches:
        out.extend(b[i] for i in rng.permutation(len(b)))
    return out + free  # free is empty unless batches overflowed (cannot happen with ceil)


class ConflictBucketSampler(OrderSampler):
    """Algorithm 3: every conflict group spread over distinct global batches, every sample kept.

    Args:
        groups: the conflict groups, as lists of example ids (``conflict_groups.parquet``'s
            members); an id not in the data is an error.
        release_p: dynamic grouping: at each evaluation a group whose evaluated members all have
            p(correct) ≥ this is released (its members shuffle freely) until one falls below it
            again; a group with an unevaluated member stays active. None: static groups.
    """

    name = "conflict_bucket"

    def __init__(self, subsets: Sequence[str], seed: int = 0, groups: Sequence[Sequence[str]] = (),
                 release_p: float | None = 0.5, **options: Any):
        super().__init__(subsets, seed, **options)
        index = {i: n for n, i in enumerate(self.ids)}
        unknown = sorted({str(m) for g in groups for m in g} - set(index))
        if unknown:
            raise ValueError(f"conflict groups name ids not in the data: {unknown[:5]}"
                             + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        self.groups = [sorted({index[str(m)] for m in g}) for g in groups]
        self.groups = [g for g in self.groups if len(g) > 1]
        self.release_p = release_p
        self.released: set[int] = set()
        grouped = {i for g in self.groups for i in g}
        self.filler = [i for i in range(len(self.subsets)) if i not in grouped] or list(range(len(self.subsets)))
        n_batches = math.ceil(len(self.subsets) / max(self.batch, 1))
        big = max((len(g) for g in self.groups), default=0)
        if big > n_batches:
            raise ValueError(f"a conflict group has {big} samples but an epoch has only {n_batches} batches "
                             f"of {self.batch}: lower the batch size")

    def active(self) -> list[list[int]]:
        return [g for k, g in enumerate(self.groups) if k not in self.released]

    def order(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, epoch])
        return bucket_order(_shuffle(len(self.subsets), self.seed, epoch), self.active(), self.batch, rng,
                            self.filler)

    def revise(self, epoch: int, position: int, order: list[int], feedback: Feedback) -> list[int] | None:
        if self.release_p is None or not feedback.samples:
            return None
        p = feedback.samples
        released = set()
        for k, g in enumerate(self.groups):
            vals = [p.get(self.ids[i]) for i in g]
            if all(v is not None and v >= self.release_p for v in vals):
                released.add(k)
        if released == self.released:
            return None
        self.released = released
        rest = order[position * self.batch:]
        rng = np.random.default_rng([self.seed, epoch, feedback.step])
        return bucket_order(rest, self.active(), self.batch, rng, self.filler)[:len(rest)] if rest else None

    def state_dict(self) -> dict:
        return {"released": sorted(self.released)}

    def load_state_dict(self, state: dict) -> None:
        self.released = set(state.get("released", []))


class DynamicResampleSampler(OrderSampler):
    """Algorithm 4: global shuffle; a subset whose accuracy dropped gets extra draws next window.

    Args:
        window: steps between evaluations (the trajectory interval, T); the extra draws go into
            the next ``window`` steps.
        delta: relative accuracy drop since the previous evaluation that triggers re-sampling
            (paper: 0.05).
        upweight: a triggered subset's weight in the next window: ``(upweight − 1) × its share of
            the data × window × batch`` extra draws of its samples (at least one).
    """

    name = "dynamic_resample"

    def __init__(self, subsets: Sequence[str], seed: int = 0, window: int = 500, delta: float = 0.05,
                 upweight: float = 2.0, **options: Any):
        super().__init__(subsets, seed, **options)
        if window < 1 or delta < 0 or upweight < 1:
            raise ValueError(f"dynamic_resample needs window ≥ 1, delta ≥ 0, upweight ≥ 1; got {window}, "
                             f"{delta}, {upweight}")
        self.window, self.delta, self.upweight = int(window), float(delta), float(upweight)
        self.boosts: list[dict] = []

    def order(self, epoch: int) -> list[int]:
        return _shuffle(len(self.subsets), self.seed, epoch)

    def dropped(self, feedback: Feedback) -> list[str]:
        """Subsets whose accuracy fell by more than ``delta`` relative to the previous evaluation."""
        if not feedback.history:
            return []
        prev = feedback.history[-1][1]
        return sorted(s for s, a in feedback.acc.items()
                      if prev.get(s, 0) > 0 and (prev[s] - a) / prev[s] > self.delta)

    def revise(self, epoch: int, position: int, order: list[int], feedback: Feedback) -> list[int] | None:
        subsets = self.dropped(feedback)
        if not subsets:
            return None
        rng = np.random.default_rng([self.seed, epoch, feedback.step])
        rest = order[position * self.batch:]
        span = self.window * self.batch
        extra: list[int] = []
        counts = {}
        for s in subsets:
            members = [i for i, x in enumerate(self.subsets) if x == s]
            k = max(1, round((self.upweight - 1) * len(members) / len(self.subsets) * span))
            extra += rng.choice(members, size=k, replace=True).tolist()
            counts[s] = k
        head = rest[:span] + extra
        head = [head[i] for i in rng.permutation(len(head))]
        self.boosts.append({"step": feedback.step, "epoch": epoch, "subsets": counts})
        return head + rest[span:]

    def state_dict(self) -> dict:
        return {"boosts": self.boosts}

    def load_state_dict(self, state: dict) -> None:
        self.boosts = list(state.get("boosts", []))


class ProgressiveEpochsSampler(OrderSampler):
    """Algorithm 5: a global shuffle per epoch and a stop hook on the epoch-end accuracy.

    Set ``optim.epochs`` to the most epochs the run may take. After ``initial_epochs`` (e₀) the
    epoch-end figure is the best so far; each further epoch continues while it beats the best by at
    least ``epsilon`` and stops otherwise; ``best_step`` names the best epoch's checkpoint.

    Args:
        initial_epochs: e₀, epochs trained before the first comparison.
        epsilon: the least improvement that earns another epoch (paper: 0.01).
        metric: 'accuracy' (the trajectory sample's accuracy) or 'p_correct' (its mean p(correct)).
    """

    name = "progressive_epochs"
    checkpoint_epochs = True

    def __init__(self, subsets: Sequence[str], seed: int = 0, initial_epochs: int = 1, epsilon: float = 0.01,
                 metric: str = "accuracy", **options: Any):
        super().__init__(subsets, seed, **options)
        if initial_epochs < 1 or epsilon < 0 or metric not in ("accuracy", "p_correct"):
            raise ValueError(f"progressive_epochs needs initial_epochs ≥ 1, epsilon ≥ 0 and metric 'accuracy' "
                             f"or 'p_correct'; got {initial_epochs}, {epsilon}, {metric!r}")
        self.initial_epochs, self.epsilon, self.metric = int(initial_epochs), float(epsilon), metric
        self.curve: list[dict] = []
        self.best: dict | None = None
        self.stopped: int | None = None

    def order(self, epoch: int) -> list[int]:
        return _shuffle(len(self.subsets), self.seed, epoch)

    def value(self, feedback: Feedback) -> float:
        if self.metric == "accuracy":
            return feedback.overall
        return float(np.mean(list(feedback.samples.values()))) if feedback.samples else float("nan")

    def stop(self, epoch: int, feedback: Feedback) -> bool:
        v = self.value(feedback)
        self.curve.append({"epoch": epoch, "step": feedback.step, "value": v})
        if epoch + 1 < self.initial_epochs:
            return False
        if self.best is None or v >= self.best["value"] + self.epsilon:
            self.best = {"epoch": epoch, "step": feedback.step, "value": v}
            return False
        self.stopped = epoch
        return True

    def best_step(self) -> int | None:
        return None if self.best is None else int(self.best["step"])

    def state_dict(self) -> dict:
        return {"curve": self.curve, "best": self.best, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.curve = list(state.get("curve", []))
        self.best = state.get("best")
        self.stopped = state.get("stopped")
