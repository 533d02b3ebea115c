"""The Debian lab world (``ilp_ray.lab.debian``): real facts from Debian's files, causes by construction.

No SmolLM2 here: the probe is synthetic (every second real candidate known, no fictional one, the
common words' definitions known and the rare words' not). The files are the machine's own
(iso-codes, netbase, tzdata, wordnet-base); a test that needs them is skipped where they are absent.
"""

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from ilp_ray.lab import debian as D
from ilp_ray.lab.world import CATEGORIES

SRC = D.DebianSources()
_HAVE = all(p.exists() for p in (SRC.iso_codes / "iso_3166-1.json", SRC.services, SRC.zoneinfo / "zone.tab",
                                 SRC.wordnet / "data.noun"))
pytestmark = pytest.mark.skipif(not _HAVE, reason="needs iso-codes, netbase, tzdata and wordnet-base")


def _probe(p_known: float = 0.8, p_unknown: float = 0.1) -> dict:
    """Every second real short-task fact known; common words' definitions known, rare ones' not."""
    common, _ = D.words()
    out = {}
    for i, c in enumerate(D.candidates()):
        known = not c.fictional and (c.entity in common if c.task == "definition" else i % 2 == 0)
        p = np.full(len(c.options), (1 - (p_known if known else p_unknown)) / (len(c.options) - 1))
        p[c.options.index(c.value)] = p_known if known else p_unknown
        out[c.key] = p.tolist()
    return out


@pytest.fixture(scope="module")
def probe():
    return _probe()


@pytest.fixture(scope="module")
def world(probe):
    return D.generate_debian(3, "small", probe)


@pytest.fixture(scope="module")
def truth(world):
    return pd.DataFrame(world.truth)


def test_deterministic_by_seed(probe, world):
    again = D.generate_debian(3, "small", probe)
    assert again.sft == world.sft and again.truth == world.truth
    other = D.generate_debian(4, "small", probe)
    assert [r["prompt"] for r in other.sft] != [r["prompt"] for r in world.sft]


def test_every_category_with_the_configured_counts(truth):
    sz = D.SIZES["small"]
    assert truth.category.value_counts().to_dict() == {
        "control": sz.control, "I": sz.gap, "II": sz.conflict, "III": 2 * sz.pairs,
        "IV": sz.forget * sz.forget_repeats, "V": sz.rare * sz.rare_repeats}
    assert set(truth.category) == set(CATEGORIES)
    assert 120 <= len(truth) <= 160
    # one fact, one category; the tasks are mixed (control spans them all)
    assert truth.groupby("fact").category.nunique().max() == 1
    assert truth.loc[truth.category == "control", "task"].nunique() == len(D.TASKS)


def test_sft_rows_are_plain_records_in_training_order(world, truth):
    assert all(set(r) == {"id", "prompt", "response", "subset"} for r in world.sft)
    assert [r["subset"] for r in world.sft] == sorted(r["subset"] for r in world.sft)
    assert [r["id"] for r in world.sft] == truth.id.tolist()
    for r, t in zip(world.sft, world.truth, strict=True):
        assert r["prompt"] == D.TASKS[t["task"]].templates[t["template"]].format(e=t["entity"])
        assert r["response"] == t["value"]


def test_prompts_are_templated(truth, world):
    """Most prompts share their template with prompts about other entities, as a team's data does."""
    df = truth.assign(prompt=[r["prompt"] for r in world.sft])
    per_template = df.groupby(["task", "template"]).entity.nunique()
    shared = df.merge(per_template.rename("entities").reset_index(), on=["task", "template"])
    assert (shared.entities >= 2).mean() >= 0.9
    assert all(2 <= len(t.templates) <= 4 for t in D.TASKS.values())


def test_control_and_ii_are_known_real_facts(truth, probe):
    cands = {c.key: c for c in D.candidates()}
    for _, t in truth[truth.category.isin(["control", "II"])].iterrows():
        c = cands[(t.task, t.entity)]
        assert not c.fictional and t.known_by_probe and probe[c.key][c.options.index(c.value)] >= 0.5
        assert t.true_value == c.value
        assert (t.value == c.value) == (t.category == "control")


