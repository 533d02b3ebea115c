"""The mitigations' samplers on constructed inputs: buckets, re-sampling, the stop hook, resume."""

from __future__ import annotations

import math

import pytest

from ilp_ray.train.order import Feedback, make_sampler


def _fb(step, acc, history=(), overall=float("nan"), samples=None, epoch=0, end=False):
    return Feedback(step=step, epoch=epoch, acc=acc, p_correct=acc, samples=samples or {},
                    history=tuple(history), overall=overall, epoch_end=end)


def _batches(order, batch):
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def test_conflict_bucket_never_puts_two_members_of_a_group_in_one_batch():
    n, batch = 103, 8
    ids = [f"s{i}" for i in range(n)]
    groups = [[f"s{i}" for i in range(g, g + 5)] for g in range(0, 60, 5)]  # 12 groups of 5
    sm = make_sampler("conflict_bucket", ["a"] * n, 3, None, {"groups": groups}, ids=ids, batch=batch)
    for epoch in range(4):
        order = sm.order(epoch)
        assert len(order) == math.ceil(n / batch) * batch  # full batches: no wrap into the epoch's start
        assert set(order) == set(range(n))                # every sample kept
        pad = len(order) - n
        assert sum(order.count(i) - 1 for i in range(60)) == 0   # only ungrouped samples repeat
        assert sum(order.count(i) - 1 for i in range(60, n)) == pad
        for b in _batches(order, batch):
            for g in range(12):
                assert len({i for i in b if g * 5 <= i < g * 5 + 5}) <= 1
    assert sm.order(1) == make_sampler("conflict_bucket", ["a"] * n, 3, None, {"groups": groups},
                                       ids=ids, batch=batch).order(1)


def test_conflict_bucket_releases_a_learned_group_and_keeps_the_rest_apart():
    n, batch = 40, 4
    ids = [f"s{i}" for i in range(n)]
    groups = [["s0", "s1", "s2"], ["s3", "s4"]]
    sm = make_sampler("conflict_bucket", ["a"] * n, 0, None, {"groups": groups}, ids=ids, batch=batch)
    order = sm.order(0)
    # Group 0 learned (all p >= 0.5), group 1 not: only group 1 stays constrained.
    fb = _fb(8, {"a": 1.0}, samples={"s0": 0.9, "s1": 0.8, "s2": 0.7, "s3": 0.9, "s4": 0.2})
    rest = sm.revise(0, 2, order, fb)
    assert rest is not None and sorted(rest) == sorted(order[8:])
    assert sm.released == {0}
    assert sm.revise(0, 3, order[:8] + rest, fb) is None  # nothing changed: order kept
    for b in _batches(rest, batch):
        assert len({i for i in b if i in (3, 4)}) <= 1
    # An unevaluated member keeps its group active; state survives a resume.
    sm.revise(0, 4, order, _fb(16, {"a": 1.0}, samples={"s0": 0.9, "s1": 0.9}))
    assert sm.released == set()
    sm.released = {1}
    other = make_sampler("conflict_bucket", ["a"] * n, 0, None, {"groups": groups}, ids=ids, batch=batch)
    other.load_state_dict(sm.state_dict())
    assert other.released == {1} and other.order(2) == sm.order(2)


def test_conflict_bucket_bad_groups():
    with pytest.raises(ValueError, match="not in the data"):
        make_sampler("conflict_bucket", ["a"] * 4, 0, None, {"groups": [["x", "y"]]}, ids=list("abcd"), batch=2)
    with pytest.raises(ValueError, match="lower the batch size"):
        make_sampler("conflict_bucket", ["a"] * 4, 0, None, {"groups": [list("abc")]}, ids=list("abcd"), batch=2)


