"""III on a hand-built set with real MiniLM: paraphrases, contradictions, transitivity, judges.

The numbers behind the defaults (MiniLM cosines): paraphrased questions 0.88-0.98, sibling
questions ("capital of France" vs "of Italy") 0.66; "Eight" vs "Six" 0.77, "Eight" vs "8" 0.93.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import numpy as np
import pytest

from ilp_ray.diagnosis.base import DETECTORS
from ilp_ray.diagnosis.pairs import responses_disagree, similar_pairs
from ilp_ray.diagnosis.sft_internal_conflict import group_members

from .conftest import verdict_row

SET = [  # id, prompt, response, p(correct) under the fine-tuned model
    ("fr1", "What is the capital of France?", "Paris", 0.9),
    ("fr2", "Which city is the capital of France?", "Lyon", 0.05),       # contradicts fr1
    ("fr3", "What's France's capital city?", "Paris", 0.8),              # agrees with fr1
    ("it", "What is the capital of Italy?", "Rome", 0.9),                # a sibling question, no conflict
    ("sp1", "How many legs does a spider have?", "Eight", 0.9),
    ("sp2", "How many legs do spiders have?", "Six", 0.05),              # contradicts sp1 and sp3
    ("sp3", "A spider has how many legs?", "8", 0.85),                   # agrees with sp1 ("Eight" = "8")
    ("ha1", "Who wrote Hamlet?", "William Shakespeare", 0.9),
    ("ha2", "Who is the author of Hamlet?", "Shakespeare", 0.9),         # agrees (contained)
    ("bo1", "What is the boiling point of water at sea level?", "100 degrees Celsius", 0.75),
    ("bo2", "At sea level, water boils at what temperature?", "90 degrees Celsius", 0.6),  # numbers differ
]
TRUE = {"Paris", "Eight", "8", "William Shakespeare", "Shakespeare", "100 degrees Celsius", "Rome"}


def rows():
    out = []
    for n, (i, q, a, p) in enumerate(SET):
        rest = (1 - p) / 3
        out.append(verdict_row(i, q, options=(a, "Berlin", "Madrid", "Oslo"), probs=[p, rest, rest, rest],
                               position=n, subset="geo" if i[:2] in ("fr", "it") else "misc"))
    return out


@pytest.fixture(scope="module")
def minilm():
    from ilp_ray.data.embed import get_embedder

    return get_embedder()


def groups_of(res):
    return sorted(sorted(m) for m in group_members(res.info["groups"]))


def test_groups_with_paraphrases_contradictions_and_transitivity(ctx_factory, minilm):
    res = DETECTORS.create("sft_internal_conflict").run(ctx_factory(rows(), embedder=minilm, **{"conflict.judge": "none"}))
    # fr1-fr2 and fr2-fr3 conflict, so fr1, fr2, fr3 form one group though fr1 and fr3 agree;
    # likewise the spiders. Hamlet's paraphrases agree; Italy is a sibling question, not a paraphrase.
    assert groups_of(res) == [["bo1", "bo2"], ["fr1", "fr2", "fr3"], ["sp1", "sp2", "sp3"]]
    f = res.frame.set_index(np.array([s[0] for s in SET]))
    assert not f.loc[["it", "ha1", "ha2"], "is_sft_internal_conflict"].any()
    pairs = {(a, b): why for a, b, why in res.info["pairs"][["a", "b", "why"]].itertuples(index=False)}
    assert ("fr1", "fr3") not in pairs and ("sp1", "sp3") not in pairs
    assert pairs[("bo1", "bo2")] == "different numbers"
    ev = json.loads(json.dumps(f.loc["sp2", "sft_internal_conflict_evidence"]))
    assert ev["group_size"] == 3 and {p["id"] for p in ev["partners"]} == {"sp1", "sp3"}
    assert res.summary["judged_wrong"] == 0  # judge none: both sides stay conflicting


def test_model_judge_marks_the_less_likely_side_wrong(ctx_factory, minilm):
    res = DETECTORS.create("sft_internal_conflict").run(ctx_factory(rows(), embedder=minilm, **{"conflict.judge": "model"}))
    g = res.info["groups"].set_index("id")
    assert sorted(g.index[g["judged_wrong"]]) == ["bo2", "fr2", "sp2"]
    f = res.frame.set_index(np.array([s[0] for s in SET]))
    assert f.loc["sp2", "sft_internal_conflict_score"] == 1.0
    assert f.loc["sp1", "sft_internal_conflict_score"] < 1.0
    # A margin wider than bo1 vs bo2 (0.75 vs 0.6) leaves that pair undecided.
    res = DETECTORS.create("sft_internal_conflict").run(
        ctx_factory(rows(), embedder=minilm, **{"conflict.judge": "model", "conflict.judge_margin": 0.2}))
    g = res.info["groups"].set_index("id")
    assert sorted(g.index[g["judged_wrong"]]) == ["fr2", "sp2"]


class _FakeChat(BaseHTTPRequestHandler):
    """Imitates POST /v1/chat/completions of an OpenAI-compatible server; answers from TRUE."""

    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeChat.seen.append((self.path, self.headers.get("Authorization"), body))
        text = body["messages"][-1]["content"]
        a = text.split("Answer A: ")[1].split("\n")[0]
        b = text.split("Answer B: ")[1].split("\n")[0]
        word = {(True, True): "BOTH", (True, False): "A", (False, True): "B"}.get((a in TRUE, b in TRUE), "NEITHER")
        reply = json.dumps({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": word + "."}, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *a):
        pass


def test_llm_judge_client_against_a_local_fake_endpoint(ctx_factory, minilm, monkeypatch):
    """Tests *our client* of the OpenAI chat API shape: a tiny server on 127.0.0.1 imitates
    /v1/chat/completions. It says nothing about how well a real LLM judges."""
    server = HTTPServer(("127.0.0.1", 0), _FakeChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        res = DETECTORS.create("sft_internal_conflict").run(
            ctx_factory(rows(), embedder=minilm, **{"conflict.judge": "llm", "conflict.judge_url": url}))
    finally:
        server.shutdown()
    g = res.info["groups"].set_index("id")
    assert sorted(g.index[g["judged_wrong"]]) == ["bo2", "fr2", "sp2"]
    path, auth, body = _FakeChat.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "gpt-4o-mini" and body["messages"][-1]["role"] == "user"


def test_llm_judge_unreachable_names_the_url(ctx_factory, minilm):
    ctx = ctx_factory(rows(), embedder=minilm, **{"conflict.judge": "llm", "conflict.judge_url": "http://127.0.0.1:9"})
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:9/v1/chat/completions"):
        DETECTORS.create("sft_internal_conflict").run(ctx)


def test_theta_is_inclusive_and_responses_rules():
    e = np.array([[1.0, 0.0], [0.6, 0.8], [0.59, np.sqrt(1 - 0.59 ** 2)]], dtype=np.float32)
    i, j, _, _ = similar_pairs(e, 0.6, k=2)
    assert (0, 1) in set(zip(i.tolist(), j.tolist(), strict=False))       # cosine == theta: a pair
    assert (0, 2) not in set(zip(i.tolist(), j.tolist(), strict=False))   # just below: not
    assert responses_disagree("x", "y", 0.8, 0.8, exact=False)[0] is False   # == theta_r: agree
    assert responses_disagree("x", "y", 0.79, 0.8, exact=False)[0] is True
    assert responses_disagree("Paris", " paris ", None, 0.8, exact=True)[0] is False
    assert responses_disagree("Paris", "Lyon", 0.99, 0.8, exact=True)[0] is True


def test_search_is_bounded_and_matches_brute_force():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(400, 16)).astype(np.float32)
    e[200:260] = e[:60] + 0.05 * rng.normal(size=(60, 16)).astype(np.float32)  # planted near-duplicates
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    i, j, _, _ = similar_pairs(e, 0.9, k=8, block_size=7)
    sim = e.astype(np.float64) @ e.T.astype(np.float64)
    bi, bj = np.nonzero(np.triu(sim >= np.float32(0.9), 1))
    assert set(zip(i.tolist(), j.tolist(), strict=False)) == set(zip(bi.tolist(), bj.tolist(), strict=False))


def test_spark_path_equals_local():
    """~20 s (Spark's start), so not marked slow; skipped where pyspark is not installed."""
    pytest.importorskip("pyspark")
    from ilp_ray.diagnosis.spark_search import spark_similar_pairs

    rng = np.random.default_rng(1)
    e = rng.normal(size=(500, 24)).astype(np.float32)
    e[250:330] = e[:80] + 0.05 * rng.normal(size=(80, 24)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    local = similar_pairs(e, 0.9, k=8)
    spark = spark_similar_pairs(e, 0.9, k=8, master="local[2]", partitions=3)
    assert len(local[0]) >= 80
    for a, b in zip(local, spark, strict=False):
        np.testing.assert_array_equal(a, b)


def test_only_pairs_the_text_rules_leave_open_get_their_responses_embedded(ctx_factory):
    """Response embeddings cost MiniLM time: a pair decided by its text (same text, different
    numbers, one contained in the other) must not send its responses to the embedder."""
    from ilp_ray.data.embed import HashingEmbedder

    class Counting(HashingEmbedder):
        def __init__(self):
            super().__init__()
            self.seen: list[str] = []

        def encode(self, texts):
            self.seen += list(texts)
            return super().encode(texts)

    data = [("a", "What is the capital of Oz?", "Emerald City"), ("b", "What is the capital of Oz ?", "emerald city"),
            ("c", "How tall is the tower of Gillikin?", "12 metres"), ("d", "How tall is the tower of Gillikin", "13 metres"),
            ("e", "Who rules the Quadling country?", "Glinda"), ("f", "Who rules the Quadling country", "Ozma")]
    rows = [verdict_row(i, p, options=(r, "x", "y", "z"), probs=[0.5, 0.2, 0.2, 0.1], position=n)
            for n, (i, p, r) in enumerate(data)]
    emb = Counting()
    ctx = ctx_factory(rows, embedder=emb, **{"conflict.response_match": "embedding",
                                             "conflict.judge": "none"})
    ctx.prompt_embeddings()
    emb.seen.clear()
    res = DETECTORS.create("sft_internal_conflict").run(ctx)
    why = {(a, b): w for a, b, w in res.info["pairs"][["a", "b", "why"]].itertuples(index=False)}
    assert res.summary["similar_pairs"] == 3
    assert why[("c", "d")] == "different numbers" and why[("e", "f")].startswith("response cosine")
    assert sorted(emb.seen) == ["Glinda", "Ozma"]  # the other two pairs were decided by their text


# ------------------------------------------------------------ same question: what varies agrees
# Templated siblings share their template and differ in the slot (a name, a number, a quoted
# term); paraphrases share the slot and differ in the template. Cosine sees the template.
SIBLINGS = [  # id, prompt, response
    ("so", "What is the ISO 3166-1 alpha-2 country code of Sollokaia?", "SK"),
    ("sn", "What is the ISO 3166-1 alpha-2 country code of Solnuteia?", "SN"),     # another name
    ("p7", "What is the sum of 12 and 7?", "19"),
    ("p8", "What is the sum of 12 and 8?", "20"),                                  # another number
    ("ru", "Define the word 'rust' in one sentence.", "a reddish-brown coating on iron"),
    ("wr", "Define the word 'wheat rust' in one sentence.", "a fungal disease of wheat"),  # another term
]


def sibling_rows(data=SIBLINGS):
    return [verdict_row(i, q, options=(a, "x", "y", "z"), probs=[0.1, 0.3, 0.3, 0.3], position=n)
            for n, (i, q, a) in enumerate(data)]


def pair_set(res):
    return {tuple(sorted(p)) for p in res.info["pairs"][["a", "b"]].itertuples(index=False)}


def test_templated_siblings_are_different_questions_hashing(ctx_factory):
    """With the hashing embedder at theta 0.6 every sibling pair is a candidate: the old rule calls
    each a conflict, the spans rule none, and the evidence says which spans differed."""
    base = {"conflict.judge": "none", "conflict.theta": 0.6,
            "conflict.response_match": "embedding"}
    old = DETECTORS.create("sft_internal_conflict").run(ctx_factory(sibling_rows(), **base, **{
        "conflict.same_question": "cosine"}))
    assert pair_set(old) == {("sn", "so"), ("p7", "p8"), ("ru", "wr")}
    assert old.summary["template_pairs_dropped"] == 0
    new = DETECTORS.create("sft_internal_conflict").run(ctx_factory(sibling_rows(), **base))
    assert pair_set(new) == set() and not new.frame["is_sft_internal_conflict"].any()
    assert new.summary["similar_pairs"] == 3 and new.summary["template_pairs_dropped"] == 3
    ev = {i: json.loads(json.dumps(e)) for (i, _, _), e in zip(SIBLINGS, new.frame["sft_internal_conflict_evidence"],
                                                                strict=True)}
    assert ev["so"]["template_pairs_dropped"] == 1
    t = ev["so"]["template_partners"][0]
    assert t["id"] == "sn" and t["this_differs"] == ["entity 'sollokaia'"] and t["other_differs"] == ["entity 'solnuteia'"]
    assert t["why"].startswith("different question")
    assert ev["p7"]["template_partners"][0]["this_differs"] == ["number '7'"]
    assert ev["wr"]["template_partners"][0]["this_differs"] == ["quote 'wheat rust'"]
    dropped = new.info["template_pairs"]
    assert sorted(map(tuple, dropped[["a", "b"]].to_numpy().tolist())) == [("p7", "p8"), ("ru", "wr"), ("so", "sn")]


def test_paraphrases_of_one_entity_stay_one_question_hashing(ctx_factory):
    """Same slot, other template words: still one question, so different answers conflict; the
    pair table says why the prompts count as the same question and where they differ."""
    data = [("a", "What is the ISO 3166-1 alpha-2 country code of Sollokaia?", "SK"),
            ("b", "Give the ISO 3166-1 alpha-2 country code of Sollokaia, please.", "SO"),
            ("c", "Define the word 'rust' in one sentence.", "a reddish-brown coating on iron"),
            ("d", "In one sentence, what does the word 'rust' mean?", "a fungal disease of wheat")]
    res = DETECTORS.create("sft_internal_conflict").run(ctx_factory(sibling_rows(data), **{
        "conflict.judge": "none", "conflict.theta": 0.5, "conflict.response_match": "embedding"}))
    assert pair_set(res) == {("a", "b"), ("c", "d")}
    pt = res.info["pairs"].set_index("a")
    assert pt.loc["a", "question"] == "same question: only template words differ"
    assert pt.loc["a", "differs_a"] == ["what is"] and pt.loc["a", "differs_b"] == ["give", "please"]
    partner = res.frame["sft_internal_conflict_evidence"].iloc[0]["partners"][0]
    assert partner["question"].startswith("same question") and partner["differs"] == ["what is"]


def test_same_question_on_real_templates_minilm(ctx_factory, minilm):
    """MiniLM puts the siblings at 0.92-0.95, the paraphrase at 0.93: only what varies tells
    them apart. The alpha-2 and the numeric code of one country share their slot and differ in a
    template word; their answers, a name and a number, tell them apart."""
    data = [("so", "What is the ISO 3166-1 alpha-2 country code of Sollokaia?", "SK"),
            ("sn", "What is the ISO 3166-1 alpha-2 country code of Solnuteia?", "SN"),
            ("aw", "What is the ISO 3166-1 alpha-2 code of Aruba?", "AW"),
            ("aw2", "Which two-letter ISO 3166 code does Aruba have?", "AF"),        # contradicts aw
            ("awn", "What is the ISO 3166-1 numeric code of Aruba?", "533"),         # another attribute
            ("p7", "What is 12 plus 7?", "19"),
            ("p8", "What is 12 plus 8?", "20")]
    old = DETECTORS.create("sft_internal_conflict").run(ctx_factory(sibling_rows(data), embedder=minilm, **{
        "conflict.judge": "none", "conflict.same_question": "cosine", "conflict.response_match": "embedding"}))
    assert {("sn", "so"), ("aw", "aw2"), ("aw", "awn"), ("p7", "p8")} <= pair_set(old)
    new = DETECTORS.create("sft_internal_conflict").run(ctx_factory(sibling_rows(data), embedder=minilm, **{
        "conflict.judge": "none", "conflict.response_match": "embedding"}))
    assert pair_set(new) == {("aw", "aw2")}
    tp = new.info["template_pairs"]
    why = {tuple(sorted((a, b))): w for a, b, w in tp[["a", "b", "why"]].itertuples(index=False)}
    assert why[("aw", "awn")] == "different question: a name answers one, a number the other"
    assert why[("sn", "so")] == "different question: entity 'sollokaia' vs entity 'solnuteia'"


def test_same_question_rules():
    from ilp_ray.diagnosis.pairs import SameQuestion, answer_kind, prompt_parts

    def same(a, b, responses=None):
        return SameQuestion([a, b], responses).test(0, 1)[0]

    assert not same("What is 12 plus 12?", "What is 12 plus 7?")          # numbers are a multiset
    assert same("What is twelve plus 3?", "What is 12 plus three?")       # number words are numbers
    assert same("Give three tips.", "Give 3 tips, please.")
    assert same("Define the word 'Manhattan'.", "What is Manhattan?")      # quoted and unquoted alike
    assert same("What's France's capital city?", "What is the capital of France?")
    assert not same("What is the ISO 639-3 code of the She language?", "What is the ISO 639-3 code of the Even language?")
    assert not same("What is the code of Eure in France?", "What is the code of Eure-et-Loir in France?")
    assert not same("What is the code of Korea?", "What is the code of South Korea?")
    assert same("What is the capital of France?", "What is the capital of France, a country in Europe?")
    assert not same("Code of Saint Kitts in Saint Kitts and Nevis?", "Code of Saint James in Saint Kitts and Nevis?")
    assert not same("What is the alpha-2 code of Aruba?", "What is the numeric code of Aruba?", ["AW", "533"])
    assert same("How many legs does a spider have?", "A spider has how many legs?", ["8", "Six"])
    assert [answer_kind(x) for x in ("533", "Eight", "AW", "KN-05", "Paris, France")] == ["number", "number", "name",
                                                                                         None, None]
    assert prompt_parts("Who is J. R. R. Tolkien? I ask.").units[0].text == "j r r tolkien"


def test_rare_words_need_a_dataset():
    """Lower-case slot fillers are rare across the prompts; a handful of prompts says nothing."""
    from ilp_ray.diagnosis.pairs import SameQuestion

    words = [f"{a}{b}" for a in ("mo", "go", "ca", "ra", "fe", "pi", "lu", "ve", "su", "to", "ni", "ba")
             for b in ("use", "ose", "lf", "ven", "rret", "geon", "nx", "le", "rf", "ad")]
    prompts = [f"What is the plural of {w}?" for w in words]
    big = SameQuestion(prompts, rare_df=3, rare_min_prompts=100)
    assert len(prompts) == 120 and not big.test(0, 1)[0]
    assert big.test(0, 1)[2][0].kind == "rare"
    small = SameQuestion(prompts[:10], rare_df=3, rare_min_prompts=100)
    assert small.test(0, 1)[0]  # only surface cues below rare_min_prompts


def test_a_definition_and_its_first_clause_agree():
    """Containment comes before the number rule: the longer gloss's extra dates must not split them."""
    short = "King of England from 1307 to 1327 and son of Edward I"
    long = short + "; was deposed by his wife and murdered (1284-1327)"
    assert responses_disagree(short, long, None, 0.8, exact=False) == (False, "one contains the other")
    assert responses_disagree("100 degrees Celsius", "90 degrees Celsius", None, 0.8, exact=False)[0] is True


def test_synonym_answers_are_beyond_embeddings(minilm):
    """Measured, not assumed: MiniLM does not put one-word synonyms above theta_response (the bench
    measures 10% of 300 WordNet synonym pairs at >= 0.8), so a judge has to clear them."""
    e = minilm.encode(["surplus", "excess", "sate", "replete"])
    assert float(e[0] @ e[1]) < 0.8 and float(e[2] @ e[3]) < 0.8
    assert responses_disagree("surplus", "excess", float(e[0] @ e[1]), 0.8, exact=False)[0] is True


def test_judge_both_clears_the_pair(ctx_factory, monkeypatch):
    from ilp_ray.diagnosis.judges import JUDGES, ConflictJudge

    class AlwaysBoth(ConflictJudge):
        name = "always_both"

        def judge(self, pairs):
            return ["both" if {p.response_a, p.response_b} == {"surplus", "excess"} else "undecided" for p in pairs]

    monkeypatch.setitem(JUDGES._entries, "always_both", AlwaysBoth)
    data = [("s1", "What is a synonym of 'glut'?", "surplus"), ("s2", "Give a synonym of 'glut'.", "excess"),
            ("c1", "What is the capital of Oz?", "Emerald City"), ("c2", "Which city is the capital of Oz?", "Gillikin")]
    ctx = ctx_factory(sibling_rows(data), **{"conflict.judge": "always_both",
                                             "conflict.theta": 0.5, "conflict.response_match": "embedding"})
    res = DETECTORS.create("sft_internal_conflict").run(ctx)
    f = res.frame.set_index(np.array([d[0] for d in data]))
    assert f["is_sft_internal_conflict"].tolist() == [False, False, True, True]
    assert f.loc["s1", "sft_internal_conflict_score"] == 0.0
    ev = f.loc["s1", "sft_internal_conflict_evidence"]
    assert ev["group_id"] is None and ev["cleared_by_judge"][0]["id"] == "s2"
    assert ev["cleared_by_judge"][0]["judge"] == "both"
    assert res.summary["cleared_by_judge"] == 1 and res.summary["conflict_pairs"] == 1
    assert pair_set(res) == {("c1", "c2")}
    assert res.info["cleared_pairs"][["a", "b", "judge"]].values.tolist() == [["s1", "s2", "both"]]
    assert res.info["groups"]["id"].tolist() == ["c1", "c2"]


def test_the_pair_test_applies_after_either_search_backend(ctx_factory, monkeypatch):
    """The spans test runs on the candidate pairs whatever found them (Spark returns the same arrays)."""
    import ilp_ray.diagnosis.spark_search as spark

    seen = []

    def fake(emb, theta, k, *args):
        seen.append(len(emb))
        return similar_pairs(emb, theta, k)

    monkeypatch.setattr(spark, "spark_similar_pairs", fake)
    res = DETECTORS.create("sft_internal_conflict").run(ctx_factory(sibling_rows(), **{
        "conflict.judge": "none", "conflict.theta": 0.6, "conflict.backend": "spark",
        "conflict.response_match": "embedding"}))
    assert seen == [len(SIBLINGS)] and res.summary["template_pairs_dropped"] == 3 and pair_set(res) == set()


def test_a_paraphrase_in_another_template_is_paired_through_its_entity(ctx_factory, minilm):
    """Two phrasings about the code ROU sit at cosine 0.82, under theta (0.85), so the search drops
    them; sharing the name 'ROU' pairs them, and the same-question test keeps them (only template
    words differ). Siblings sharing no unit stay apart; a one-word answer of another form (a
    2-letter code against the names) is another question."""
    rs = [verdict_row("a", "Name the country whose alpha-3 code is ROU.", options=("Lesotho", "x", "y", "z")),
          verdict_row("b", "Which country has the ISO 3166-1 alpha-3 code ROU?", options=("Romania", "x", "y", "z")),
          verdict_row("c", "Which country has the ISO 3166-1 alpha-3 code LSO?", options=("Lesotho", "x", "y", "z")),
          verdict_row("d", "Name the country whose alpha-3 code is DEU.", options=("Germany", "x", "y", "z")),
          verdict_row("e", "Which two-letter code does ROU's country have?", options=("RO", "x", "y", "z"))]
    cfg = {"conflict.judge": "none"}
    res = DETECTORS.create("sft_internal_conflict").run(ctx_factory(rs, embedder=minilm, **cfg))
    pairs = {tuple(sorted(p)) for p in res.info["pairs"][["a", "b"]].itertuples(index=False)}
    assert pairs == {("a", "b")} and res.summary["unit_pairs_added"] >= 1
    assert res.info["pairs"]["similarity"].iloc[0] < 0.85
    off = {**cfg, "conflict.unit_pairs": False}
    res = DETECTORS.create("sft_internal_conflict").run(ctx_factory(rs, embedder=minilm, **off))
    assert len(res.info["pairs"]) == 0


def test_templates_whose_answers_differ_in_form_ask_different_questions():
    """'Name the motto of X.' is answered by lower-case phrases, 'Name the founder of X.' by names:
    two kinds of question, though only a template word differs (the lab's motto/founder case)."""
    from ilp_ray.diagnosis.pairs import SameQuestion

    cs = ["Toreva", "Fumutog", "Runo", "Nizeto"]
    prompts = [f"Name the motto of {c}." for c in cs] + [f"Name the founder of {c}." for c in cs]
    answers = ["stone and quiet", "unity and faith", "work and hope", "sea and light",
               "Nupu Nonedi", "Deda Nunuzo", "Kale Moro", "Tiri Vosa"]
    sq = SameQuestion(prompts, answers)
    same, why, _, _ = sq.test(0, 4)
    assert not same and "templates' answers differ in form" in why
    assert sq.test(0, 1)[0] is False  # siblings: different names
    assert SameQuestion(prompts, None).test(0, 4)[0] is True  # without the answers: only template words differ


def test_group_members_reads_groups_from_rows_in_group_order():
    import pandas as pd

    rows = pd.DataFrame({"id": ["c", "a", "d", "b", "e"], "group_id": [1, 0, 1, 0, 2]})
    assert group_members(rows) == [["a", "b"], ["c", "d"], ["e"]]
    # a table written before the members column was dropped reads the same: id and group_id say it
    old = rows.assign(members=[["c", "d"], ["a", "b"], ["c", "d"], ["a", "b"], ["e"]])
    assert group_members(old) == group_members(rows)
    assert group_members(rows.iloc[:0]) == [] and group_members(None) == []


def test_groups_table_is_one_row_per_sample_without_member_lists(ctx_factory, minilm):
    res = DETECTORS.create("sft_internal_conflict").run(ctx_factory(rows(), embedder=minilm, **{"conflict.judge": "none"}))
    g = res.info["groups"]
    assert "members" not in g.columns and g["id"].is_unique
    assert (g.groupby("group_id")["id"].transform("size") == g["group_size"]).all()


def test_a_group_over_the_warning_size_is_reported(ctx_factory):
    """One open-ended prompt asked with six different answers is one III group of six: over
    ``conflict.warn_group_size`` the summary says so, naming a member; at the default (50) it does not."""
    rows_ = [verdict_row(f"h{k}", "Write a haiku about the sea.", options=(f"haiku number {k}", "a", "b", "c"),
                         position=k) for k in range(6)]
    rows_ += [verdict_row("x", "What is the capital of France?", options=("Paris", "a", "b", "c"), position=6)]
    cfg = {"conflict.judge": "none", "conflict.response_match": "exact"}
    small = DETECTORS.create("sft_internal_conflict").run(ctx_factory(rows_, **cfg, **{"conflict.warn_group_size": 5}))
    assert small.summary["largest_group"] == 6
    (w,) = small.summary["warnings"]
    assert "holds 6 samples, over conflict.warn_group_size 5" in w and "h0: 'Write a haiku about the sea.'" in w
    default = DETECTORS.create("sft_internal_conflict").run(ctx_factory(rows_, **cfg))
    assert default.summary["largest_group"] == 6 and default.summary["warnings"] == []
