"""Data order: which example comes when, per epoch. A registry of samplers behind one ABC.

The training loop asks the sampler for an epoch's order at the start of the epoch and shows it
every trajectory evaluation (per-subset accuracy, per-sample p(correct)); a sampler may answer
with a new order for the rest of the epoch. That is the hook for the paper's mitigations (conflict
buckets, dynamic re-sampling of a subset whose accuracy dropped, Algorithm 4) without changes to
the loop. The loop stores the realised order of the current epoch and the sampler's
``state_dict`` in every checkpoint, so a resumed run continues with exactly the same data.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ilp_ray.registry import Registry


@dataclass(frozen=True)
class Feedback:
    """What the latest trajectory evaluation measured.

    ``acc`` / ``p_correct`` map subset → accuracy / mean p(correct) on the evaluated MC items;
    ``history`` is every earlier evaluation's ``(step, acc)``, oldest first; ``samples`` maps an
    example id to its p(correct) (only the evaluated sample). ``overall`` is the accuracy over
    every evaluated item and ``loss`` their mean SFT loss (the validation figures of a stop hook);
    ``epoch_end`` says the evaluation closes an epoch.
    """

    step: int
    epoch: int
    acc: dict[str, float]
    p_correct: dict[str, float]
    samples: dict[str, float] = field(default_factory=dict)
    history: tuple[tuple[int, dict[str, float]], ...] = ()
    overall: float = float("nan")
    loss: float = float("nan")
    epoch_end: bool = False


class OrderSampler(abc.ABC):
    """Decides the order of training examples.

    Subclasses set ``name`` and implement ``order``. Orders are lists of example indices; they may
    repeat or omit examples (re-sampling), and their length sets the epoch's number of steps.

    Args:
        subsets: the subset of every example, by index (``subsets[i]`` of example i).
        seed: the run's order seed.
        ids: the id of every example, by index (None: the indices as strings).
        batch: the global batch (examples per step over all ranks): the loop trains entries
            ``[s × batch, (s + 1) × batch)`` of the order at the epoch's step s.
        **options: sampler-specific settings (``order.options`` in the config).
    """

    name: ClassVar[str] = ""
    #: Evaluate trajectories at every subset boundary of the order (the sequential setting).
    marks_subset_boundaries: ClassVar[bool] = False
    #: Checkpoint at every epoch end, so ``best_step`` can name an earlier epoch's checkpoint.
    checkpoint_epochs: ClassVar[bool] = False

    def __init__(self, subsets: Sequence[str], seed: int = 0, *, ids: Sequence[str] | None = None,
                 batch: int = 1, **options: Any):
        self.subsets = list(subsets)
        self.seed = seed
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(self.subsets))]
        if len(self.ids) != len(self.subsets):
            raise ValueError(f"{len(self.ids)} ids for {len(self.subsets)} examples")
        self.batch = int(batch)
        if options:
            raise ValueError(f"sampler {self.name!r} takes no options, got {sorted(options)}")

    @abc.abstractmethod
    def order(self, epoch: int) -> list[int]:
        """The example indices of ``epoch`` (0-based), in training order.

        Must be a pure function of the constructor arguments, ``epoch`` and the sampler's state,
        so that every rank (and a resumed run) computes the same list.
        """

    def revise(self, epoch: int, position: int, order: list[int], feedback: Feedback) -> list[int] | None:
        """Called after each trajectory evaluation (on rank 0; the result is broadcast).

        Args:
            epoch: the current epoch.
            position: how many steps of this epoch have been trained (entries ``order[:position ×
                batch]``).
            order: the current epoch's order.
            feedback: the evaluation's figures.

        Returns:
            None to keep the order, or the new remainder of the epoch (replacing
            ``order[position × batch:]``).
        """
        return None

    def stop(self, epoch: int, feedback: Feedback) -> bool:
        """Called after each epoch-end evaluation (rank 0; broadcast): True ends training there.

        The stop hook of early-stopping mitigations (progressive epochs, Algorithm 5); the loop
        saves the final checkpoint as usual, and ``best_step`` may name an earlier one to keep.
        """
        return False

    def best_step(self) -> int | None:
        """The step whose checkpoint the run should return as its result; None: the last."""
        return None

    def state_dict(self) -> dict:
        """Anything ``revise`` accumulated, saved in checkpoints (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - optional hook, stateless by default
        """Restore what ``state_dict`` returned (on resume)."""


class ShuffledSampler(OrderSampler):
    """A global shuffle, seeded by ``(seed, epoch)``: a different but reproducible order per epoch."""

    name = "shuffled"

    def order(self, epoch: int) -> list[int]:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.subsets)).tolist()


