"""The trajectory schedule: the default (``every_steps: null``) gives every subset enough evaluations
for cause IV, an explicit interval keeps the old behaviour exactly, and the schedule is a pure
function of the epoch's order (so a resumed run evaluates at the same steps).

The loop's own helpers (``_boundary_steps``, ``_scheduled_steps``, ``_eval_reasons``) are driven
step by step here the way ``train_loop_per_worker`` drives them, without Ray or a model; one real
tiny run (slow) checks the loop end to end.
"""

import math

import pandas as pd
import pytest

from ilp_ray.train import loop as L
from ilp_ray.train.config import SftTrainConfig
from ilp_ray.train.order import make_sampler, scheduled_steps, spread_steps, subset_segments
from tests.train.conftest import interference_rows, train_config, write_jsonl


class FakeTask:
    """What the loop's schedule helpers read of an SftTask: the sampler, subsets and orders."""

    def __init__(self, subsets, sampler="sequential", seed=0):
        self._subsets = list(subsets)
        self.sampler = make_sampler(sampler, self._subsets, seed, None, {})

    def subsets(self, epoch):
        return self._subsets

    def order(self, epoch):
        return self.sampler.order(epoch)


def cfg_of(**over):
    return SftTrainConfig.model_validate(train_config("data.jsonl", "runs", "x", **over))


def evaluated(cfg, task, G, epochs=1, old=False):
    """(global step, reasons) of every evaluation the loop makes (the final one aside)."""
    out, step = [], 0
    for epoch in range(epochs):
        order = task.order(epoch)
        bounds = L._boundary_steps(order, task, epoch, G) if task.sampler.marks_subset_boundaries else set()
        sched = L._scheduled_steps(cfg, "sft", order, task, epoch, G)
        n_steps = math.ceil(len(order) / G)
        for pos in range(1, n_steps + 1):
            step += 1
            r = (_old_reasons(cfg, step, pos, n_steps, bounds) if old
                 else L._eval_reasons(cfg, "sft", step, pos, n_steps, bounds, sched))
            if r:
                out.append((step, "+".join(r)))
    return out


def _old_reasons(cfg, step, pos, n_steps, bounds):
    """``_eval_reasons`` as it was before the automatic schedule (interval, boundaries, epoch ends)."""
    every = cfg.trajectory.every_steps
    return [r for r, hit in (("interval", bool(every) and step % every == 0),
                             ("subset_boundary", pos in bounds), ("epoch_end", pos == n_steps)) if hit]


