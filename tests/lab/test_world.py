"""The lab's world generator and its truth scoring (no training)."""

import json

import pandas as pd
import pytest

from ilp_ray.lab import world as W
from ilp_ray.lab.score import confusion_frame, score


@pytest.fixture(scope="module")
def small():
    return W.generate(3, "small")


def test_same_seed_same_world_other_seed_other_world(small):
    again = W.generate(3, "small")
    assert again.sft == small.sft and again.corpus == small.corpus and again.truth == small.truth
    other = W.generate(4, "small")
    assert other.entities != small.entities


def test_category_counts_follow_the_size(small):
    sz = W.SIZES["small"]
    n = pd.Series([t["category"] for t in small.truth]).value_counts().to_dict()
    assert n == {"control": sz.control, "I": sz.gap, "II": sz.conflict, "III": 2 * sz.pairs,
                 "IV": sz.forget * sz.forget_repeats, "V": sz.rare * sz.rare_repeats}


def _mentions(world, entity, value):
    return sum(entity in d["text"] and value in d["text"] for d in world.corpus)


def _options(world, t):
    key = (t["entity"], t["relation"])
    return world.options.get(key, world.relations[t["relation"]].values)


def test_the_corpus_says_what_the_truth_records(small):
    """supports / contradicts / absent, checked against the corpus text itself."""
    for t in small.truth:
        said = [d["text"] for d in small.corpus if t["entity"] in d["text"]
                and any(v in d["text"] for v in _options(small, t))]
        if t["corpus_truth"] == "absent":
            assert not said, (t, said)
        elif t["corpus_truth"] == "supports":
            assert said and all(t["value"] in s for s in said), t
        else:
            assert said and not any(t["value"] in s for s in said) and all(t["corpus_value"] in s for s in said)
    sz = W.SIZES["small"]
    for t in small.truth:
        if t["category"] == "II":
            assert _mentions(small, t["entity"], t["corpus_value"]) == sz.conflict_mentions
        if t["category"] == "control":
            assert _mentions(small, t["entity"], t["value"]) == sz.control_mentions


@pytest.mark.parametrize("size", ["small", "default"])
def test_the_corpus_names_every_value_of_every_relation(size):
    """Every SFT answer is a value the base read often in pretraining, on many seeds: seed 7
    (small) once taught an IV fact a founder the corpus never named, and IV read as I."""
    for seed in range(12):
        w = W.generate(seed, size)
        for name, rel in w.relations.items():
            if name == "motto":
                continue
            for v in rel.values:
                said = [d["text"] for d in w.corpus if v in d["text"]]
                assert len(said) >= W.SIZES[size].value_mentions, (seed, name, v)


def test_a_size_the_world_cannot_hold_names_the_counts():
    # 7 countries: 35 facts, 30 of them kept to state each value of the 5 relations once: 5 to pick.
    W.generate(0, W.LabSize(entities=7, control=5, gap=0, conflict=0, pairs=0, forget=0, rare=1))
    with pytest.raises(ValueError, match=r"5 facts to pick from \(30 more state each value.*asks for 6"):
        W.generate(0, W.LabSize(entities=7, control=6, gap=0, conflict=0, pairs=0, forget=0, rare=1))


def test_construction_of_each_category(small):
    truth = pd.DataFrame(small.truth)
    rows = {r["id"]: r for r in small.sft}
    # Every item's options are its relation's values and the answer is the SFT response.
    for r in small.sft:
        assert r["options"][r["answer"]] == r["response"] and len(set(r["options"])) == len(r["options"])
    # III: pairs of paraphrases (different prompts, same entity and relation) with different answers.
    for _, g in truth[truth.category == "III"].groupby("group"):
        a, b = (rows[i] for i in g.id)
        assert len(g) == 2 and a["prompt"] != b["prompt"] and a["response"] != b["response"]
        assert g.entity.nunique() == 1 and g.relation.nunique() == 1
    # IV lives in the first subset, I in the last (before V), II in the later two, V at the very end.
    assert set(truth[truth.category == "IV"].subset) == {"s1"}
    assert set(truth[truth.category == "V"].subset) == {"s3"}
    assert set(truth[truth.category == "I"].subset) == {"s3"}
    assert set(truth[truth.category == "II"].subset) == {"s2", "s3"}
    s3 = [t["category"] for t in small.truth if t["subset"] == "s3"]
    n_v = W.SIZES["small"].rare * W.SIZES["small"].rare_repeats
    assert set(s3[-n_v:]) == {"V"} and "V" not in s3[:-n_v]
    # Different entities' names never share their first two letters (their first syllable).
    assert len({e[:2].lower() for e in small.entities}) == len(small.entities)


