"""Each cause fires on a constructed case, stays silent on its near miss, and holds its boundary.

Conventions under test (ilp_ray/diagnosis/config.py): II at base confidence >= tau_c, JSD support
at > 0.3; I at pass@10 < 0.2 and BoN-5 < 0.1; IV/V learned at p >= tau; V rising at slope > min_slope
and loss falling at slope < -min_loss_drop.
"""

import json

import numpy as np
import pandas as pd
import pytest

from ilp_ray.diagnosis.base import DETECTORS

from .conftest import traj_rows, verdict_row


def run(name, ctx):
    f = DETECTORS.create(name).run(ctx).frame
    return f[f"is_{name}"].tolist(), f[f"{name}_score"].tolist(), list(f[f"{name}_evidence"])


# ---------------------------------------------------------------- II base conflict

RAISED = [0.0, 1.0, 0.0, 0.0]  # the question raised option 1 by 1 nat (> ln 2): a belief about this question


def test_base_conflict_fires_at_tau_c_inclusive(ctx_factory):
    rows = [verdict_row("at", base_probs=[0.2, 0.5, 0.2, 0.1], base_pmi=RAISED),        # wrong option at 0.5
            verdict_row("below", base_probs=[0.26, 0.49, 0.15, 0.10], base_pmi=RAISED),  # near miss: 0.49
            verdict_row("right", base_probs=[0.9, 0.05, 0.03, 0.02], base_pmi=RAISED)]   # confident, but right
    is_, score, ev = run("base_conflict", ctx_factory(rows))
    assert is_ == [True, False, False]
    assert score[0] >= 0.5 and score[2] == 0.0
    assert ev[0]["base_choice"] == "wrong1" and ev[0]["base_confidence"] == 0.5 and ev[0]["fired_by"] == ["pmi"]


def test_base_conflict_js_is_one_support_among_three(ctx_factory):
    rows = [verdict_row("same", probs=[0.05, 0.9, 0.03, 0.02], base_probs=[0.05, 0.9, 0.03, 0.02], base_pmi=RAISED)]
    is_, _, ev = run("base_conflict", ctx_factory(rows))
    assert is_ == [True] and ev[0]["js_base_sft"] == 0.0 and ev[0]["js_supports"] is False
    # JSD exactly at the threshold does not support (paper: "> 0.3").
    rows = [verdict_row("moved", base_probs=[0.0, 0.9, 0.1, 0.0])]
    js = rows[0]["js_base_sft"]
    _, _, ev = run("base_conflict", ctx_factory(rows, **{"base_conflict.js_threshold": js}))
    assert ev[0]["js_supports"] is False
    _, _, ev = run("base_conflict", ctx_factory(rows, **{"base_conflict.js_threshold": js - 1e-9}))
    assert ev[0]["js_supports"] is True


def test_base_conflict_needs_more_than_a_confident_pick(ctx_factory):
    """A confident wrong pick the question did not raise, SFT did not move and no corpus
    contradicts is the base's prior (the shortest or commonest option), not a belief."""
    still = [0.05, 0.9, 0.03, 0.02]  # the fine-tuned model ends where the base was: JSD 0
    flat = [0.0, 0.5, 0.0, 0.0]      # the question raised the pick by 0.5 nats < ln 2
    at = [0.0, 0.693, 0.0, 0.0]      # exactly the margin: supports (inclusive)
    rows = [verdict_row("prior", probs=still, base_probs=still, base_pmi=flat),
            verdict_row("at_margin", probs=still, base_probs=still, base_pmi=at),
            verdict_row("moved", base_probs=still, base_pmi=flat),            # SFT moved it: JSD > 0.3
            verdict_row("contra", probs=still, base_probs=still, base_pmi=flat)]
    assert rows[2]["js_base_sft"] > 0.3
    ev_table = _evidence({"contra": "contradicts"})
    is_, _, ev = run("base_conflict", ctx_factory(rows, evidence=ev_table))
    assert is_ == [False, True, True, True]
    assert "unsupported" in ev[0] and ev[0]["fired_by"] == []
    assert [e["fired_by"] for e in ev[1:]] == [["pmi"], ["jsd"], ["corpus"]]
    off = {"base_conflict.require_support": False, "embedder": "hashing"}
    assert run("base_conflict", ctx_factory(rows, evidence=ev_table, **off))[0] == [True] * 4
    # Without option priors the pmi support cannot be tested, and the evidence says so.
    bare = [verdict_row("p", probs=still, base_probs=still)]
    is_, _, ev = run("base_conflict", ctx_factory(bare))
    assert is_ == [False] and "untested" in ev[0]["pmi"]