def synthetic_trajectory(task, G, evals):
    """Trajectory rows at the evaluated steps, each sample with the trained_step the job writes."""
    order = task.order(0)
    trained = {i: p // G + 1 for p, i in enumerate(order)}
    subsets = task.subsets(0)
    return pd.DataFrame([{"step": s, "epoch": 0, "reason": r, "id": f"x{i}", "subset": subsets[i],
                          "p_correct": 0.5, "correct": True, "loss": 1.0, "trained_step": trained[i]}
                         for s, r in evals for i in order])


def test_spread_steps_are_distinct_even_and_end_at_the_last():
    assert spread_steps(1, 16, 4) == [4, 8, 12, 16]
    assert spread_steps(17, 32, 4) == [20, 24, 28, 32]
    assert spread_steps(1, 5, 4) == [2, 3, 4, 5]
    assert spread_steps(3, 4, 4) == [3, 4]  # a stretch shorter than asked: every step
    assert spread_steps(7, 7, 4) == [7]
    assert spread_steps(1, 10, 1) == [10]


def test_segments_follow_the_subsets_and_a_straddling_batch_belongs_to_both():
    subsets = ["A"] * 6 + ["B"] * 6
    order = list(range(12))
    assert subset_segments(order, subsets, 4, by_subset=True) == [("A", 1, 2), ("B", 2, 3)]
    assert subset_segments(order, subsets, 4, by_subset=False) == [("*", 1, 3)]
    assert subset_segments([], subsets, 4, by_subset=True) == []


def test_default_gives_a_one_epoch_two_subset_run_enough_evaluations_for_iv():
    """The issue's example: one epoch, A then B. Boundaries and the epoch end alone give 2
    evaluations; the default gives 4 per subset, the boundary and the end among them."""
    from ilp_ray.diagnosis.trajectories import schedule_coverage

    task = FakeTask(["A"] * 16 + ["B"] * 16)
    G = 1
    cfg = cfg_of()
    assert cfg.trajectory.every_steps is None and cfg.trajectory.min_evals_per_subset == 4
    got = evaluated(cfg, task, G)
    assert got == [(4, "schedule"), (8, "schedule"), (12, "schedule"), (16, "subset_boundary"),
                   (20, "schedule"), (24, "schedule"), (28, "schedule"), (32, "epoch_end")]
    cov = schedule_coverage(synthetic_trajectory(task, G, got), held_evals=2)
    a = cov["per_subset"]["A"]
    assert a["iv_possible"] and a["evaluations"] == 4 and a["evals_after_min"] == 5  # 16, then B's 4
    assert not cov["per_subset"]["B"]["iv_possible"]  # the last subset: the recent data

    # The old default (boundaries and epoch ends only) is min_evals_per_subset: 1: IV cannot fire in A.
    old = evaluated(cfg_of(**{"trajectory.min_evals_per_subset": 1}), task, G)
    assert old == [(16, "subset_boundary"), (32, "epoch_end")]
    cov = schedule_coverage(synthetic_trajectory(task, G, old), held_evals=2)
    assert not cov["per_subset"]["A"]["iv_possible"] and cov["per_subset"]["A"]["evals_after_max"] == 2


@pytest.mark.parametrize("sizes,G", [((12, 30, 7), 2), ((5, 5, 5, 5), 1), ((40, 9), 3), ((16, 17), 4)])
def test_every_non_last_subset_can_show_iv_under_the_default(sizes, G):
    """Whatever the subset sizes, each subset gets min(4, its steps) evaluations in its own steps,
    and every sample of an earlier subset has >= held_evals + 1 = 3 evaluations from its step on."""
    from ilp_ray.diagnosis.trajectories import evals_after_training

    names = [f"s{k}" for k in range(len(sizes))]
    task = FakeTask([n for n, k in zip(names, sizes, strict=True) for _ in range(k)])
    got = evaluated(cfg_of(), task, G)
    steps = [s for s, _ in got]
    for name, a, b in subset_segments(task.order(0), task.subsets(0), G, by_subset=True):
        assert sum(a <= s <= b for s in steps) >= min(4, b - a + 1), name
        assert b in steps  # its boundary (or the epoch end) is evaluated as before
    ea = evals_after_training(synthetic_trajectory(task, G, got))
    assert (ea.loc[ea["subset"] != names[-1], "n_after"] >= 3).all()


def test_a_shuffled_run_gets_the_minimum_per_epoch():
    task = FakeTask(["A"] * 10 + ["B"] * 10, sampler="shuffled")
    got = evaluated(cfg_of(), task, G=2, epochs=2)  # 10 steps per epoch
    assert [s for s, _ in got] == [3, 5, 8, 10, 13, 15, 18, 20]
    assert [r for s, r in got if s in (10, 20)] == ["epoch_end", "epoch_end"]


@pytest.mark.parametrize("every", [1, 3, 7, 50])
@pytest.mark.parametrize("sampler", ["sequential", "shuffled"])
def test_an_explicit_interval_keeps_the_old_behaviour_exactly(every, sampler):
    task = FakeTask(["A"] * 13 + ["B"] * 9 + ["C"] * 4, sampler=sampler)
    cfg = cfg_of(**{"trajectory.every_steps": every})
    for G in (1, 3):
        assert evaluated(cfg, task, G, epochs=3) == evaluated(cfg, task, G, epochs=3, old=True)
        assert not L._scheduled_steps(cfg, "sft", task.order(0), task, 0, G)


def test_the_schedule_is_a_function_of_the_order_so_a_resume_evaluates_the_same_steps():
    """A resumed run rebuilds the schedule from the order saved in its checkpoint (after any
    sampler revision): the same steps as the uninterrupted run's, before and after a revision."""
    subsets = ["A"] * 12 + ["B"] * 12
    task = FakeTask(subsets)
    cfg = cfg_of()
    order = task.order(0)
    first = L._scheduled_steps(cfg, "sft", order, task, 0, 2)
    assert first == L._scheduled_steps(cfg, "sft", list(order), FakeTask(subsets), 0, 2)
    # A sampler revises the rest of the epoch at step 4 (position 8): A's tail is re-sampled after B.
    pos, G = 4, 2
    revised = order[:pos * G] + order[16:] + order[pos * G:12]
    live = L._scheduled_steps(cfg, "sft", revised, task, 0, G)       # recomputed by the loop on revise
    resumed = L._scheduled_steps(cfg, "sft", list(revised), FakeTask(subsets), 0, G)  # from the checkpoint
    assert live == resumed == scheduled_steps(revised, subsets, G, 4, True)


def test_the_recorded_schedule_names_every_planned_evaluation():
    from ilp_ray.train.trajectory import schedule_entry

    task = FakeTask(["A"] * 16 + ["B"] * 16)
    cfg = cfg_of()
    order, G = task.order(0), 2
    bounds = L._boundary_steps(order, task, 0, G)
    sched = L._scheduled_steps(cfg, "sft", order, task, 0, G)
    e = schedule_entry(order, task.subsets(0), G, 16, 16, bounds, sched, None, True)
    assert e["steps"] == [s + 16 for s, _ in evaluated(cfg, task, G)]
    assert e["first_step"] == 17 and e["last_step"] == 32
    assert e["segments"] == [{"subset": "A", "first_step": 17, "last_step": 24, "evals": 4},
                             {"subset": "B", "first_step": 25, "last_step": 32, "evals": 4}]
    # Cut short by max_steps: what runs, plus the last step (the loop's final evaluation).
    e = schedule_entry(order, task.subsets(0), G, 0, 16, bounds, sched, None, True, max_steps=7)
    assert e["steps"] == [2, 4, 6, 7]


@pytest.mark.slow
def test_a_default_sequential_run_records_and_follows_its_schedule(tmp_path, ray_session):
    """One epoch, A then B, 8 steps each: 4 evaluations per subset, recorded in the trajectory's
    Parquet metadata and ilp_done.json, and the diagnosis sees that IV can fire in A."""
    import json

    import pyarrow.parquet as pq

    from ilp_ray.diagnosis.trajectories import load_trajectory, read_schedule, schedule_coverage
    from ilp_ray.train.run import run_training

    data = write_jsonl(tmp_path / "d.jsonl", interference_rows())
    cfg = SftTrainConfig.model_validate(train_config(
        data, tmp_path / "runs", "sched", **{"order.sampler": "sequential", "order.subset_order": ["A", "B"],
                                             "optim.epochs": 1, "optim.batch_size": 1,
                                             "engine.strategy": "ddp"}))
    result = run_training(cfg)
    t = pd.read_parquet(result.trajectory)
    got = t.groupby("step")["reason"].first().to_dict()
    assert got == {2: "schedule", 4: "schedule", 6: "schedule", 8: "subset_boundary",
                   10: "schedule", 12: "schedule", 14: "schedule", 16: "epoch_end"}
    sched = read_schedule(result.trajectory)
    assert sched["mode"] == "auto" and sched["min_evals_per_subset"] == 4
    assert sched["epochs"]["0"]["steps"] == sorted(got)
    assert json.loads(pq.read_schema(result.trajectory).metadata[b"ilp.schedule"]) == sched
    assert json.loads((result.run_path / "ilp_done.json").read_text())["trajectory_schedule"] == sched
    cov = schedule_coverage(load_trajectory(result.trajectory), held_evals=2)
    assert cov["per_subset"]["A"]["iv_possible"] and cov["per_subset"]["A"]["evals_after_min"] == 5
    # What the 8 evaluations cost, as a share of the loop's wall time (issue 22's figure).
    m = result.metrics
    assert m["trajectory_seconds"] > 0 and 0 < m["trajectory_share"] < 1