def test_ii_answers_are_other_values_of_the_same_task(truth):
    facts = D.real_facts()
    common, rare = D.words()
    ii = truth[truth.category == "II"]
    assert set(ii.subset) <= {"s2", "s3"}
    for _, t in ii.iterrows():
        assert t.value != t.true_value
        values = set({**common, **rare}.values()) if t.task == "definition" else set(facts[t.task].values())
        assert t.value in values, t.to_dict()


def test_iii_pairs_two_templates_two_answers_one_entity(truth):
    iii = truth[truth.category == "III"]
    assert iii.group.nunique() == D.SIZES["small"].pairs
    for _, g in iii.groupby("group"):
        assert len(g) == 2 and g.entity.nunique() == 1 and g.task.nunique() == 1 and g.subset.nunique() == 1
        assert g.template.nunique() == 2 and g.value.nunique() == 2
        assert g.true_value.iloc[0] in set(g.value)
    assert set(iii.subset) <= {"s2", "s3"}


def test_iv_facts_only_in_s1_and_repeated(truth):
    iv = truth[truth.category == "IV"]
    assert set(iv.subset) == {"s1"}
    sz = D.SIZES["small"]
    counts = iv.groupby("fact").size()
    assert len(counts) == sz.forget and set(counts) == {sz.forget_repeats}
    assert not iv.known_by_probe.any() and not iv.fictional.any() and "definition" not in set(iv.task)
    assert (iv.groupby("fact").template.nunique() >= 2).all()  # several phrasings
    # spread through s1, not one block
    s1 = truth[truth.subset == "s1"].reset_index(drop=True)
    pos = s1.index[s1.category == "IV"]
    assert pos.min() < len(s1) * 0.2 and pos.max() > len(s1) * 0.8


def test_v_only_at_the_end_of_the_last_subset(truth):
    sz = D.SIZES["small"]
    n = sz.rare * sz.rare_repeats
    assert (truth.category.iloc[-n:] == "V").all() and (truth.category.iloc[:-n] != "V").all()
    v = truth[truth.category == "V"]
    assert set(v.subset) == {"s3"} and set(v.task) == {"definition"}
    assert not v.known_by_probe.any() and (v.value == v.true_value).all()
    assert v.value.map(lambda s: len(s.split())).min() >= sz.rare_min_words


def test_i_entities_are_not_real(truth):
    facts = D.real_facts()
    assigned = D.assigned_codes()
    i = truth[truth.category == "I"]
    assert set(i.subset) == {"s3"} and i.fictional.all() and not i.known_by_probe.any()
    real_entities = {e.lower() for t in facts.values() for e in t}
    real_values = {v.lower() for t in facts.values() for v in t.values()}
    for _, t in i.iterrows():
        assert t.entity.lower() not in real_entities and t.value.lower() not in real_values, t.to_dict()
        if t.task in assigned:
            code = t.entity if t.task == "country_of_code" else t.value
            assert code.upper() not in assigned[t.task]
    assert i.task.nunique() >= 5


def test_fictional_values_keep_the_form_of_their_task():
    for c in D.candidates():
        if c.task == "country_code":
            assert len(c.value) == 2 and c.value.isupper()
        elif c.task == "currency_code":
            assert len(c.value) == 3 and c.value.isupper()
        elif c.task == "language_code":
            assert len(c.value) == 3 and c.value.islower()
        elif c.task == "script_code":
            assert len(c.value) == 4 and c.value.istitle()
        elif c.task == "port":
            assert c.value.isdigit() and 0 < int(c.value) < 65536
        elif c.task == "time_zone":
            assert "/" in c.value
        assert len(c.options) == D.PROBE_K and len(set(c.options)) == D.PROBE_K and c.value in c.options
    assert len({c.key for c in D.candidates()}) == len(D.candidates())


@pytest.mark.parametrize("field,file,package", [
    ("iso_codes", "iso_3166-1.json", "iso-codes"), ("services", "services", "netbase"),
    ("zoneinfo", "zone.tab", "tzdata"), ("wordnet", "index.noun", "wordnet-base")])