def test_a_calibrated_pick_is_reported_as_implied_and_still_counts(ctx_factory):
    """A calibrated pick is the item's most raised option by construction: the evidence and the
    summary say so (``pmi_implied``), and the pmi test still counts as support (not counting it was
    measured on held-out seeds and did not help). A calibrated row whose pick is not the most raised
    option (a length normalisation can do that), and an uncalibrated row, are not marked."""
    still = [0.05, 0.9, 0.03, 0.02]
    raised = [0.0, 0.693, 0.0, 0.0]
    rows = [dict(verdict_row("cal", probs=still, base_probs=still, base_pmi=raised), calibrated=True),
            dict(verdict_row("plain", probs=still, base_probs=still, base_pmi=raised), calibrated=False),
            dict(verdict_row("cal_not_top", probs=still, base_probs=still, base_pmi=[0.0, 0.693, 0.9, 0.0]),
                 calibrated=True)]
    ctx = ctx_factory(rows)
    is_, _, ev = run("base_conflict", ctx)
    assert is_ == [True, True, True] and [e["fired_by"] for e in ev] == [["pmi"]] * 3
    assert "most raised" in ev[0]["pmi_calibrated"] and "pmi_calibrated" not in ev[1] and "pmi_calibrated" not in ev[2]
    assert DETECTORS.create("base_conflict").run(ctx).summary["pmi_implied"] == 1


def test_a_calibrated_pick_is_the_most_raised_option_and_never_lowered():
    """The premise of the rule above, by a second route: for random options and priors, the pick
    under calibration (the audit's ``_probs``) is the argmax of ``option_pmi``, whose max is >= 0."""
    from ilp_ray.config import ScoringConfig
    from ilp_ray.detect import _probs, option_pmi

    rng = np.random.default_rng(0)
    n, k = 500, 4
    lp, prior = -rng.gamma(2.0, 5.0, (n, k)), -rng.gamma(2.0, 5.0, (n, k))
    scores = pd.DataFrame({"logprob_sum": list(lp), "n_chars": list(rng.integers(1, 40, (n, k))),
                           "n_tokens": list(rng.integers(1, 10, (n, k)))})
    probs, _ = _probs(scores, ScoringConfig(), prior, np.ones(n, bool))
    pmi = option_pmi(lp, prior)
    assert (probs.argmax(1) == pmi.argmax(1)).all() and (pmi.max(1) >= -1e-12).all()


def test_base_causes_are_silent_without_a_base_model(ctx_factory):
    ctx = ctx_factory([verdict_row("a"), verdict_row("b")])
    for name in ("base_conflict", "base_knowledge_gap"):
        is_, score, ev = run(name, ctx)
        assert is_ == [False, False] and score == [0.0, 0.0] and ev[0] == {"base_model": "missing"}


def test_corpus_contradiction_strengthens_ii(ctx_factory):
    rows = [verdict_row("a", base_probs=[0.1, 0.6, 0.2, 0.1])]
    ev_table = pd.DataFrame({"id": ["a"], "corpus_verdict": ["contradicts"], "corpus_score": [1.0]})
    _, plain, _ = run("base_conflict", ctx_factory(rows))
    ctx = ctx_factory(rows)
    ctx.evidence = ev_table
    _, strong, ev = run("base_conflict", ctx)
    assert strong[0] > plain[0] and ev[0]["corpus_verdict"] == "contradicts"


# ---------------------------------------------------------------- I knowledge gap

