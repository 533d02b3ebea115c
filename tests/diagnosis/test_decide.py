"""The decision order, ``unattributed``, scope, and the cause table (paper Table 10)."""

import pandas as pd
import pytest

from ilp_ray.diagnosis.base import CauseDetector, CauseResult
from ilp_ray.diagnosis.decide import UNATTRIBUTED, cause_table, decide
from ilp_ray.diagnosis.registry import decision_order

from .conftest import verdict_row


def fake_results(fired: dict[str, list[bool]]):
    """CauseResults with chosen firings (score 0.5 where fired)."""
    out = {}
    for name, flags in fired.items():
        f = pd.DataFrame({f"is_{name}": flags, f"{name}_score": [0.5 if x else 0.0 for x in flags],
                          f"{name}_evidence": [{"fired": x} for x in flags]})
        out[name] = CauseResult(f, {})
    return out


def test_order_is_iii_iv_ii_i_v():
    """The decision order is the one the detector classes declare (CauseDetector.order)."""
    assert decision_order() == ["sft_internal_conflict", "left_side_forgetting", "base_conflict",
                                "base_knowledge_gap", "insufficient_training"]
    assert decision_order(["insufficient_training", "base_conflict"]) == ["base_conflict", "insufficient_training"]


def test_first_firing_cause_wins_and_every_signal_is_kept():
    v = pd.DataFrame([verdict_row(f"s{i}", subset="a" if i < 4 else "b") for i in range(6)]
                     + [verdict_row("learned", probs=[0.9, 0.05, 0.03, 0.02], subset="b")])
    T, F = True, False
    res = fake_results({
        #                         s0 s1 s2 s3 s4 s5 learned
        "insufficient_training": [T, T, T, T, F, F, T],
        "base_knowledge_gap":    [F, F, T, T, F, F, F],
        "base_conflict":         [F, T, F, T, F, F, F],
        "left_side_forgetting":  [F, F, F, T, F, F, F],
        "sft_internal_conflict": [F, F, F, F, T, F, T],
    })
    d = decide(v, res).set_index("id")
    assert d.loc["s0", "cause"] == "insufficient_training"
    assert d.loc["s1", "cause"] == "base_conflict"          # II before V
    assert d.loc["s2", "cause"] == "base_knowledge_gap"     # I before V
    assert d.loc["s3", "cause"] == "left_side_forgetting"   # IV before II, I, V
    assert d.loc["s4", "cause"] == "sft_internal_conflict"
    assert d.loc["s5", "cause"] == UNATTRIBUTED             # nothing fired: never forced
    assert d.loc["learned", "cause"] is None                # learned samples get no cause
    assert d.loc["s3", "signals"] == ["left_side_forgetting", "base_conflict", "base_knowledge_gap",
                                      "insufficient_training"]
    assert d.loc["s3", "cause_score"] == 0.5 and d.loc["s3", "is_base_conflict"]

    ct = cause_table(d.reset_index(), list(res))
    assert ct["n_diagnosed"] == 6 and ct["n_unlearned"] == 6 and ct["n_samples"] == 7
    assert ct["counts"] == {"sft_internal_conflict": 1, "left_side_forgetting": 1, "base_conflict": 1,
                            "base_knowledge_gap": 1, "insufficient_training": 1, "unattributed": 1}
    assert sum(ct["shares"].values()) == pytest.approx(1.0)
    a, b = ct["per_subset"]["a"], ct["per_subset"]["b"]
    assert a["n_diagnosed"] == 4 and a["shares"]["base_conflict"] == 0.25 and a["shares"]["unattributed"] == 0
    assert b["n_diagnosed"] == 2 and b["shares"]["sft_internal_conflict"] == 0.5 and b["shares"]["unattributed"] == 0.5


def test_scope_top_k_diagnoses_only_the_top_k():
    v = pd.DataFrame([verdict_row("top"), verdict_row("rest", in_top_k=False)])
    d = decide(v, fake_results({"base_conflict": [True, True]}), scope="top_k").set_index("id")
    assert d.loc["top", "cause"] == "base_conflict" and d.loc["rest", "cause"] is None
    assert not d.loc["rest", "in_scope"] and d.loc["rest", "unlearned"]


def test_a_cause_list_subset_keeps_the_order(ctx_factory):
    from ilp_ray.diagnosis.run import diagnose

    rows = [verdict_row("a", base_probs=[0.0, 0.9, 0.05, 0.05], base_pmi=[0.0, 1.0, 0.0, 0.0])]
    ctx = ctx_factory(rows, causes=["base_knowledge_gap", "base_conflict"], embedder="hashing")
    table, ct, results = diagnose(ctx)
    assert list(results) == ["base_conflict", "base_knowledge_gap"]
    assert table.loc[0, "cause"] == "base_conflict"
    assert set(ct["counts"]) == {"base_conflict", "base_knowledge_gap", "unattributed"}