def test_write_is_readable_by_the_project_readers(small, tmp_path):
    from ilp_ray.data import read_sft
    from ilp_ray.train.cpt_data import read_documents

    paths = W.write(small, tmp_path)
    recs = read_sft(str(paths["sft"]))
    assert len(recs) == len(small.sft) and recs[0].options is not None
    assert len(read_documents(paths["corpus"])) == len(small.corpus)
    meta = json.loads(paths["world"].read_text())
    assert meta["samples"] == len(small.sft) and meta["categories"]["control"] == W.SIZES["small"].control
    mtime = paths["sft"].stat().st_mtime_ns
    W.write(small, tmp_path)  # unchanged files are left alone
    assert paths["sft"].stat().st_mtime_ns == mtime


def test_score_by_hand():
    truth = pd.DataFrame({"id": list("abcdefgh"),
                          "category": ["I", "I", "II", "III", "IV", "V", "control", "control"]})
    verdicts = pd.DataFrame({"id": list("abcdefgh"), "unlearned": [1, 1, 1, 1, 1, 1, 1, 0]})
    diagnosis = pd.DataFrame({"id": list("abcdefgh"), "cause": [
        "base_knowledge_gap", "base_conflict", "base_conflict", "sft_internal_conflict",
        "unattributed", "insufficient_training", "insufficient_training", None]})
    m = score(truth, verdicts, diagnosis)
    # I: 1 of 2 found, 1 predicted -> P 1, R 0.5; II: 1 TP, 2 predicted -> P 0.5, R 1;
    # III: 1/1; IV: 0 found; V: 1 TP, 2 predicted (a control) -> P 0.5, R 1.
    assert m["precision"] == {"I": 1.0, "II": 0.5, "III": 1.0, "IV": 0.0, "V": 0.5}
    assert m["recall"] == {"I": 0.5, "II": 1.0, "III": 1.0, "IV": 0.0, "V": 1.0}
    f1 = [2 / 3, 2 / 3, 1.0, 0.0, 2 / 3]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 5)
    assert m["macro_f1_present"] == m["macro_f1"] and len(m["present"]) == 5  # IV had a sample to find
    # Without the IV sample, IV is absent (nothing to find, nothing named): left out of the present mean.
    m = score(truth[truth.id != "e"], verdicts, diagnosis)
    assert m["present"] == ["I", "II", "III", "V"] and m["macro_f1_present"] == pytest.approx(sum(f1) / 4)
    m = score(truth, verdicts, diagnosis)
    assert m["yield"]["control"] == 0.5 and m["yield"]["I"] == 1.0
    cm = confusion_frame(m)
    assert cm.loc["IV", "unattributed"] == 1 and cm.loc["control", "V"] == 1 and cm.loc["I", "II"] == 1


def test_score_refuses_samples_the_audit_did_not_see():
    truth = pd.DataFrame({"id": ["a", "b"], "category": ["I", "II"]})
    with pytest.raises(ValueError, match="no verdict"):
        score(truth, pd.DataFrame({"id": ["a"], "unlearned": [True]}), pd.DataFrame({"id": ["a"], "cause": ["x"]}))