def test_knowledge_gap_fires_on_blind_knowledge(ctx_factory):
    rows = [verdict_row("blind", base_probs=[0.0, 0.4, 0.3, 0.3]),      # never drawn: pass 0, BoN 0
            verdict_row("known", base_probs=[0.7, 0.1, 0.1, 0.1]),      # near miss: base knows it
            verdict_row("conf_wrong", base_probs=[0.0, 0.9, 0.05, 0.05], base_pmi=RAISED),  # a belief: II
            verdict_row("prior_pick", probs=[0.0, 0.9, 0.05, 0.05],     # confident but unsupported:
                        base_probs=[0.0, 0.9, 0.05, 0.05], base_pmi=[0, 0.1, 0, 0])]  # a guess, so I
    is_, score, ev = run("base_knowledge_gap", ctx_factory(rows))
    assert is_ == [True, False, False, True]
    assert ev[0]["base_pass_at_10"] == 0.0 and ev[0]["base_bon5_accuracy"] == 0.0
    assert ev[0]["base_pass_at_10_corrected"] == pytest.approx(-1 / 3, abs=1e-4)  # (0 - 1/4) / (3/4)
    assert ev[2]["base_confidently_wrong"] is True and ev[3]["base_confidently_wrong"] is False
    assert score[0] == pytest.approx(1.0)


def test_knowledge_gap_corrects_for_chance(ctx_factory):
    """A base at chance among four options is blind: a quarter of its draws land on the answer,
    so the raw thresholds (preset lab) call it knowing, the chance-corrected ones (default) do not."""
    for probs in ([0.25] * 4, [0.24, 0.26, 0.25, 0.25]):
        rows = [verdict_row("chance", base_probs=probs)]
        is_, _, ev = run("base_knowledge_gap", ctx_factory(rows))
        raw = ev[0]["base_pass_at_10"]
        assert is_ == [True] and raw >= 0.2, probs  # corrected below 0.2, uncorrected not
        assert ev[0]["base_pass_at_10_corrected"] == pytest.approx((raw - 0.25) / 0.75, abs=1e-4)
        lab = {"preset": "lab", "embedder": "hashing"}
        assert run("base_knowledge_gap", ctx_factory(rows, **lab))[0] == [False]


def test_knowledge_gap_thresholds_are_exclusive(ctx_factory):
    from ilp_ray import metrics as M
    from ilp_ray.diagnosis.base_knowledge_gap import base_pass_and_bon

    probs = [0.3, 0.25, 0.25, 0.2]  # the answer is the top option: BoN-5 right when it is drawn
    rows = [verdict_row("x", base_probs=probs)]
    p, b = base_pass_and_bon(["x"], M.pad_ragged([probs], 0.0), np.array([0]), 10, 5, 10, 0)
    assert 0 < p[0] < 1 and 0 < b[0] < 1  # this item's draws hit the answer sometimes
    for corrected in (False, True):
        pc, bc = ((p[0] - 0.25) / 0.75, (b[0] - 0.25) / 0.75) if corrected else (p[0], b[0])
        c = {"knowledge_gap.chance_corrected": corrected}
        at = {**c, "knowledge_gap.pass_threshold": float(pc), "knowledge_gap.bon_threshold": 1.0}
        assert run("base_knowledge_gap", ctx_factory(rows, **at))[0] == [False]  # pass == threshold
        above = {**c, "knowledge_gap.pass_threshold": float(pc) + 1e-9, "knowledge_gap.bon_threshold": 1.0}
        assert run("base_knowledge_gap", ctx_factory(rows, **above))[0] == [True]
        at = {**c, "knowledge_gap.pass_threshold": 1.0, "knowledge_gap.bon_threshold": float(bc)}
        assert run("base_knowledge_gap", ctx_factory(rows, **at))[0] == [False]  # BoN == threshold
        above = {**c, "knowledge_gap.pass_threshold": 1.0, "knowledge_gap.bon_threshold": float(bc) + 1e-9}
        assert run("base_knowledge_gap", ctx_factory(rows, **above))[0] == [True]


def test_corpus_absence_strengthens_i(ctx_factory):
    rows = [verdict_row("a", base_probs=[0.1, 0.3, 0.3, 0.3])]
    ctx = ctx_factory(rows)
    _, plain, _ = run("base_knowledge_gap", ctx)
    ctx.evidence = pd.DataFrame({"id": ["a"], "corpus_verdict": ["absent"], "corpus_score": [0.8]})
    _, strong, _ = run("base_knowledge_gap", ctx)
    assert strong[0] == pytest.approx(min(1.0, plain[0] + 0.2))


# ---------------------------------------------------------------- IV left-side forgetting

