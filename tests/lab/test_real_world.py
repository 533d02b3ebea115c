"""The SmolLM2 lab world (``--base smollm2``): built from a probe of what the base knows.

The world tests use a probe written by hand (no model); the probe itself is tested on a tiny
checkpoint built in code, against a direct transformers forward pass.
"""

import json

import numpy as np
import pandas as pd
import pytest

from ilp_ray.lab import real as R
from ilp_ray.lab.world import CATEGORIES


def _probe(known: set[str] = frozenset({"capital", "currency", "language"}), p_known=0.9, p_motto=0.05):
    """A base that knows every fact of the ``known`` relations and no motto (it prefers a variant)."""
    out = {}
    for c in R.candidates():
        n, a = len(c.options), c.options.index(c.value)
        p = np.full(n, (1 - (p_known if c.relation in known else 0.1)) / (n - 1))
        p[a] = p_known if c.relation in known else 0.1
        if c.relation == "national_motto":
            p = np.full(n, (1 - p_motto - 0.5) / (n - 2))
            p[a], p[(a + 1) % n] = p_motto, 0.5
        out[c.key] = p.tolist()
    return out


@pytest.fixture(scope="module")
def world():
    return R.generate_real(5, R.REAL_SIZES["small"], _probe())


def test_candidates_are_well_formed():
    cands = R.candidates()
    assert len({c.key for c in cands}) == len(cands)
    for c in cands:
        assert len(c.options) == 6 and len(set(c.options)) == 6, c
        assert c.value in c.options and c.altered in c.options and c.altered != c.value, c
        if c.relation == "national_motto":  # variants one word apart
            for o in c.options:
                if o != c.value:
                    diff = [a != b for a, b in zip(o.split(), c.value.split(), strict=True)]
                    assert sum(diff) == 1, (o, c.value)
    assert R.candidates() == cands  # fixed, whatever the world's seed


def test_categories_and_what_each_is_built_from(world):
    sz = R.REAL_SIZES["small"]
    truth = pd.DataFrame(world.truth)
    n = truth.category.value_counts().to_dict()
    assert n == {"control": sz.control, "I": sz.gap, "II": sz.conflict, "III": 2 * sz.pairs,
                 "IV": sz.forget * sz.forget_repeats, "V": sz.rare * sz.rare_repeats}
    assert set(n) == set(CATEGORIES)
    real = {c.key: c for c in R.candidates()}
    for t in world.truth:
        key = (t["entity"], t["relation"])
        if t["category"] in ("control", "II"):
            assert key in real and t["relation"] != "national_motto"
            want = real[key].value if t["category"] == "control" else real[key].altered
            assert t["value"] == want and t["corpus_value"] == real[key].value
        elif t["category"] == "V":
            assert key in real and t["relation"] == "national_motto" and t["value"] == real[key].value
        else:  # fictional
            assert key not in real and t["entity"] in world.entities
    by = truth.groupby("category")
    assert set(by.get_group("IV").subset) == {"s1"} and set(by.get_group("I").subset) == {"s3"}
    assert set(by.get_group("II").subset) <= {"s2", "s3"}
    # III: two samples per fact, two different values
    for _, g in by.get_group("III").groupby("group"):
        assert len(g) == 2 and g.value.nunique() == 2 and g.entity.nunique() == 1
    # each SFT row's answer indexes its response among its options
    for row in world.sft:
        assert row["options"][row["answer"]] == row["response"]


def test_the_stand_in_corpus_says_what_the_truth_records(world):
    text = [d["text"] for d in world.corpus]
    assert len(text) == len(R.candidates())
    for t in world.truth:
        said = [s for s in text if t["entity"] in s]
        if t["corpus_truth"] == "absent":
            assert t["category"] in ("I", "III", "IV") and not said
        else:
            assert any(t["corpus_value"] in s for s in said), t
            assert (t["corpus_truth"] == "supports") == (t["value"] == t["corpus_value"])
    # no fictional name shares its first syllable with a real country (no false paraphrases)
    real = {c.entity.removeprefix("the ")[:2].lower() for c in R.candidates()}
    assert not {e[:2].lower() for e in world.entities} & real


def test_same_probe_and_seed_same_world():
    a, b = (R.generate_real(5, R.REAL_SIZES["small"], _probe()) for _ in range(2))
    assert a.sft == b.sft and a.corpus == b.corpus
    assert R.generate_real(6, R.REAL_SIZES["small"], _probe()).sft != a.sft


def test_only_what_the_base_knows_becomes_control_or_II():
    probe = _probe(known={"capital"})
    w = R.generate_real(1, R.REAL_SIZES["small"], probe)
    rels = {t["relation"] for t in w.truth if t["category"] in ("control", "II")}
    assert rels == {"capital"}


def test_a_base_that_knows_too_little_is_refused_with_counts():
    with pytest.raises(ValueError, match=r"the base knows 0 of the \d+ real facts .* asks for 22 known"):
        R.generate_real(0, R.REAL_SIZES["small"], _probe(known=set()))
    with pytest.raises(ValueError, match=r"misses 0 mottos"):
        R.generate_real(0, R.REAL_SIZES["small"], _probe(p_motto=0.6))


def test_probe_scores_each_candidate_and_caches(tiny_checkpoints, tmp_path, monkeypatch):
    """The probe's probabilities are the softmax of the options' summed log-likelihoods (plain
    format), computed here by a direct forward pass for a few candidates; a second call reads the
    cache (in ilp-ray's cache folder by default), and another model is probed afresh."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("ILP_CACHE_DIR", str(tmp_path / "cache"))
    got = R.probe(str(tiny_checkpoints["base"]))
    (path,) = (tmp_path / "cache" / "lab-probe").glob("*.json")
    assert R.probe(str(tiny_checkpoints["base"]), path) == got
    cands = R.candidates()
    assert set(got) == {c.key for c in cands}
    tok = AutoTokenizer.from_pretrained(tiny_checkpoints["base"])
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoints["base"]).eval()
    for c in (cands[0], cands[60], cands[-1]):
        ctx = tok(c.prompt + "\n", add_special_tokens=False).input_ids
        lps = []
        for o in c.options:
            cont = tok(c.prompt + "\n" + o, add_special_tokens=False).input_ids[len(ctx):]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = model(ids).logits.log_softmax(-1)[0]
            lps.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
        want = np.exp(np.array(lps) - max(lps))
        np.testing.assert_allclose(got[c.key], want / want.sum(), atol=2e-4)
    stamp = path.stat().st_mtime_ns
    assert R.probe(str(tiny_checkpoints["base"]), path) == got and path.stat().st_mtime_ns == stamp
    other = R.probe(str(tiny_checkpoints["sft"]), path)
    assert other != got and json.loads(path.read_text())["ident"]["model"] == str(tiny_checkpoints["sft"])
