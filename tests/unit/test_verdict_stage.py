"""The audit's verdict stage computes in chunks (issue 22): the written table and the summary are
the ones the driver-side computation of every item at once gives, for any chunk size."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ilp_ray import storage as S
from ilp_ray.audit import verdict_stage
from ilp_ray.audit.score import split_priors
from ilp_ray.config import AuditConfig
from ilp_ray.detect import compute_verdicts, summarize
from ilp_ray.scoring.prior import prior_items

N = 23


def _items(n=N, seed=0):
    rng = np.random.default_rng(seed)
    opts = [[f"opt{(i * 7 + j) % 11}" for j in range(3 + i % 2)] for i in range(n)]
    return pa.table({
        "id": [f"s{i:03d}" for i in range(n)],
        "question": [f"q{i}?" for i in range(n)],
        "options": opts,
        "answer": pa.array([int(rng.integers(len(o))) for o in opts], pa.int64()),
        # built items (distractor ids) are calibrated by the prior; every fifth is ready-made
        "distractor_ids": pa.array([[] if i % 5 == 0 else [f"s{(i + 1) % n:03d}"] for i in range(n)],
                                   pa.list_(pa.string())),
        "subset": [f"sub{i % 3}" for i in range(n)],
        "position": pa.array(range(n), pa.int64()),
        "fallback": pa.array([i % 2 for i in range(n)], pa.int64()),
    })


def _scores(items, seed):
    """Option scores of the items and of their prior pseudo-items, rows shuffled (any order)."""
    rng = np.random.default_rng(seed)
    rows = [(i, list(o)) for i, o in zip(items.column("id").to_pylist(), items.column("options").to_pylist())]
    rows += [(p.id, list(p.options)) for p in prior_items(items.column("options").to_pylist())]
    rng.shuffle(rows)
    lp = [list(rng.normal(-3, 2, len(o))) for _, o in rows]
    # some items certain (an unlearned item under every seed) to exercise ranks and ties
    for k in range(0, len(lp), 4):
        lp[k] = [0.0] + [-60.0] * (len(lp[k]) - 1)
    return pa.table({"id": [i for i, _ in rows], "logprob_sum": lp,
                     "n_tokens": [[1 + len(x) % 3 for x in o] for _, o in rows],
                     "n_chars": [[len(x) for x in o] for _, o in rows],
                     "truncated": [k % 7 == 0 for k in range(len(rows))]})


def _reference(items, scores, cfg, folder):
    """Today's driver-side route (before the chunks): every item at once, merged, written."""
    real, priors = split_priors(items, scores)
    items_df = items.select(["id", "subset", "position", "answer", "distractor_ids"]).to_pandas()
    v, stab = compute_verdicts(items_df, real["sft"].to_pandas(), real["base"].to_pandas(), cfg.scoring,
                               cfg.detect, priors)
    v = v.merge(items.select(["id", "question", "options", "distractor_ids", "fallback"]).to_pandas(),
                on="id", how="left")
    S.write_verdicts(v, folder / "verdicts", cfg.ray.shard_size)
    s = summarize(v, cfg.detect)
    s["seed_stability"] = stab
    return s


@pytest.mark.parametrize("chunk", [1, 5, 22, 23, 10_000])
def test_chunks_give_the_driver_side_table(tmp_path, chunk):
    items = _items()
    scores = {"sft": _scores(items, 1), "base": _scores(items, 2)}
    cfg = AuditConfig(data="x.jsonl", sft_model="m", run_dir=str(tmp_path / "run"),
                      detect={"n": 4, "stability_seeds": 3, "top_k": 5}, ray={"shard_size": 7})
    want = _reference(items, scores, cfg, tmp_path / "ref")
    scalar, got = verdict_stage(items, scores, True, cfg, tmp_path / "new", chunk_rows=chunk)
    ref, new = S.load_verdicts(tmp_path / "ref"), S.load_verdicts(tmp_path / "new")
    assert list(new.columns) == list(ref.columns)
    pd.testing.assert_frame_equal(new, ref)
    assert got == want
    # the frame handed back has every scalar column, none of the lists
    assert "probs" not in scalar and "options" not in scalar
    pd.testing.assert_frame_equal(scalar, ref[list(scalar.columns)])
    # the figures the test must be able to fail on are there: ranks across chunks, flags, calibration
    assert ref["unlearned"].sum() > 3 and ref["in_top_k"].sum() == 5 and ref["calibrated"].sum() == 18
    assert 0 < got["seed_stability"] <= 1


def test_no_base_model_and_no_priors(tmp_path):
    items = _items(9)
    scores = {"sft": _scores(items, 3).filter(pa.compute.invert(pa.compute.starts_with(
        _scores(items, 3).column("id"), "\x00")))}
    cfg = AuditConfig(data="x.jsonl", sft_model="m", run_dir=str(tmp_path), scoring={"calibration": "none"},
                      detect={"fairness": {"enabled": False}})
    _, s = verdict_stage(items, scores, False, cfg, tmp_path, chunk_rows=4)
    v = S.load_verdicts(tmp_path)
    assert len(v) == 9 and "base_probs" not in v and "prior_probs" not in v
    assert s["n"] == 9 and s["unlearned"] == int(v["unlearned"].sum())


def test_missing_or_twice_scored_items_are_refused(tmp_path):
    items = _items(6)
    sft = _scores(items, 4)
    cfg = AuditConfig(data="x.jsonl", sft_model="m", run_dir=str(tmp_path))
    gone = sft.filter(pa.compute.not_equal(sft.column("id"), "s004"))
    with pytest.raises(ValueError, match=r"fine-tuned model scores are missing items, e\.g\. \['s004'\]"):
        verdict_stage(items, {"sft": gone}, True, cfg, tmp_path)
    with pytest.raises(ValueError, match="base model scores hold an item id more than once"):
        verdict_stage(items, {"sft": sft, "base": pa.concat_tables([sft, sft.slice(0, 1)])}, True, cfg, tmp_path)
    assert not (tmp_path / "verdicts").exists()  # nothing written
