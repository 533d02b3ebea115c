"""The base model asked (``ilp_ray.diagnosis.beliefs``): its own answers decide II and I on built items."""

import json

import numpy as np
import pandas as pd
import pytest

from ilp_ray.diagnosis import beliefs as B
from ilp_ray.diagnosis.base import DETECTORS

from .conftest import verdict_row

SAME = B.Sameness(short_words=3, same_cosine=0.85)


def test_normalise_and_sameness_of_short_answers():
    assert B.normalise('  "DK."\n') == "dk"
    assert B.normalise("The  code is\tDK!") == "the code is dk"
    assert SAME("dk", "dk", None, None)
    assert SAME("dk", "the code is dk", None, None)        # short, inside the other word for word
    assert not SAME("dk", "the code is dkk", None, None)   # not a word of it
    assert not SAME("dk", "dn", None, None)
    assert not SAME("", "dk", None, None)
    # Two long answers: the embedding decides, at same_cosine inclusive.
    a, b = "a stream of water", "a small stream of water"
    e = np.array([1.0, 0.0])
    assert SAME(a, b, e, np.array([0.85, np.sqrt(1 - 0.85 ** 2)]))
    assert not SAME(a, b, e, np.array([0.84, np.sqrt(1 - 0.84 ** 2)]))
    assert not SAME(a, b, None, None)


def test_summarise_shares_by_hand():
    # 10 answers: 6 say "rus", 2 the SFT's "fin", 2 others.
    answers = ["rus"] * 5 + ["it is rus", "fin", "fin", "eng", ""]
    s = B.summarise(answers, "FIN", SAME, {}, min_share=0.5, knows_share=0.2)
    assert s["modal"] == "rus" and s["modal_share"] == 0.6
    assert s["label_share"] == 0.2
    assert s["holds"] and s["knows"]        # holds "rus"; produces "fin" in 2 of 10 (= knows_share)
    s = B.summarise(answers, "FIN", SAME, {}, min_share=0.61, knows_share=0.21)
    assert not s["holds"] and not s["knows"]
    # The modal answer being the SFT's own is no conflict.
    s = B.summarise(["fin"] * 7 + ["rus"] * 3, "fin", SAME, {}, min_share=0.5, knows_share=0.2)
    assert s["modal"] == "fin" and s["modal_share"] == 0.7 and not s["holds"] and s["knows"]
    # Scattered guesses hold nothing.
    s = B.summarise(["ab", "cd", "ef", "gh", "ab"], "zz", SAME, {}, min_share=0.5, knows_share=0.2)
    assert s["modal_share"] == 0.4 and not s["holds"] and not s["knows"]


def test_shot_pool_never_shows_the_answer_asked_for():
    prompts = ["code of Denmark?", "code of Spain?", "code of Denmark?", "code of Peru?", "code of Chad?"]
    responses = ["DK", "ES", "DN", "DK", "TD"]
    nb = np.array([[0, 2, 3, 1, 4]])  # row 0's neighbours, nearest first (itself included)
    # Not itself, not its own prompt (row 2) and not its own response (row 3).
    assert B.shot_pool(nb, prompts, responses, 0, pool=8) == [1, 4]
    assert B.shot_pool(nb, prompts, responses, 0, pool=1) == [1]


def test_render_prompt_layouts():
    shots = [("Code of Spain?", "ES"), ("Code of Peru?", "PE")]
    assert B.render_prompt("Code of Chad?", shots, "lm-eval", None) == (
        "Question: Code of Spain?\nAnswer: ES\n\nQuestion: Code of Peru?\nAnswer: PE\n\nQuestion: Code of Chad?\nAnswer:")
    assert B.render_prompt("Code of Chad?", [], "plain", None) == "Code of Chad?\n"

    class Tok:
        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return json.dumps(msgs)
    msgs = json.loads(B.render_prompt("Code of Chad?", shots[:1], "chat", Tok()))
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and msgs[1]["content"] == "ES"


def _asked(rows_holds_knows):
    return pd.DataFrame([{"id": i, "key": i, "answers": ["x"], "label_share": 0.3 if k else 0.0, "modal": "x",
                          "modal_share": 0.8 if h else 0.3, "holds": h, "knows": k}
                         for i, h, k in rows_holds_knows], columns=list(B.COLUMNS))


def _run(name, ctx):
    f = DETECTORS.create(name).run(ctx).frame
    return f[f"is_{name}"].tolist(), f[f"{name}_score"].tolist(), list(f[f"{name}_evidence"])