def test_missing_debian_file_names_file_and_package(tmp_path, field, file, package):
    target = tmp_path / "services" if field == "services" else tmp_path
    src = D.DebianSources(**{field: target})
    with pytest.raises(D.MissingSourceError) as e:
        D.candidates(src)
    msg = str(e.value)
    assert file in msg and f"'{package}'" in msg and f"apt-get install {package}" in msg


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="unknown Debian world size 'huge'; known: small, default"):
        D.resolve_size("huge")
    with pytest.raises(ValueError, match="DebianSize field 'control' must be an integer >= 0, got -1"):
        D.DebianSize(control=-1, gap=1, conflict=1, pairs=1, forget=1, rare=1)
    with pytest.raises(ValueError, match="field 'forget_repeats' must be an integer >= 1, got 0"):
        D.resolve_size("small", {"forget_repeats": 0})
    with pytest.raises(ValueError, match="unknown DebianSize field 'bogus'; known: control"):
        D.resolve_size("small", {"bogus": 3})
    with pytest.raises(ValueError, match=r"field 'gap' must be an integer >= 0, got 2\.5"):
        D.resolve_size("small", {"gap": 2.5})


def test_a_size_the_probe_cannot_fill_names_the_pool(probe):
    with pytest.raises(ValueError, match=r"too few candidates for this size: .*IV: \d+ for 500"):
        D.generate_debian(0, D.resolve_size("small", {"forget": 500}), probe)
    with pytest.raises(ValueError, match="the probe has no scores"):
        D.generate_debian(0, "small", {})


def test_written_world_scores_with_the_lab_scorer(world, tmp_path):
    """``write`` and ``score`` of the fictional lab apply unchanged."""
    from ilp_ray.lab.score import score
    from ilp_ray.lab.world import write

    paths = write(world, tmp_path)
    truth = pd.read_json(paths["truth"], lines=True)
    verdicts = truth[["id"]].assign(unlearned=truth.category != "control")
    causes = {"I": "base_knowledge_gap", "II": "base_conflict", "III": "sft_internal_conflict",
              "IV": "left_side_forgetting", "V": "insufficient_training"}
    diagnosis = truth[["id"]].assign(cause=truth.category.map(causes))
    m = score(truth, verdicts, diagnosis)
    assert m["macro_f1"] == 1.0 and Counter(m["samples"]) == Counter(truth.category.value_counts().to_dict())


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "world_debian.py"
    spec = importlib.util.spec_from_file_location("world_debian", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_bench_runs_sft_and_audit_the_readme_way(tmp_path):
    """SFT and audit configs are the defaults but for what the README tells a user to set."""
    from types import SimpleNamespace

    from ilp_ray.config import AuditConfig
    from ilp_ray.errors import ConfigError

    b = _bench()
    data = tmp_path / "sft.jsonl"
    t = b.sft_config(data, tmp_path, 159, 2, [])
    assert (t.model.spec, t.order.sampler, t.order.subset_order) == ("smollm2-135m", "sequential", ["s1", "s2", "s3"])
    assert (t.optim.lr, t.optim.batch_size, t.optim.epochs) == (1e-4, 8, 1)
    assert (t.trajectory.every_steps, t.trajectory.max_items, t.scaling.threads_per_worker) == (2, 159, 2)
    sft = SimpleNamespace(checkpoint=tmp_path / "ckpt", trajectory=tmp_path / "trajectory.parquet")
    a = b.audit_config(data, sft, tmp_path, "audit", ["detect.tau=0.3"])
    default = AuditConfig(data=str(data), sft_model=str(sft.checkpoint))
    assert a.mc == default.mc and a.ray == default.ray and a.evidence == default.evidence
    assert a.scoring == default.scoring.model_copy(update={"format": "chat"})
    assert a.detect == default.detect.model_copy(update={"tau": 0.3})
    assert a.diagnose == default.diagnose.model_copy(update={
        "enabled": True, "data": str(data), "trajectory": str(sft.trajectory)})
    assert a.base_model == "smollm2-135m" and a.run_dir == str(tmp_path / "audit")
    with pytest.raises(ConfigError, match=r"detect\.tua"):
        b.audit_config(data, sft, tmp_path, "audit", ["detect.tua=0.3"])