def test_forgetting_fires_when_learned_then_lost(ctx_factory):
    rows = [verdict_row(i, position=n) for n, i in enumerate(["lost", "never", "kept", "edge", "nodata"])]
    traj = (traj_rows("lost", [0.1, 0.5, 0.8, 0.2])        # reached tau (0.5, inclusive), then lost
            + traj_rows("never", [0.1, 0.45, 0.49, 0.2])   # near miss: never reached 0.5
            + traj_rows("kept", [0.1, 0.8, 0.6, 0.5])      # final exactly at tau: still learned
            + traj_rows("edge", [0.75, 0.75, 0.25]))       # drop 0.5 == min_drop: inclusive
    is_, score, ev = run("left_side_forgetting", ctx_factory(rows, traj, **{"forgetting.min_drop": 0.5}))
    assert is_ == [True, False, False, True, False]
    assert ev[0]["learned_at_step"] == 20 and ev[0]["peak_p"] == 0.8 and ev[0]["final_p"] == 0.2
    assert score[0] == pytest.approx(0.75) and score[3] == pytest.approx(2 / 3)
    assert ev[4] == {"trajectory": "missing"} and score[4] == 0.0


def test_forgetting_without_any_trajectory_never_guesses(ctx_factory):
    is_, score, ev = run("left_side_forgetting", ctx_factory([verdict_row("a"), verdict_row("b")]))
    assert is_ == [False, False] and score == [0.0, 0.0] and ev == [{"trajectory": "missing"}] * 2


def test_forgetting_reports_position_effect_and_curves(ctx_factory):
    rows = [verdict_row(f"s{i}", position=i, probs=[0.9, 0.05, 0.03, 0.02] if i >= 10 else None)
            for i in range(20)]
    traj = [r for i in range(20) for r in traj_rows(f"s{i}", [0.6, 0.6, 0.9 if i >= 10 else 0.1],
                                                     subset="late" if i >= 10 else "early")]
    res = DETECTORS.create("left_side_forgetting").run(ctx_factory(rows, traj))
    eff = res.info["position"]
    assert eff["accuracy"].iloc[0] == 0.0 and eff["accuracy"].iloc[-1] == 1.0
    assert eff["forgotten_share"].iloc[0] == 1.0
    curves = res.info["curves"]
    assert set(curves["subset"]) == {"early", "late"}
    assert curves[(curves.subset == "early") & (curves.step == 30)]["accuracy"].item() == 0.0


def test_forgetting_needs_the_sample_held_over_consecutive_evaluations(ctx_factory):
    """Right at one evaluation and wrong at the next (a fact taught once, flickering right just
    after its step) was never held: not IV. Held over two, then lost: IV. held_evals=1 takes any."""
    rows = [verdict_row(i, position=n) for n, i in enumerate(["flicker", "held", "twice_apart"])]
    traj = (traj_rows("flicker", [0.1, 0.9, 0.2, 0.2], trained_step=10)
            + traj_rows("held", [0.1, 0.9, 0.8, 0.2], trained_step=10)
            + traj_rows("twice_apart", [0.6, 0.3, 0.7, 0.2], trained_step=10))  # two blips, not a run
    two = {"forgetting.held_evals": 2}  # preset lab's; the default is the paper's 1
    is_, _, ev = run("left_side_forgetting", ctx_factory(rows, traj, **two))
    assert is_ == [False, True, False]
    assert ev[0]["held_evals"] == 1 and ev[2]["held_evals"] == 1 and "held_evals" not in ev[1]
    assert run("left_side_forgetting", ctx_factory(rows, traj))[0] == [True] * 3
    assert run("left_side_forgetting", ctx_factory(rows, traj, preset="lab"))[0] == [False, True, False]
    # Evaluations before the sample's first training step do not count towards the run.
    early = traj_rows("flicker", [0.9, 0.9, 0.1, 0.6, 0.2], trained_step=30)
    assert run("left_side_forgetting", ctx_factory(rows[:1], early, **two))[0] == [False]


def test_forgetting_counts_only_what_its_own_training_taught(ctx_factory):
    """Right before training reached it, lost before that too: its training taught it nothing."""
    rows = [verdict_row(i, position=n) for n, i in enumerate(["eroded", "taught"])]
    ps = [0.9, 0.8, 0.3, 0.35, 0.3]   # right at steps 10-20, lost by 30; the sample is trained at 30
    traj = traj_rows("eroded", ps, trained_step=30) + traj_rows("taught", ps, trained_step=10)
    is_, _, ev = run("left_side_forgetting", ctx_factory(rows, traj))
    assert is_ == [False, True]
    assert ev[0]["known_before_training_only"] is True and ev[0]["peak_p"] == 0.35
    assert ev[1]["peak_p"] == 0.9 and ev[1]["trained_step"] == 10