def test_dynamic_resample_upweights_exactly_the_subset_that_dropped():
    subsets = ["A"] * 40 + ["B"] * 40 + ["C"] * 20
    sm = make_sampler("dynamic_resample", subsets, 1, None, {"window": 5, "delta": 0.05, "upweight": 2.0},
                      batch=4)
    order = sm.order(0)
    assert sorted(order) == list(range(100))
    hist = [(5, {"A": 0.8, "B": 0.6, "C": 0.5})]
    # A falls 0.8 -> 0.7 (12.5% relative: triggers), B 0.6 -> 0.58 (3.3%: no), C rises.
    fb = _fb(10, {"A": 0.7, "B": 0.58, "C": 0.9}, history=hist)
    assert sm.dropped(fb) == ["A"]
    rest = sm.revise(0, 2, order, fb)
    head, tail = rest[:len(rest) - len(order[8 + 20:])], rest[-len(order[8 + 20:]):]
    assert tail == order[28:]                       # beyond the next window nothing changes
    extra = sorted(head)
    for i in order[8:28]:
        extra.remove(i)                              # the window itself is all still there
    # (upweight - 1) × A's share (0.4) × window (5) × batch (4) = 8 extra draws, all from A.
    assert len(extra) == 8 and all(subsets[i] == "A" for i in extra)
    assert sm.state_dict()["boosts"] == [{"step": 10, "epoch": 0, "subsets": {"A": 8}}]
    # No previous evaluation, or no drop beyond delta: the order is kept.
    assert sm.revise(0, 2, order, _fb(5, {"A": 0.1})) is None
    assert sm.revise(0, 2, order, _fb(10, {"A": 0.77, "B": 0.6}, history=hist)) is None
    # Deterministic: a resumed run re-deriving the revision gets the same list.
    again = make_sampler("dynamic_resample", subsets, 1, None, {"window": 5}, batch=4)
    assert again.revise(0, 2, order, fb) == rest


def test_progressive_epochs_stops_at_the_first_epoch_without_improvement():
    sm = make_sampler("progressive_epochs", ["a"] * 10, 0, None, {"initial_epochs": 2, "epsilon": 0.01})
    curve = [0.30, 0.50, 0.60, 0.605, 0.9]          # epoch 4 never runs: 0.605 < 0.60 + 0.01
    stops = []
    for e, v in enumerate(curve):
        stops.append(sm.stop(e, _fb(10 * (e + 1), {}, overall=v, epoch=e, end=True)))
        if stops[-1]:
            break
    assert stops == [False, False, False, True]     # e0 = 2 epochs, then 3rd improves, 4th does not
    assert sm.best_step() == 30 and sm.best["epoch"] == 2
    resumed = make_sampler("progressive_epochs", ["a"] * 10, 0, None, {"initial_epochs": 2})
    resumed.load_state_dict(sm.state_dict())
    assert resumed.best_step() == 30 and resumed.stopped == 3
    # A falling curve stops right after e0 and keeps e0's checkpoint.
    sm2 = make_sampler("progressive_epochs", ["a"] * 10, 0, None, {"initial_epochs": 1})
    assert not sm2.stop(0, _fb(5, {}, overall=0.5, end=True))
    assert sm2.stop(1, _fb(10, {}, overall=0.4, epoch=1, end=True)) and sm2.best_step() == 5


def test_sampler_ids_must_match_the_data():
    with pytest.raises(ValueError, match="ids for"):
        make_sampler("shuffled", ["a"] * 3, 0, None, {}, ids=["x"])
    with pytest.raises(ValueError, match="initial_epochs"):
        make_sampler("progressive_epochs", ["a"] * 3, 0, None, {"initial_epochs": 0})


@pytest.mark.slow
def test_conflict_bucket_over_every_batch_of_a_real_run(tmp_path, ray_session):
    """A Ray Train run with 2 workers (global batch 8): over every logged global batch of 3 epochs,
    no two members of one group, and every sample trained each epoch. The groups pair each entity's
    spring and autumn question (the interference data's contradiction, III-like)."""
    from ilp_ray.train.config import SftTrainConfig
    from ilp_ray.train.run import run_training
    from ilp_ray.train.state import read_rows
    from tests.train.conftest import interference_rows, train_config, write_jsonl

    rows = interference_rows(repeats=2)
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    groups = [[f"A{i}-0", f"B{i}-0", f"A{i}-1"] for i in range(8)]
    cfg = SftTrainConfig.model_validate(train_config(
        data, tmp_path / "runs", "bucket",
        **{"order.sampler": "conflict_bucket", "order.options": {"groups": groups, "release_p": None},
           "optim.epochs": 3, "optim.batch_size": 4, "scaling.num_workers": 2, "trajectory.enabled": False}))
    result = run_training(cfg)
    batches = read_rows(result.run_path / "ilp_logs" / "batches")
    assert len(batches) == result.metrics["step"] == 3 * 4  # 32 samples, global batch 8: full batches
    for ids in batches["ids"]:
        assert len(ids) == 8
        for g in groups:
            assert len(set(ids) & set(g)) <= 1, (list(ids), g)
    for epoch in range(3):
        seen = {i for ids in batches[batches.epoch == epoch]["ids"] for i in ids}
        assert seen == {r["id"] for r in rows}
