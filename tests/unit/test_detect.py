"""Verdicts from hand-made option scores."""

import math

import numpy as np
import pandas as pd
import pytest

from ilp_ray.config import DetectConfig, ScoringConfig
from ilp_ray.detect import compute_verdicts, summarize

L = math.log


@pytest.fixture
def tables():
    items = pd.DataFrame({
        "id": ["a", "b", "c", "d"], "subset": ["s1", "s1", "s2", "s2"], "position": [0, 1, 2, 3],
        "answer": [0, 1, 0, 2],
    })
    # a: p(correct)=0.9 (learned); b: 0.0..; c: two options, p=0.5; d: answer has ~0 probability
    sft = pd.DataFrame({
        "id": ["d", "c", "b", "a"],  # any order: rows are aligned by id
        "logprob_sum": [[0.0, L(1e-3), -50.0], [L(0.5), L(0.5)], [0.0, -40.0, 0.0], [L(0.9), L(0.05), L(0.05)]],
        "n_tokens": [[1, 1, 1], [1, 1], [1, 1, 1], [1, 1, 1]],
        "n_chars": [[10, 10, 1], [4, 4], [1, 100, 1], [3, 3, 3]],
        "truncated": [False, True, False, False],
    })
    base = sft.copy()
    base["logprob_sum"] = [[0.0, 0.0, 0.0], [L(0.5), L(0.5)], [0.0, 0.0, -40.0], [L(0.9), L(0.05), L(0.05)]]
    return items, sft, base


def test_verdict_figures(tables):
    items, sft, base = tables
    v, stab = compute_verdicts(items, sft, base, ScoringConfig(), DetectConfig(n=5, stability_seeds=3))
    assert v["id"].tolist() == ["a", "b", "c", "d"]
    np.testing.assert_allclose(v["pass_expected"], [0.9, 0.0, 0.5, 0.0], atol=1e-12)
    assert v["correct"].tolist() == [True, False, True, False]  # c: tie -> first option, the answer
    assert v.loc[1, "unlearned"] and v.loc[3, "unlearned"]
    assert v.loc[1, "error_consistency"] == 1.0  # p(correct)=0: unlearned under every seed
    # b and d tie on consistency 1.0 and p(correct)≈0; the lower p(correct) ranks first
    assert set(v.loc[v["unlearned"] & (v["pass_expected"] < 1e-9), "severity_rank"]) <= {1, 2}
    assert v.loc[0, "severity_rank"] is pd.NA
    # base: item a identical -> JSD 0, known (0.9 > 0.8); item d base uniform -> not known
    assert v.loc[0, "js_base_sft"] == pytest.approx(0.0, abs=1e-12)
    assert v.loc[0, "known_by_base"] and not v.loc[3, "known_by_base"]
    # acc_norm: item b's correct option has 100 chars: -40/100 = -0.4 < 0/1 -> still wrong
    assert v.loc[1, "pred_norm"] == 0
    assert v["truncated"].tolist() == [False, False, True, False]
    assert stab == 1.0  # only deterministic items are unlearned


def test_top_k_and_summary(tables):
    items, sft, base = tables
    v, _ = compute_verdicts(items, sft, base, ScoringConfig(), DetectConfig(top_k=1, stability_seeds=2))
    assert v["in_top_k"].sum() == 1 and v.loc[v["in_top_k"], "severity_rank"].tolist() == [1]
    s = summarize(v, DetectConfig())
    assert s["n"] == 4 and s["accuracy"] == 0.5
    assert s["learn_rate"] == pytest.approx(1 - v["unlearned"].mean())
    assert set(s["per_subset"]) == {"s1", "s2"} and s["per_subset"]["s1"]["n"] == 2
    assert s["truncated_items"] == 1


def test_expected_mode_is_deterministic(tables):
    items, sft, _ = tables
    v, stab = compute_verdicts(items, sft, None, ScoringConfig(), DetectConfig(on="expected", stability_seeds=4))
    assert v["unlearned"].tolist() == [False, True, False, True]
    assert stab == 1.0 and "base_probs" not in v


def test_missing_scores_are_an_error(tables):
    items, sft, _ = tables
    with pytest.raises(ValueError, match="missing items"):
        compute_verdicts(items, sft.iloc[:2], None, ScoringConfig(), DetectConfig())


