"""The lab's mitigation experiment, its parts: the encyclopedia, the truth matrix, the diagonal."""

import pandas as pd
import pytest

from ilp_ray.lab import world as W
from ilp_ray.lab.mitigations import AIMED, diagonal, encyclopedia, truth_matrix


def test_encyclopedia_states_the_sft_value_never_the_sft_question_and_skips_iii():
    from ilp_ray.mitigate.config import KnowledgeSources
    from ilp_ray.mitigate.knowledge import repeats_sample

    world = W.generate(0, "small")
    docs = encyclopedia(world)
    text = " ".join(d["text"] for d in docs)
    assert "?" not in text                                     # entries, never the SFT question lines
    truth = pd.DataFrame(world.truth)
    sft = {r["id"]: r for r in world.sft}
    max_overlap = KnowledgeSources().max_overlap
    for cat in ("I", "II"):
        for t in truth[truth.category == cat].itertuples():
            mine = [d["text"] for d in docs if d["text"].startswith(f"{t.entity}. ") and t.value in d["text"]]
            assert len(mine) == 1, (cat, t.entity, t.value)    # I: what the corpus lacks; II: the SFT's value
            # Unlike the SFT sample: the mitigation loop's repeat filter keeps it (the statement
            # templates it used to be written in failed this for 2-7 of 12 facts a seed).
            assert not repeats_sample(mine[0], sft[t.id]["prompt"], sft[t.id]["response"], max_overlap)
    for t in truth[truth.category == "II"].itertuples():
        assert not any(t.entity in d["text"] and t.corpus_value in d["text"].split() for d in docs
                       if t.corpus_value and t.corpus_value != t.value)
    iii = {(t.entity, t.relation) for t in truth[truth.category == "III"].itertuples()}
    facts = {(t.entity, t.relation) for t in truth.itertuples() if t.category != "III"}
    assert not (iii & facts) and len(docs) == len({e for e, _ in facts})  # one entry per entity
    assert sum(d["text"].count(": ") for d in docs) == len(facts)        # each fact once
    fumutog = next(d["text"] for d in docs if d["text"].startswith("Fumutog. "))
    assert "Flag colour: orange." in fumutog and "Capital: Doku." in fumutog


def test_truth_matrix_and_diagonal_by_hand():
    rows = []
    # Two arms; category I: 2 unlearned samples, knowledge_cpt recovers both, control one.
    for arm, rec in (("knowledge_cpt", ["recovered", "recovered"]), ("control", ["recovered", "still_unlearned"])):
        for i, tr in enumerate(rec):
            rows.append({"id": f"i{i}", "arm": arm, "unlearned_before": True, "transition": tr})
        rows.append({"id": "c0", "arm": arm, "unlearned_before": False, "transition": "still_learned"})
    truth = pd.DataFrame({"id": ["i0", "i1", "c0"], "category": ["I", "I", "control"]})
    m = truth_matrix(pd.DataFrame(rows), truth)
    assert m["matrix"] == {"I": {"knowledge_cpt": 1.0, "control": 0.5}} and m["unlearned"] == {"I": 2}
    d = diagonal(m["matrix"])
    assert d["I"]["margin"] == pytest.approx(0.5) and d["I"]["dominates"] and d["I"]["best_other"] == "control"
    assert d["II"]["share"] is None and set(d) == set(AIMED)
    d = diagonal({"I": {"knowledge_cpt": 0.5, "control": 0.45}})
    assert not d["I"]["dominates"]                            # 5 points < the 10-point margin


def test_baselines_by_hand():
    from ilp_ray.lab.baselines import attribute, cartography, forgetting_events

    rows = []
    for step, (a, b) in enumerate([(1, 0), (0, 0), (1, 1), (0, 1)]):  # a: right, wrong, right, wrong
        rows.append({"id": "a", "step": step, "correct": bool(a), "p_correct": 0.9 if a else 0.1, "trained_step": 0})
        rows.append({"id": "b", "step": step, "correct": bool(b), "p_correct": 0.6 if b else 0.4, "trained_step": 2})
    tr = pd.DataFrame(rows)
    assert forgetting_events(tr) == {"a": 2, "b": 0}         # b counts from its training step (2) only
    conf, var = cartography(tr)
    assert conf["a"] == pytest.approx(0.5) and var["a"] == pytest.approx(0.4)
    assert conf["b"] == pytest.approx(0.6) and var["b"] == pytest.approx(0.0)
    v = pd.DataFrame({"id": ["a", "b"], "unlearned": [True, True], "answer": [0, 0],
                      "base_probs": [[0.01, 0.99], [0.5, 0.5]], "base_correct": [False, True]})
    got = attribute(v, tr)
    assert got["IV:forgetting_events"] == {"a"} and got["I:slick_unknown"] == {"a"}  # (1-0.01)^16 = 0.85
