"""The mitigations' data orders (paper, appendices C-E), as ``OrderSampler``s of the one loop.

- ``conflict_bucket`` (Algorithm 3): another sampler's order in which the members of each conflict
  group go to different global batches, so no step ever trains on two of them at once; groups are
  re-evaluated at each trajectory evaluation from the live model's p(correct) (dynamic grouping).
- ``dynamic_resample`` (Algorithm 4): a global shuffle; after each evaluation, a subset whose
  accuracy fell by more than ``delta`` (relative) since the previous one gets extra draws of its
  samples in the next window of steps.
- ``progressive_epochs`` (Algorithm 5): another sampler's order, with a stop hook: after
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


def separate(order: Sequence[int], groups: Sequence[Sequence[int]], batch: int) -> list[int]:
    """``order`` with the fewest moves such that no global batch of ``batch`` entries holds two
    distinct members of one group.

    Batches are walked in order; a second member of a group in a batch swaps places with the
    nearest entry after the batch (else before it) that belongs to no group present in this batch
    and whose own batch holds no other member of the moved entry's group. So an order keeps its
    shape (a sequential order stays sequential but for the swapped entries). ``order``'s length
    must be a multiple of ``batch`` (see ``ConflictBucketSampler``).

    Raises:
        ValueError: no such swap exists (a group larger than the number of batches).
    """
    out = list(order)
    member_of = {i: g for g, grp in enumerate(groups) for i in grp}
    n_batches = len(out) // batch

    def groups_in(b: int, skip: int = -1) -> dict[int, int]:
        have: dict[int, int] = {}
        for q in range(b * batch, (b + 1) * batch):
            g = member_of.get(out[q])
            if g is not None and q != skip:
                have.setdefault(g, out[q])
        return have

    for b in range(n_batches):
        held: dict[int, int] = {}  # group → the member this batch keeps
        for pos in range(b * batch, (b + 1) * batch):
            e = out[pos]
            g = member_of.get(e)
            if g is None or held.get(g, e) == e:
                if g is not None:
                    held[g] = e
                continue
            here = groups_in(b, skip=pos)
            later = range((b + 1) * batch, len(out))
            earlier = range(b * batch - 1, -1, -1)
            for q in (*later, *earlier):
                cand, qb = out[q], q // batch
                cg = member_of.get(cand)
                if cg is not None and cg in here:
                    continue
                there = groups_in(qb, skip=q)
                if g in there and there[g] != e:
                    continue
                out[pos], out[q] = cand, e
                if cg is not None:
                    held[cg] = cand
                break
            else:
                raise ValueError(f"cannot keep the members of a conflict group of {len(groups[g])} apart in "
                                 f"{n_batches} batches of {batch}: lower the batch size or split the group")
    return out


class ConflictBucketSampler(OrderSampler):
    """Algorithm 3: every conflict group spread over distinct global batches, every sample kept.

    The order is another sampler's (``inner``, default 'shuffled'; a mitigation passes the SFT
    run's own, so buckets are the only change), padded to full batches with ungrouped samples (so
    the loop never wraps the epoch's start into its last batch), then ``separate``d.

    Args:
        groups: the conflict groups, as lists of example ids (``group_members`` of
            ``conflict_groups.parquet``); an id not in the data is an error.
        release_p: dynamic grouping: at each evaluation a group whose evaluated members all have
            p(correct) ≥ this is released (its members may share a batch) until one falls below it
            again; a group with an unevaluated member stays active. None: static groups.
        inner, inner_options, subset_order: the sampler whose order is bucketed, and its settings.
    """

    name = "conflict_bucket"

    def __init__(self, subsets: Sequence[str], seed: int = 0, groups: Sequence[Sequence[str]] = (),
                 release_p: float | None = 0.5, inner: str = "shuffled", inner_options: dict | None = None,
                 subset_order: Sequence[str] | None = None, **options: Any):
        from ilp_ray.train.order import make_sampler

        super().__init__(subsets, seed, **options)
        index = {i: n for n, i in enumerate(self.ids)}
        unknown = sorted({str(m) for g in groups for m in g} - set(index))
        if unknown:
            raise ValueError(f"conflict groups name ids not in the data: {unknown[:5]}"
                             + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        if inner == self.name:
            raise ValueError("conflict_bucket cannot wrap itself")
        self.inner = make_sampler(inner, self.subsets, seed, subset_order, dict(inner_options or {}),
                                  ids=self.ids, batch=self.batch)
        self.marks_subset_boundaries = self.inner.marks_subset_boundaries
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
        base = self.inner.order(epoch)
        pad = -len(base) % self.batch
        if pad:  # ungrouped samples of the last entry's subset where there are any
            tail = self.subsets[base[-1]]
            pool = [i for i in self.filler if self.subsets[i] == tail] or self.filler
            rng = np.random.default_rng([self.seed, epoch, 1])
            base = base + [pool[int(k)] for k in rng.integers(len(pool), size=pad)]
        return separate(base, self.active(), self.batch)

    def revise(self, epoch: int, position: int, order: list[int], feedback: Feedback) -> list[int] | None:
        new_inner = self.inner.revise(epoch, position, order, feedback)
        changed = False
        if self.release_p is not None and feedback.samples:
            p = feedback.samples
            released = {k for k, g in enumerate(self.groups)
                        if all(p.get(self.ids[i]) is not None and p[self.ids[i]] >= self.release_p for i in g)}
            changed, self.released = released != self.released, released
        if new_inner is None and not changed:
            return None
        rest = list(new_inner) if new_inner is not None else order[position * self.batch:]
        if not rest:
            return None
        pad = -len(rest) % self.batch
        rest = rest + [self.filler[k % len(self.filler)] for k in range(pad)]
        return separate(rest, self.active(), self.batch)

    def state_dict(self) -> dict:
        return {"released": sorted(self.released), "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state.get("inner", {}))
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
    """Algorithm 5: another sampler's order (``inner``) and a stop hook on the epoch-end figure.

    Set ``optim.epochs`` to the most epochs the run may take. After ``initial_epochs`` (e₀) the
    epoch-end figure is the best so far; each further epoch continues while it beats the best by at
    least ``epsilon`` and stops otherwise; ``best_step`` names the best epoch's checkpoint.

    Args:
        initial_epochs: e₀, epochs trained before the first comparison.
        epsilon: the least improvement that earns another epoch (paper: 0.01).
        metric: 'accuracy' (the trajectory sample's accuracy) or 'p_correct' (its mean p(correct)).
        inner: the sampler whose order is trained ('shuffled' by default; the SFT run's own, so
            that only the number of epochs changes); ``inner_options`` its options and
            ``subset_order`` its subset order.
    """

    name = "progressive_epochs"
    checkpoint_epochs = True

    def __init__(self, subsets: Sequence[str], seed: int = 0, initial_epochs: int = 1, epsilon: float = 0.01,
                 metric: str = "accuracy", inner: str = "shuffled", inner_options: dict | None = None,
                 subset_order: Sequence[str] | None = None, **options: Any):
        from ilp_ray.train.order import make_sampler

        super().__init__(subsets, seed, **options)
        if initial_epochs < 1 or epsilon < 0 or metric not in ("accuracy", "p_correct"):
            raise ValueError(f"progressive_epochs needs initial_epochs ≥ 1, epsilon ≥ 0 and metric 'accuracy' "
                             f"or 'p_correct'; got {initial_epochs}, {epsilon}, {metric!r}")
        if inner == self.name:
            raise ValueError("progressive_epochs cannot wrap itself")
        self.inner = make_sampler(inner, self.subsets, seed, subset_order, dict(inner_options or {}),
                                  ids=self.ids, batch=self.batch)
        self.marks_subset_boundaries = self.inner.marks_subset_boundaries
        self.initial_epochs, self.epsilon, self.metric = int(initial_epochs), float(epsilon), metric
        self.curve: list[dict] = []
        self.best: dict | None = None
        self.stopped: int | None = None

    def order(self, epoch: int) -> list[int]:
        return self.inner.order(epoch)

    def revise(self, epoch: int, position: int, order: list[int], feedback: Feedback) -> list[int] | None:
        return self.inner.revise(epoch, position, order, feedback)

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
        return {"curve": self.curve, "best": self.best, "stopped": self.stopped, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state.get("inner", {}))
        self.curve = list(state.get("curve", []))
        self.best = state.get("best")
        self.stopped = state.get("stopped")
