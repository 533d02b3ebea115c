"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from ilp_ray import metrics as M


def test_softmax_by_hand():
    p = M.option_probs(np.array([[0.0, math.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.25, 0.75]])
    # T = 2 halves the log-odds: exp(log3/2) = sqrt(3)
    p2 = M.option_probs(np.array([[0.0, math.log(3.0)]]), temperature=2.0)
    np.testing.assert_allclose(p2[0, 1], math.sqrt(3) / (1 + math.sqrt(3)))
    with pytest.raises(ValueError, match="temperature"):
        M.option_probs(np.zeros((1, 2)), temperature=0)


def test_padding_gets_zero_probability():
    s = M.pad_ragged([[0.0, 0.0], [0.0, 0.0, 0.0]], fill=-np.inf)
    p = M.option_probs(s)
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])


def test_length_normalisation():
    lp = np.array([[-4.0, -3.0, -np.inf]])
    chars = np.array([[8, 2, 0]])
    toks = np.array([[2, 3, 0]])
    np.testing.assert_allclose(M.option_scores(lp, chars, toks, "chars"), [[-0.5, -1.5, -np.inf]])
    np.testing.assert_allclose(M.option_scores(lp, chars, toks, "tokens"), [[-2.0, -1.0, -np.inf]])
    np.testing.assert_allclose(M.option_scores(lp, chars, toks, "none"), lp)
    with pytest.raises(ValueError, match="chars"):
        M.option_scores(lp, chars, toks, "bytes")


def test_accuracy_eq1():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    assert M.accuracy(probs, np.array([0, 0, 0])) == pytest.approx(2 / 3)


def test_draws_follow_inverse_cdf():
    probs = np.array([[0.2, 0.5, 0.3]])
    u = np.array([[0.0, 0.19, 0.2, 0.69, 0.7, 0.99]])
    np.testing.assert_array_equal(M.sample_draws(probs, u), [[0, 0, 1, 1, 2, 2]])


def test_draws_never_land_on_padding():
    probs = np.array([[0.3, 0.7 - 1e-15, 0.0]])  # row sums just under 1
    np.testing.assert_array_equal(M.sample_draws(probs, np.array([[0.9999999999999999]])), [[1]])


def test_pass_at_n_and_bon_by_hand():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.5, 0.0]])
    draws = np.array([[1, 2, 0, 2, 2], [0, 1, 1, 1, 0]])
    answers = np.array([2, 0])
    np.testing.assert_allclose(M.pass_at_n_sampled(draws, answers), [3 / 5, 2 / 5])
    np.testing.assert_allclose(M.pass_expected(probs, answers), [0.3, 0.5])
    # item 0: the most confident draw is option 1 (p=0.6), which is wrong;
    # item 1: options tie at 0.5 and the first draw (option 0) wins the tie: correct.
    np.testing.assert_array_equal(M.bon_correct(probs, draws, answers), [False, True])


def test_sampled_pass_converges_to_expected():
    probs = np.array([[0.25, 0.75]])
    u = M.item_uniforms(["x"], 20000, seed=3)
    est = M.pass_at_n_sampled(M.sample_draws(probs, u), np.array([1]))[0]
    assert abs(est - 0.75) < 0.015


def test_item_uniforms_depend_on_seed_and_id_only():
    a = M.item_uniforms(["a", "b"], 5, seed=1)
    b = M.item_uniforms(["b"], 5, seed=1)
    np.testing.assert_array_equal(a[1], b[0])
    assert not np.allclose(a, M.item_uniforms(["a", "b"], 5, seed=2))


def test_entropy_confidence():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(M.entropy(p), [math.log(2), 0.0])
    np.testing.assert_allclose(M.confidence(p), [0.5, 1.0])


def test_known_by_base_threshold_is_strict():
    np.testing.assert_array_equal(M.known_by_base(np.array([0.8, 0.81, 0.1])), [False, True, False])


def test_js_divergence_by_hand():
    # disjoint distributions: JSD = 1 bit; identical: 0
    np.testing.assert_allclose(M.js_divergence(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])), [1.0])
    np.testing.assert_allclose(M.js_divergence(np.array([[0.3, 0.7]]), np.array([[0.3, 0.7]])), [0.0])
    # p=(1,0), q=(.5,.5): m=(.75,.25); KL(p||m)=log2(4/3); KL(q||m)=.5log2(2/3)+.5log2(2)
    kl_pm = math.log2(4 / 3)
    kl_qm = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    np.testing.assert_allclose(M.js_divergence(np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]])),
                               [0.5 * kl_pm + 0.5 * kl_qm])


def test_unlearned_threshold_is_strict():
    np.testing.assert_array_equal(M.unlearned(np.array([0.0, 0.2, 0.19])), [True, False, True])


def test_severity_order():
    ec = np.array([1.0, 0.5, 1.0, 1.0])
    pc = np.array([0.1, 0.0, 0.05, 0.1])
    # error consistency first, then lower p(correct); ties keep input order
    np.testing.assert_array_equal(M.severity_order(ec, pc), [2, 0, 3, 1])


def test_jaccard_and_seed_stability():
    assert M.jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert M.jaccard(set(), set()) == 1.0
    # pairs: ({1,2},{1,2})=1, ({1,2},{1})=.5, ({1,2},{1})=.5 -> mean 2/3
    assert M.seed_stability([{1, 2}, {1, 2}, {1}]) == pytest.approx(2 / 3)
    assert M.seed_stability([{1}]) == 1.0