def test_asked_answers_decide_ii_and_i_where_the_base_was_asked(ctx_factory):
    raised = [0.0, 2.0, 0.0, 0.0]
    confident = [0.05, 0.9, 0.03, 0.02]  # a confident wrong pick the question raised: II by the MC rule
    blind = [0.01, 0.33, 0.33, 0.33]     # wrong everywhere, no confident pick: I by the MC rule
    rows = [verdict_row("mc_ii_not_held", base_probs=confident, base_pmi=raised),
            verdict_row("held_not_picked", base_probs=blind, base_pmi=raised),
            verdict_row("blind_but_knows", base_probs=blind, base_pmi=raised),
            verdict_row("not_asked", base_probs=confident, base_pmi=raised)]
    ctx = ctx_factory(rows)
    ctx.beliefs = _asked([("mc_ii_not_held", False, False), ("held_not_picked", True, False),
                          ("blind_but_knows", False, True)])
    is_ii, score, ev = _run("base_conflict", ctx)
    assert is_ii == [False, True, False, True]
    assert "not_held" in ev[0] and ev[0]["fired_by"] == []
    assert ev[1]["fired_by"] == ["asked"] and ev[1]["asked"]["share"] == 0.8 and score[1] >= 0.8
    assert "pmi" in ev[3]["fired_by"] and "asked" not in ev[3]   # never asked: the MC rule
    ctx._cache.clear()
    is_i, _, ev = _run("base_knowledge_gap", ctx)
    # The MC pick that was not held is a guess: blind (I). Holding another answer is II, not I; a
    # base that produces the SFT answer knows it; the row never asked keeps the MC rule (II).
    assert is_i == [True, False, False, False]
    assert "knows" in ev[2] and ev[2]["asked_sft_answer_share"] == 0.3


def test_ask_says_why_it_did_not_run(ctx_factory, tmp_path):
    from ilp_ray.config import load_config
    from ilp_ray.diagnosis.config import DiagnosisConfig

    built = [verdict_row("a", base_probs=[0.1, 0.9, 0, 0])]
    given = [verdict_row("b", base_probs=[0.1, 0.9, 0, 0], distractor_ids=())]
    assert DiagnosisConfig().beliefs.enabled == "off"  # the default: the MC rules alone
    assert "off" in B.ask(ctx_factory(built), DiagnosisConfig(embedder="hashing"), None)[1]["skipped"]
    cfg = load_config(DiagnosisConfig, None, {"embedder": "hashing", "beliefs.enabled": "auto"})
    assert "no diagnosed sample has an MC item the audit built" in B.ask(ctx_factory(given), cfg, None)[1]["skipped"]
    off = load_config(DiagnosisConfig, None, {"embedder": "hashing", "beliefs.enabled": "off"})
    assert "off" in B.ask(ctx_factory(built), off, None)[1]["skipped"]
    assert "no base model to ask" in B.ask(ctx_factory(built), cfg, tmp_path)[1]["skipped"]
    missing = load_config(DiagnosisConfig, None, {"embedder": "hashing", "beliefs.enabled": "auto",
                                                  "beliefs.model": str(tmp_path / "nope")})
    assert "cannot be loaded here" in B.ask(ctx_factory(built), missing, tmp_path)[1]["skipped"]
    assert "no base model was scored" in B.ask(ctx_factory([verdict_row("c")]), cfg, None)[1]["skipped"]
    lab = load_config(DiagnosisConfig, None, {"preset": "lab"})
    assert lab.beliefs.enabled == "off"


def _facts_ctx(ctx_factory, n_rows=6):
    from tests.conftest import FACTS

    rows = [verdict_row(f"f{i:02d}", question=q, options=(a, "x", "y", "z"), base_probs=[0.1, 0.7, 0.1, 0.1])
            for i, (_, q, a) in enumerate(FACTS[:n_rows])]
    return ctx_factory(rows)