class SequentialSampler(OrderSampler):
    """Subsets one after another (file order within a subset): the paper's left-side forgetting setting.

    Args:
        subset_order: the order of subsets; None: the order of their first appearance. A subset
            missing from it is an error, so no data is silently skipped.
    """

    name = "sequential"
    marks_subset_boundaries = True

    def __init__(self, subsets: Sequence[str], seed: int = 0, subset_order: Sequence[str] | None = None,
                 **options: Any):
        super().__init__(subsets, seed, **options)
        present = list(dict.fromkeys(self.subsets))
        self.subset_order = list(subset_order) if subset_order else present
        unknown = [s for s in self.subset_order if s not in present]
        missing = [s for s in present if s not in self.subset_order]
        if unknown or missing or len(set(self.subset_order)) != len(self.subset_order):
            raise ValueError(f"order.subset_order {self.subset_order} must list every subset of the data "
                             f"once; data subsets: {present}" + (f"; unknown: {unknown}" if unknown else ""))

    def order(self, epoch: int) -> list[int]:
        rank = {s: i for i, s in enumerate(self.subset_order)}
        return sorted(range(len(self.subsets)), key=lambda i: (rank[self.subsets[i]], i))


SAMPLERS: Registry = Registry("order sampler", OrderSampler)
SAMPLERS.register("shuffled", ShuffledSampler)
SAMPLERS.register("sequential", SequentialSampler)
# The mitigations' samplers (paper, appendices C-E), imported when first used.
for _name, _cls in (("conflict_bucket", "ConflictBucketSampler"), ("dynamic_resample", "DynamicResampleSampler"),
                    ("progressive_epochs", "ProgressiveEpochsSampler")):
    SAMPLERS.register(_name, f"ilp_ray.train.samplers:{_cls}")


def make_sampler(name: str, subsets: Sequence[str], seed: int, subset_order: Sequence[str] | None,
                 options: dict, ids: Sequence[str] | None = None, batch: int = 1) -> OrderSampler:
    """Build a registered sampler; ``subset_order`` goes to samplers that take it."""
    import inspect

    cls = SAMPLERS.get(name)
    if subset_order is not None and "subset_order" in inspect.signature(cls.__init__).parameters:
        options = {**options, "subset_order": subset_order}
    elif subset_order is not None:
        raise ValueError(f"order.subset_order is set, but sampler {name!r} does not use it")
    return cls(subsets, seed, ids=ids, batch=batch, **options)


def boundary_positions(order: Sequence[int], subsets: Sequence[str]) -> list[int]:
    """Positions p in ``order`` after which the subset changes (p = index of a subset's last example)."""
    return [p for p in range(len(order) - 1) if subsets[order[p]] != subsets[order[p + 1]]]


def subset_segments(order: Sequence[int], subsets: Sequence[str], batch: int,
                    by_subset: bool) -> list[tuple[str, int, int]]:
    """The stretches of an epoch's steps, as ``(subset, first step, last step)`` (1-based, inclusive).

    ``by_subset`` (a sampler that marks subset boundaries): one stretch per run of one subset in
    ``order``, from the step whose batch holds its first example to the one that holds its last
    (a batch that straddles a boundary belongs to both). Otherwise the whole epoch is one stretch,
    named ``"*"``. ``batch`` is the global batch size.
    """
    if not len(order):
        return []
    if not by_subset:
        return [("*", 1, -(-len(order) // batch))]
    out, start = [], 0
    for p in range(1, len(order) + 1):
        if p == len(order) or subsets[order[p]] != subsets[order[start]]:
            out.append((str(subsets[order[start]]), start // batch + 1, (p - 1) // batch + 1))
            start = p
    return out


def spread_steps(first: int, last: int, n: int) -> list[int]:
    """``min(n, last - first + 1)`` distinct steps spread evenly over ``[first, last]``, ``last`` included."""
    span = last - first + 1
    m = max(0, min(n, span))
    return [first - 1 + -(-j * span // m) for j in range(1, m + 1)]


def scheduled_steps(order: Sequence[int], subsets: Sequence[str], batch: int, min_evals: int,
                    by_subset: bool) -> set[int]:
    """The automatic trajectory schedule of one epoch: steps (1-based within the epoch) such that
    every stretch of ``subset_segments`` holds at least ``min_evals`` evaluations (all its steps
    when it is shorter), spread evenly and ending at the stretch's last step.

    A pure function of the epoch's order, so every rank and a resumed run (which restores the
    realised order) evaluate at the same steps.
    """
    out: set[int] = set()
    for _, a, b in subset_segments(order, subsets, batch, by_subset):
        out.update(spread_steps(a, b, min_evals))
    return out