def test_unknown_cause_in_config_is_named():
    from ilp_ray.config import load_config
    from ilp_ray.diagnosis.config import DiagnosisConfig
    from ilp_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'base_conflict'"):
        load_config(DiagnosisConfig, None, {"causes": ["base_conflic"]})


def test_custom_detector_shape_in_decide():
    class Always(CauseDetector):
        name = "always_for_test"

        def detect(self, ctx):
            n = len(ctx.verdicts)
            return CauseResult(self.frame([True] * n, [1.0] * n, [{}] * n), {})

    v = pd.DataFrame([verdict_row("x")])
    d = decide(v, {"always_for_test": CauseResult(Always().frame([True], [1.0], [{}]), {})})
    assert d.loc[0, "cause"] == "always_for_test"


def test_forgotten_back_to_the_base_belief_is_a_conflict():
    """IV and II both fire: the sample is II when its final answer is the base model's own wrong
    answer (it relapsed to what pretraining taught), IV when it drifted to anything else, and IV
    for both with the rule off or without a base model."""
    base = [0.05, 0.85, 0.05, 0.05]                                   # the base believes option 1
    v = pd.DataFrame([
        verdict_row("relapse", probs=[0.1, 0.7, 0.1, 0.1], base_probs=base),   # back to option 1
        verdict_row("drift", probs=[0.1, 0.1, 0.7, 0.1], base_probs=base),     # to option 2
        verdict_row("iv_only", probs=[0.1, 0.7, 0.1, 0.1], base_probs=base),   # II did not fire
    ])
    res = fake_results({"left_side_forgetting": [True, True, True], "base_conflict": [True, True, False]})
    res["base_conflict"].frame["base_conflict_score"] = [0.85, 0.85, 0.0]
    d = decide(v, res).set_index("id")
    assert d.loc["relapse", "cause"] == "base_conflict" and d.loc["relapse", "relapsed"]
    assert d.loc["relapse", "cause_score"] == 0.85                    # II's own score, not IV's
    assert d.loc["relapse", "signals"] == ["left_side_forgetting", "base_conflict"]
    assert d.loc["drift", "cause"] == "left_side_forgetting" and not d.loc["drift", "relapsed"]
    assert d.loc["iv_only", "cause"] == "left_side_forgetting"
    assert (decide(v, res, relapse=False)["cause"] == "left_side_forgetting").all()
    no_base = pd.DataFrame([verdict_row("relapse", probs=[0.1, 0.7, 0.1, 0.1])])
    one = {k: CauseResult(r.frame.iloc[:1], {}) for k, r in res.items()}
    assert decide(no_base, one)["cause"].tolist() == ["left_side_forgetting"]


def test_a_detector_registered_from_outside_is_selectable_and_ordered(tmp_path, monkeypatch):
    """One class declares everything about a cause: registered in a plugin module, it passes the
    config's check, is tested at its declared place in the order, reads its own section from
    diagnose.sections (validated by its Config), and the labels, colours and cause table follow."""
    import sys

    from ilp_ray.diagnosis.config import DiagnosisConfig
    from ilp_ray.diagnosis.registry import DETECTORS, color, label

    (tmp_path / "my_causes.py").write_text(
        "import numpy as np\n"
        "from ilp_ray.config_base import _Section\n"
        "from ilp_ray.diagnosis.base import CauseDetector, CauseResult\n"
        "from ilp_ray.diagnosis.registry import DETECTORS\n\n"
        "class MyConfig(_Section):\n    cut: float = 0.5\n\n"
        "class Lazy(CauseDetector):\n"
        "    name, roman, short, order, section, color = 'lazy_labeller', 'VI', 'lazy labeller', 35, 'lazy', '#123456'\n"
        "    Config = MyConfig\n"
        "    def detect(self, ctx):\n"
        "        s = self.settings(ctx)\n"
        "        fired = np.array([p[a] < s.cut for p, a in zip(ctx.verdicts['probs'], ctx.verdicts['answer'])])\n"
        "        return CauseResult(self.frame(fired, fired.astype(float), [{'cut': s.cut}] * len(fired)), {})\n\n"
        "DETECTORS.register('lazy_labeller', Lazy)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ValueError, match="unknown cause 'lazy_labeller'"):
            DiagnosisConfig(causes=["lazy_labeller"])
        cfg = DiagnosisConfig(plugins=["my_causes"], causes=["insufficient_training", "lazy_labeller", "base_conflict"],
                              sections={"lazy": {"cut": 0.9}})
        assert decision_order(cfg.causes) == ["base_conflict", "lazy_labeller", "insufficient_training"]
        assert (label("lazy_labeller"), color("lazy_labeller")) == ("VI lazy labeller", "#123456")
        cls = DETECTORS.get("lazy_labeller")
        assert cls().settings(type("Ctx", (), {"config": cfg})()).cut == 0.9
        with pytest.raises(ValueError, match="cannot import plugin module 'no_such_causes'"):
            DiagnosisConfig(plugins=["no_such_causes"])
    finally:
        DETECTORS._entries.pop("lazy_labeller", None)
        sys.modules.pop("my_causes", None)