def test_probe_matches_plain_generate_and_resumes_from_its_cache(ctx_factory, tiny_checkpoints, tmp_path,
                                                                monkeypatch):
    """Greedy answers from the batched, left-padded probe equal one-by-one ``generate`` calls on
    the same rendered prompts (a second route); a rerun generates nothing."""
    import torch

    from ilp_ray.config import load_config
    from ilp_ray.diagnosis.config import DiagnosisConfig
    from ilp_ray.models import load_model

    ckpt = str(tiny_checkpoints["base"])
    cfg = load_config(DiagnosisConfig, None, {"embedder": "hashing", "beliefs.model": ckpt,
                                              "beliefs.format": "lm-eval", "beliefs.n": 2, "beliefs.shots": 1,
                                              "beliefs.pool": 2, "beliefs.temperature": 0.0, "beliefs.batch_size": 4,
                                              "beliefs.max_new_tokens": 6})
    ctx = _facts_ctx(ctx_factory)
    table = B.probe(ctx, np.arange(6), cfg.beliefs, ckpt, "lm-eval", tmp_path / "diagnosis")
    assert table["id"].tolist() == ctx.ids and all(len(a) == 2 for a in table["answers"])

    # The second route: the same prompts, one at a time.
    model, tok = load_model(ckpt)
    prompts, responses = ctx.prompts(), ctx.responses()
    _, nb = ctx.prompt_neighbours(min(len(prompts), cfg.beliefs.pool * 2 + 2))
    for r, answers in zip(range(6), table["answers"], strict=True):
        pool = B.shot_pool(nb, prompts, responses, r, cfg.beliefs.pool)
        rng = B.shot_rng(0, ctx.ids[r])
        budget = min(6, 2 * len(tok(responses[r], add_special_tokens=False)["input_ids"]) + 8)
        for j in range(2):
            pick = rng.choice(len(pool), size=1, replace=False)
            text = B.render_prompt(prompts[r], [(prompts[pool[k]], responses[pool[k]]) for k in pick], "lm-eval", tok)
            enc = tok(text, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                g = model.generate(**enc, do_sample=False, max_new_tokens=budget, pad_token_id=tok.pad_token_id)
            want = tok.decode(g[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip().split("\n", 1)[0]
            assert answers[j] == want, (r, j)

    # Resume: the cache answers everything, the model is never loaded again.
    assert (tmp_path / "diagnosis" / "beliefs.parquet").is_file()
    ctx._cache.clear()  # the loaded generator too: a rerun is a new diagnosis
    monkeypatch.setattr(B, "Generator", lambda *a, **k: (_ for _ in ()).throw(AssertionError("generated again")))
    again = B.probe(ctx, np.arange(6), cfg.beliefs, ckpt, "lm-eval", tmp_path / "diagnosis")
    assert again["answers"].tolist() == table["answers"].tolist()
    # A changed setting is a new question: it generates.
    with pytest.raises(AssertionError, match="generated again"):
        B.probe(ctx, np.arange(6), cfg.beliefs.model_copy(update={"n": 3}), ckpt, "lm-eval", tmp_path / "diagnosis")


def test_ask_trusts_the_answers_only_of_a_base_that_produces_what_it_recognises(ctx_factory, tiny_checkpoints,
                                                                               tmp_path):
    """The self-check: a random tiny model recognises (by its MC figures here) what it cannot say,
    so its answers decide nothing and the status says why; with min_recall 0 they are used."""
    from ilp_ray.config import load_config
    from ilp_ray.diagnosis.config import DiagnosisConfig
    from tests.conftest import FACTS

    rows = [verdict_row(f"u{i}", question=q, options=(a, "x", "y", "z"), base_probs=[0.1, 0.7, 0.1, 0.1])
            for i, (_, q, a) in enumerate(FACTS[:3])]
    rows += [verdict_row(f"k{i}", question=q, options=(a, "x", "y", "z"), probs=[0.9, 0.05, 0.03, 0.02],
                         base_probs=[0.9, 0.05, 0.03, 0.02]) for i, (_, q, a) in enumerate(FACTS[3:7])]
    ctx = ctx_factory(rows)
    assert ctx.verdicts["known_by_base"].tolist() == [False] * 3 + [True] * 4
    over = {"embedder": "hashing", "beliefs.enabled": "auto", "beliefs.model": str(tiny_checkpoints["base"]),
            "beliefs.format": "lm-eval",
            "beliefs.n": 2, "beliefs.max_new_tokens": 4}
    table, status = B.ask(ctx, load_config(DiagnosisConfig, None, over), tmp_path)
    assert table is None and status["asked"] == 0 and status["recall_check"]["samples"] == 4
    assert status["recall_check"]["recall"] == 0.0 and "cannot show what it believes" in status["skipped"]
    table, status = B.ask(ctx, load_config(DiagnosisConfig, None, {**over, "beliefs.min_recall": 0.0}), tmp_path)
    assert "skipped" not in status and status["asked"] == 3 and table["id"].tolist() == ["u0", "u1", "u2"]


def test_a_prompt_past_max_length_loses_its_oldest_shots_not_the_question(tiny_checkpoints):
    g = B.Generator(str(tiny_checkpoints["base"]), batch_size=2, max_length=12)
    text = B.render_prompt("What gas do plants absorb?", [("What is the largest planet?", "Jupiter")] * 6, "lm-eval", None)
    ids = g.tok([text], truncation=True, max_length=12, add_special_tokens=False)["input_ids"][0]
    tail = g.tok(text, add_special_tokens=False)["input_ids"][-12:]
    assert len(ids) == 12 and ids == tail