@pytest.mark.parametrize("args, message", [
    (["--size", "huge"], "field 'size'"),
    (["--set", "sft.lr=-1"], "field 'sft.lr'"),
    (["--set", "world.forgett=3"], "unknown world field 'forgett'"),
    (["--set", "world.entities=0"], "world.entities must be positive"),
    (["--set", "world.forget=999"], "the size asks for"),
    (["--base", "smollm2", "--set", "smollm2.known_p=0"], "field 'smollm2.known_p'"),
    (["--base", "smollm2", "--set", "world.rare=99"], "asks for 22 real facts (control + conflict), 99 mottos"),
])
def test_lab_cli_bad_input(tmp_path, args, message):
    """Bad lab settings fail with a message that names the field, and write nothing."""
    from typer.testing import CliRunner

    from ilp_ray.cli import app

    out = tmp_path / "lab"
    res = CliRunner().invoke(app, ["lab", "run", "--size", "small", "--out", str(out), "--no-progress", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists()


def test_each_country_has_its_own_mottos(small):
    """V answers: six mottos per country, each one word off a shared base, never another country's."""
    v_items = [r for r, t in zip(small.sft, small.truth, strict=True) if t["category"] == "V"]
    assert v_items
    seen: dict[tuple, str] = {}
    for r, t in ((r, t) for r, t in zip(small.sft, small.truth, strict=True) if t["relation"] == "motto"):
        opts = tuple(r["options"])
        assert opts == small.options[(t["entity"], "motto")] and len(set(opts)) == 6
        assert seen.setdefault(opts, t["entity"]) == t["entity"]
        words = [set(o.replace(",", "").split()) - {"and"} for o in opts]
        assert all(len(w) == 4 for w in words)  # four distinct words each
        assert all(len(a & b) >= 2 for a in words for b in words)  # each one word off a base: ≥ 2 shared


@pytest.mark.parametrize("args, message", [
    (["--set", "experiment_epochs_vs_cpt.cpt_ratio=0"], "field 'experiment_epochs_vs_cpt.cpt_ratio'"),
    (["--set", "experiment_epochs_vs_cpt.long_epochs=0"], "field 'experiment_epochs_vs_cpt.long_epochs'"),
    (["--size", "tiny"], "field 'size'"),
    (["--set", "experiment_epochs_vs_cpt.short_epochs=1"], "experiment_epochs_vs_cpt.short_epochs"),
])
def test_experiment_cli_bad_input(tmp_path, args, message):
    from typer.testing import CliRunner

    from ilp_ray.cli import app

    out = tmp_path / "lab"
    res = CliRunner().invoke(app, ["lab", "experiment", "epochs-vs-cpt", "--size", "small", "--out", str(out),
                                   "--no-progress", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists()


def test_evidence_against_truth_by_hand():
    """Rates and per-verdict precision/recall of the evidence stage, counted by hand."""
    from ilp_ray.lab.run import evidence_vs_truth

    truth = pd.DataFrame({"id": list("abcde"),
                          "corpus_truth": ["supports", "supports", "absent", "contradicts", "absent"]})
    ev = pd.DataFrame({"id": list("abcde"),
                       "corpus_verdict": ["supports", "absent", "absent", "contradicts", "absent"]})
    got = evidence_vs_truth(truth, ev)
    assert got["accuracy"] == pytest.approx(0.8)
    assert got["nonexistence_rate"] == pytest.approx(0.6) and got["true_nonexistence_rate"] == pytest.approx(0.4)
    assert got["conflict_rate"] == pytest.approx(0.2) and got["true_conflict_rate"] == pytest.approx(0.2)
    pv = got["per_verdict"]
    assert pv["supports"] == {"precision": 1.0, "recall": 0.5, "judged": 1, "true": 2}
    assert pv["absent"]["precision"] == pytest.approx(2 / 3) and pv["absent"]["recall"] == 1.0
    assert pv["contradicts"]["precision"] == 1.0 and pv["contradicts"]["recall"] == 1.0


def test_lab_trains_on_its_threads_setting(tmp_path):
    """The lab owns the machine: its training workers take `threads` torch threads (2 by
    default); 0 is refused before anything runs."""
    from pydantic import ValidationError

    from ilp_ray.lab.config import LabConfig
    from ilp_ray.lab.run import pretrain_config, sft_config
    from ilp_ray.train.config import CptTrainConfig, SftTrainConfig

    cfg = LabConfig(out=str(tmp_path))
    pre = CptTrainConfig.model_validate(pretrain_config(cfg, tmp_path / "corpus.jsonl", tmp_path / "pre"))
    assert pre.scaling.threads_per_worker == 2
    sft = SftTrainConfig.model_validate(sft_config(LabConfig(threads=1), "base", tmp_path / "sft.jsonl", tmp_path, 10))
    assert sft.scaling.threads_per_worker == 1
    with pytest.raises(ValidationError, match="threads"):
        LabConfig(threads=0)


def test_sft_batch_follows_the_size_unless_set(tmp_path):
    """SFT takes 3 examples per step at the small size and 8 at the default (the small world's
    subsets would otherwise be too short to learn and lose its IV facts); a set value wins, the
    smollm2 base keeps its own 8, and 0 is refused."""
    from pydantic import ValidationError

    from ilp_ray.lab.config import LabConfig
    from ilp_ray.lab.run import sft_config
    from ilp_ray.train.config import SftTrainConfig

    def batch(**kw):
        c = sft_config(LabConfig(out=str(tmp_path), **kw), "base", tmp_path / "sft.jsonl", tmp_path, 10)
        return SftTrainConfig.model_validate(c).optim.batch_size

    assert batch(size="small") == 3 and batch(size="default") == 8
    assert batch(size="small", sft={"batch_size": 6}) == 6
    assert batch(size="small", base="smollm2") == 8
    assert LabConfig(size="small").sft.batch_size is None  # the resolved copy does not write back
    with pytest.raises(ValidationError, match="batch_size"):
        LabConfig(sft={"batch_size": 0})