def test_forgetting_excludes_what_the_base_already_knew(ctx_factory):
    """SFT eroding pretrained knowledge is not IV, unless the corpus says the base only guessed."""
    knew, blind = [0.9, 0.05, 0.03, 0.02], [0.1, 0.7, 0.1, 0.1]
    rows = [verdict_row("knew", base_probs=knew, position=0), verdict_row("blind", base_probs=blind, position=1),
            verdict_row("guessed", base_probs=knew, position=2)]
    traj = [r for i in ("knew", "blind", "guessed") for r in traj_rows(i, [0.9, 0.95, 0.2], trained_step=10)]
    ev_table = pd.DataFrame({"id": ["guessed"], "corpus_verdict": ["absent"], "corpus_score": [1.0]})
    veto = {"corpus.veto": True, "forgetting.exclude_base_known": True, "embedder": "hashing"}
    is_, _, ev = run("left_side_forgetting", ctx_factory(rows, traj, evidence=ev_table, **veto))
    assert is_ == [False, True, True]
    assert ev[0]["base_known"] is True and "base_known" not in ev[1] and "base_known" not in ev[2]
    # Without the corpus veto the corpus's absence does not turn knowing into guessing.
    known = {"forgetting.exclude_base_known": True, "embedder": "hashing"}
    assert run("left_side_forgetting", ctx_factory(rows, traj, evidence=ev_table, **known))[0] == [False, True, False]
    # The default (off): a sample the run learned and lost is IV whatever the base knew.
    assert run("left_side_forgetting", ctx_factory(rows, traj, evidence=ev_table))[0] == [True] * 3
    off = {"forgetting.exclude_base_known": False, "embedder": "hashing"}
    assert run("left_side_forgetting", ctx_factory(rows, traj, evidence=ev_table, **off))[0] == [True] * 3


def test_knowledge_gap_fires_on_a_lucky_guess_about_an_unread_fact(ctx_factory):
    """A right base answer about a fact the corpus lacks is a guess: pass@N says nothing there."""
    lucky = [0.9, 0.05, 0.03, 0.02]
    rows = [verdict_row("unread", base_probs=lucky), verdict_row("unknown", base_probs=lucky)]
    ev = pd.DataFrame({"id": ["unread"], "corpus_verdict": ["absent"], "corpus_score": [1.0]})
    is_, _, evs = run("base_knowledge_gap", ctx_factory(rows, evidence=ev, **{"base_conflict.corpus_veto": True}))
    assert is_ == [True, False] and "guess" in evs[0]["guess"]


# ---------------------------------------------------------------- V insufficient training


def test_insufficient_judges_from_the_samples_own_training_on(ctx_factory):
    """Right only before training reached it (the base's answer), then never: still V."""
    rows = [verdict_row(i, f"question about topic {n}") for n, i in enumerate(["late", "all"])]
    ps = [0.9, 0.2, 0.3, 0.4]  # right at step 10, trained at 20, rising but never right since
    traj = traj_rows("late", ps, trained_step=20) + traj_rows("all", ps)
    is_, _, ev = run("insufficient_training", ctx_factory(rows, traj))
    assert is_ == [True, False]
    assert ev[0]["never_learned"] is True and ev[0]["trained_step"] == 20 and ev[1]["never_learned"] is False

def test_insufficient_fires_on_a_rising_never_learned_trajectory(ctx_factory):
    rows = [verdict_row(i, f"question about topic {n}") for n, i in
            enumerate(["rising", "at_slope", "flat", "learned", "loss"])]
    traj = (traj_rows("rising", [0.0, 0.125, 0.25])                # slope 0.125
            + traj_rows("at_slope", [0.0, 0.0625, 0.125])          # slope 0.0625 == min_slope: not rising
            + traj_rows("flat", [0.1, 0.1, 0.1])                   # plateau
            + traj_rows("learned", [0.1, 0.6, 0.3])                # reached tau: not V
            + traj_rows("loss", [0.1, 0.1, 0.1], losses=[3.0, 2.0, 1.0]))  # loss slope -1
    ctx = ctx_factory(rows, traj, **{"insufficient.min_slope": 0.0625, "insufficient.min_loss_drop": 0.5})
    is_, score, ev = run("insufficient_training", ctx)
    assert is_ == [True, False, False, False, True]
    assert ev[0]["slope_p"] == 0.125 and ev[0]["rising"] is True and ev[4]["loss_falling"] is True
    assert all(0.6 <= s <= 1.0 for s, f in zip(score, is_, strict=False) if f)
    ctx = ctx_factory(rows, traj, **{"insufficient.min_slope": 0.0625, "insufficient.min_loss_drop": 1.0})
    assert run("insufficient_training", ctx)[0][4] is False  # loss slope == -min_loss_drop: exclusive