def _prior(items, rows):
    return pd.DataFrame({"id": items["id"], "logprob_sum": rows})


def test_calibration_subtracts_the_question_free_prior(tables):
    """calibration 'prior': softmax(logp(option | q) - logp(option)), computed here by hand; 'auto'
    calibrates only the items MC conversion built (with distractor ids)."""
    items, sft, base = tables
    prior_rows = [[L(0.5), L(0.25), L(0.25)], [0.0, 0.0, -40.0], [L(0.9), L(0.1)], [0.0, 0.0, 0.0]]
    priors = {"sft": _prior(items, prior_rows), "base": _prior(items, prior_rows)}
    v, _ = compute_verdicts(items, sft, base, ScoringConfig(calibration="prior"), DetectConfig(), priors)
    # item a: with q (0.9, 0.05, 0.05), prior (0.5, 0.25, 0.25): ratios 1.8 : 0.2 : 0.2
    np.testing.assert_allclose(v.loc[0, "probs"], [1.8 / 2.2, 0.2 / 2.2, 0.2 / 2.2], atol=1e-12)
    # item c: with q (0.5, 0.5), prior (0.9, 0.1): the question favours the rarer second option
    np.testing.assert_allclose(v.loc[2, "probs"], [0.5 / 0.9 / (0.5 / 0.9 + 5.0), 5.0 / (0.5 / 0.9 + 5.0)])
    assert v["calibrated"].all()
    built = items.assign(distractor_ids=[["x", "y"], [], ["z"], []])
    v, _ = compute_verdicts(built, sft, base, ScoringConfig(), DetectConfig(), priors)
    assert v["calibrated"].tolist() == [True, False, True, False]
    np.testing.assert_allclose(v.loc[1, "probs"], compute_verdicts(items, sft, base, ScoringConfig(calibration="none"),
                                                                   DetectConfig())[0].loc[1, "probs"])
    with pytest.raises(ValueError, match="priors"):
        compute_verdicts(items, sft, base, ScoringConfig(calibration="prior"), DetectConfig(), {"sft": priors["sft"]})


def test_fairness_flags_an_option_that_wins_without_the_question(tables):
    items, sft, base = tables
    prior_rows = [[0.0, L(0.05), L(0.05)],   # a: the answer alone has ~0.91 without the question
                  [0.0, L(0.01), 0.0],       # b: 0.5 / 0.005 / 0.5: nothing wins
                  [L(0.95), L(0.05)],        # c: the answer, 0.95
                  [0.0, -10.0, -10.0]]       # d: a distractor (option 0), answer is option 2
    base_rows = [[-5.0, -5.0, -5.0]] * 4
    base_rows[2] = [-5.0, -5.0]
    priors = {"sft": _prior(items, [[0.0] * len(r) for r in prior_rows]), "base": _prior(items, prior_rows)}
    cfg = DetectConfig()
    v, _ = compute_verdicts(items, sft, base, ScoringConfig(calibration="none"), cfg, priors)
    assert v["prior_model"].iloc[0] == "base"  # the base's prior decides when it was scored
    assert v["prior_answer_wins"].tolist() == [True, False, True, False]
    assert v["prior_distractor_wins"].tolist() == [False, False, False, True]
    assert v["fair"].tolist() == [False, True, False, False]
    np.testing.assert_allclose(v.loc[0, "prior_probs"], np.array([1, 0.05, 0.05]) / 1.1)
    # base_pmi: how much the question raised each option for the base (log q(o|x) - log q(o))
    bq = np.exp(np.array(base["logprob_sum"].iloc[3])) / np.exp(np.array(base["logprob_sum"].iloc[3])).sum()
    pq = np.exp(np.array(prior_rows[0])) / np.exp(np.array(prior_rows[0])).sum()
    np.testing.assert_allclose(v.loc[0, "base_pmi"], np.log(bq) - np.log(pq))  # base row of id a
    s = summarize(v, cfg)
    assert s["fairness"]["unfair"] == 3 and s["fairness"]["answer_wins"] == 2
    assert s["fairness"]["unlearned_unfair"] == int((~v["fair"] & v["unlearned"]).sum())
