"""The trajectory evaluator scores a sample repeated verbatim once, and gives every copy its figures."""

import numpy as np
import pytest

from ilp_ray.records import McItem, SftRecord


def test_repeated_samples_scored_once_with_the_same_figures_as_apart(tiny_checkpoints, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ilp_ray.scoring import hf
    from ilp_ray.train.sft_data import encode_sft, per_sample_loss
    from ilp_ray.train.trajectory import TrajectoryEvaluator

    path = tiny_checkpoints["base"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    opts = ("Paris", "Rome", "Madrid")
    rows = [("a1", "What is the capital of France?", 0), ("a2", "What is the capital of France?", 0),
            ("b", "What is the capital of Italy?", 1), ("a3", "What is the capital of France?", 0),
            ("c", "What is the capital of France?", 2)]  # same question, another answer: not a copy
    records = [SftRecord(id=i, prompt=q, response=opts[a]) for i, q, a in rows]
    items = [McItem(id=i, question=q, options=opts, answer=a) for i, q, a in rows]
    examples = {e.id: e for e in encode_sft(records, tok, "plain", 64)}
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    scored: list[int] = []
    real_score = hf.TransformersEngine.score

    def counting(self, its):
        scored.append(len(its))
        return real_score(self, its)

    monkeypatch.setattr(hf.TransformersEngine, "score", counting)
    ev = TrajectoryEvaluator(items, examples, tok, "plain", batch_size=4, max_length=64, pad_id=pad)
    got = ev.evaluate(model, step=3, epoch=0, reason="interval")
    assert scored == [3]  # a1, b, c: a2 and a3 are copies of a1
    assert [r["id"] for r in got.rows] == [i for i, _, _ in rows] and model.training

    # Each item on its own: the same p(correct) and loss as its row.
    monkeypatch.setattr(hf.TransformersEngine, "score", real_score)
    engine = hf.TransformersEngine((model, tok), fmt="plain", batch_size=1, tag="check")
    for r, it in zip(got.rows, items, strict=True):
        lp = np.array(engine.score([it])[0].logprob_sum)
        p = np.exp(lp - lp.max())
        assert r["p_correct"] == pytest.approx(p[it.answer] / p.sum(), abs=1e-5)
        assert r["loss"] == pytest.approx(per_sample_loss(model.eval(), [examples[it.id]], pad)[0], abs=1e-5)
    assert got.rows[0]["p_correct"] == got.rows[1]["p_correct"] == got.rows[3]["p_correct"]
    assert got.rows[4]["p_correct"] != got.rows[0]["p_correct"]


def test_calibrated_trajectory_matches_the_audits_prior_subtraction(tiny_checkpoints):
    """calibrate=True: the items MC conversion built (with distractor ids) get each option's
    question-free score subtracted, as the audit's calibration 'auto' does; ready-made ones do not."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ilp_ray.scoring import hf
    from ilp_ray.train.sft_data import encode_sft
    from ilp_ray.train.trajectory import TrajectoryEvaluator

    path = tiny_checkpoints["base"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    opts = ("Paris", "Rome", "Madrid")
    built = McItem(id="b", question="What is the capital of France?", options=opts, answer=0,
                   distractor_ids=("x", "y"))
    given = McItem(id="g", question="What is the capital of Italy?", options=opts, answer=1)
    records = [SftRecord(id=it.id, prompt=it.question, response=opts[it.answer]) for it in (built, given)]
    examples = {e.id: e for e in encode_sft(records, tok, "plain", 64)}
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = TrajectoryEvaluator([built, given], examples, tok, "plain", batch_size=4, max_length=64, pad_id=pad,
                               calibrate=True).evaluate(model, step=1, epoch=0, reason="interval").rows
    engine = hf.TransformersEngine((model, tok), fmt="plain", batch_size=1, tag="check")
    prior = np.array(engine.score([McItem(id="p", question="", options=opts, answer=0)])[0].logprob_sum)
    for r, it, subtract in zip(rows, (built, given), (True, False), strict=True):
        s = np.array(engine.score([it])[0].logprob_sum) - (prior if subtract else 0.0)
        p = np.exp(s - s.max())
        assert r["p_correct"] == pytest.approx(p[it.answer] / p.sum(), abs=1e-5)