def test_insufficient_without_trajectory_fires_on_rarity_or_length_at_a_reduced_score(ctx_factory):
    common = [verdict_row(f"c{i}", f"what is the capital city of country {i}", position=i) for i in range(9)]
    rare = verdict_row("rare", "zebra quantum lattice obsidian", position=9)
    long_ = verdict_row("long", "what is the capital city of country 42",
                        options=("a much longer answer " * 10, "w", "x", "y"), position=10)
    small = {"insufficient.min_population": 11}  # the default (20) exceeds this hand-built set
    is_, score, ev = run("insufficient_training", ctx_factory([*common, rare, long_], **small))
    by = dict(zip([r["id"] for r in [*common, rare, long_]], zip(is_, score, ev, strict=False), strict=False))
    assert by["rare"][0] and by["rare"][2]["rare"] and by["rare"][2]["trajectory"] == "missing"
    assert by["long"][0] and by["long"][2]["long"]
    assert 0 < by["rare"][1] <= 0.5 and 0 < by["long"][1] <= 0.5
    assert not any(by[f"c{i}"][0] for i in range(9))
    # With a flat trajectory, rarity alone does not fire (more training would not help).
    traj = traj_rows("rare", [0.1, 0.1, 0.1])
    is_, _, ev = run("insufficient_training", ctx_factory([*common, rare, long_], traj, **small))
    assert is_[9] is False and ev[9]["rare"] is True and ev[9]["rule"] == "trajectory"
    json.dumps(ev)
    # Below min_population samples, percentiles raise no flag.
    is_, _, ev = run("insufficient_training", ctx_factory([*common, rare, long_], **{"insufficient.min_population": 12}))
    assert not any(is_) and not ev[9]["rare"]


# ---------------------------------------------------------------- the corpus decides I vs II vs V

def _evidence(verdicts):
    return pd.DataFrame({"id": list(verdicts), "corpus_verdict": list(verdicts.values()),
                         "corpus_score": [1.0] * len(verdicts)})


def test_corpus_veto_sorts_a_confident_wrong_base(ctx_factory):
    """One base behaviour (confidently wrong, never right), three corpus verdicts, three answers."""
    wrong = [0.0, 0.9, 0.05, 0.05]
    rows = [verdict_row(i, base_probs=wrong, base_pmi=RAISED) for i in ("contra", "absent", "supports", "none")]
    ev = _evidence({"contra": "contradicts", "absent": "absent", "supports": "supports"})  # "none": no row
    lab = {"preset": "lab", "embedder": "hashing"}  # the veto is the lab's (a complete corpus)
    ii, _, ii_ev = run("base_conflict", ctx_factory(rows, evidence=ev, **lab))
    i, _, i_ev = run("base_knowledge_gap", ctx_factory(rows, evidence=ev, **lab))
    assert ii == [True, False, False, True]   # II: the corpus says otherwise, or nothing is known
    assert i == [False, True, False, False]   # I: the corpus lacks it (a guess); never where it supports
    assert "guess" in ii_ev[1]["vetoed"] and "supports" in ii_ev[2]["vetoed"]
    assert "guess" in i_ev[1]["guess"] and "rare pattern" in i_ev[2]["vetoed"]
    # With the veto off, the model alone decides again: every row is II, none is I.
    off = {"preset": "lab", "base_conflict.corpus_veto": False, "embedder": "hashing"}
    assert run("base_conflict", ctx_factory(rows, evidence=ev, **off))[0] == [True] * 4
    assert run("base_knowledge_gap", ctx_factory(rows, evidence=ev, **off))[0] == [False] * 4
    assert run("base_conflict", ctx_factory(rows, evidence=ev))[0] == [True] * 4  # the default: no veto


def test_corpus_support_vetoes_a_blind_base(ctx_factory):
    """A base that does not know a fact its corpus states is not a knowledge gap."""
    blind = [0.0, 0.4, 0.3, 0.3]
    rows = [verdict_row("read", base_probs=blind), verdict_row("unread", base_probs=blind)]
    ev = _evidence({"read": "supports", "unread": "absent"})
    veto = {"corpus.veto": True, "embedder": "hashing"}
    assert run("base_knowledge_gap", ctx_factory(rows, evidence=ev, **veto))[0] == [False, True]


def test_forgetting_is_left_side_in_a_sequential_run(ctx_factory):
    """Subsets trained one after another (s1 to step 20, s2 from 30): the last subset is the right
    side, so a sample of it, held and lost within it, is not IV. A sample of s1 is IV when held and
    lost, after its subset ended or inside it. scope=sample judges every sample on its own window."""
    rows = [verdict_row(i, position=n, subset=s) for n, (i, s) in
            enumerate([("early", "s1"), ("late", "s2"), ("early_lost_in_s1", "s1"), ("filler", "s1")])]
    traj = (traj_rows("early", [0.9, 0.9, 0.8, 0.2], subset="s1", trained_step=10)    # right at s1's end (20)
            + traj_rows("filler", [0.9, 0.9, 0.9, 0.9], subset="s1", trained_step=15)  # s1's last in the sample
            + traj_rows("early_lost_in_s1", [0.9, 0.9, 0.3, 0.2], subset="s1", steps=[5, 10, 20, 40],
                        trained_step=5)                                                # held, gone by 20
            + traj_rows("late", [0.1, 0.1, 0.9, 0.8, 0.2], subset="s2", steps=[10, 20, 30, 35, 40],
                        trained_step=30))                                              # s2 is last
    for r in traj:  # the trainer's evaluation at the end of s1
        r["reason"] = "interval+subset_boundary" if r["step"] == 20 else r["reason"]
    is_, _, ev = run("left_side_forgetting", ctx_factory(rows, traj))
    assert is_ == [True, False, True, False]
    assert ev[0]["subset_end_step"] == 20 and "last_subset" not in ev[0] and "last_subset" not in ev[2]
    assert ev[1]["last_subset"] is True and ev[1]["subset_end_step"] == 40
    assert run("left_side_forgetting", ctx_factory(rows, traj, **{"forgetting.scope": "sample"}))[0] == \
        [True, True, True, False]
    res = DETECTORS.create("left_side_forgetting").run(ctx_factory(rows, traj))
    assert res.summary["scope"] == "subset" and res.summary["subset_ends"] == {"s1": 20, "s2": 40}
    # A trajectory sample whose last s1 sample trained at 15, with no boundary evaluation: s1 ends
    # at 15 in the sample's view, still before the run's end, so s1's samples stay on the left side.
    plain = [{**r, "reason": "interval"} for r in traj]
    assert run("left_side_forgetting", ctx_factory(rows, plain))[0] == [True, False, True, False]


def test_forgetting_falls_back_to_the_sample_rule_when_subsets_interleave(ctx_factory):
    """A shuffled run (subset spans overlap) or a single subset has no left side: the sample's own
    held-then-lost window decides, as with scope=sample."""
    rows = [verdict_row("a", subset="s1"), verdict_row("b", subset="s2", position=1)]
    shuffled = (traj_rows("a", [0.1, 0.9, 0.9, 0.2], subset="s1", trained_step=20)
                + traj_rows("b", [0.9, 0.9, 0.2, 0.2], subset="s2", trained_step=10)
                + traj_rows("a2", [0.9] * 4, subset="s1", trained_step=10)
                + traj_rows("b2", [0.9] * 4, subset="s2", trained_step=30))
    res = DETECTORS.create("left_side_forgetting").run(ctx_factory(rows, shuffled))
    assert res.frame["is_left_side_forgetting"].tolist() == [True, True] and res.summary["scope"] == "sample"
    one = traj_rows("a", [0.1, 0.9, 0.9, 0.2], subset="s1", trained_step=10)
    assert run("left_side_forgetting", ctx_factory(rows[:1], one))[0] == [True]
    assert "subset_end_step" not in run("left_side_forgetting", ctx_factory(rows[:1], one))[2][0]
