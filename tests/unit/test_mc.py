"""MC conversion (paper 3.1.1): option layout, neighbour choice, exclusions, errors, blocked search."""

from __future__ import annotations

import numpy as np
import pytest

from ilp_ray.data import Embedder, HashingEmbedder, build_mc_items
from ilp_ray.data.mc import normalize_text
from ilp_ray.errors import DataError
from ilp_ray.neighbours import self_topk_neighbours, topk_neighbours
from ilp_ray.records import McItem, SftRecord


class FixedEmbedder:
    """Embeds each text as a given vector, so cosines in a test are exact and obvious."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = {normalize_text(t): np.asarray(v, dtype=np.float32) for t, v in vectors.items()}

    def encode(self, texts):
        out = np.stack([self.vectors[normalize_text(t)] for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _recs(responses, subsets=None) -> list[SftRecord]:
    subsets = subsets or ["default"] * len(responses)
    return [SftRecord(id=f"r{i}", prompt=f"question {i}?", response=t, subset=s, position=i)
            for i, (t, s) in enumerate(zip(responses, subsets))]


def _distractors(item: McItem) -> list[str]:
    return [o for j, o in enumerate(item.options) if j != item.answer]


_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda",
          "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=6)) + f" {i}" for i in range(n)]


@pytest.fixture(scope="module")
def minilm():
    return Embedder(batch_size=32)


def test_answer_is_response_and_ids_align():
    recs = _recs(_random_texts(40))
    items = build_mc_items(recs, k=4, embedder=HashingEmbedder())
    by_id = {r.id: r for r in recs}
    for r, it in zip(recs, items):
        assert (it.id, it.question, it.subset, it.position) == (r.id, r.prompt, r.subset, r.position)
        assert len(it.options) == 4 and it.options[it.answer] == r.response
        assert len(set(it.options)) == 4 and r.id not in it.distractor_ids
        # distractor_ids[j] is the record behind the j-th option once the answer is removed.
        assert [by_id[d].response for d in it.distractor_ids] == _distractors(it)


def test_distractors_are_semantic_neighbours_minilm(minilm):
    capitals = ["The capital of France is Paris.", "The capital of Italy is Rome.",
                "The capital of Spain is Madrid.", "The capital of Germany is Berlin."]
    other = ["Mitochondria produce ATP for the cell.", "Bake the cake at 180 degrees for 40 minutes.",
             "Use a for loop to iterate over a Python list.", "The stock market fell three percent today.",
             "Photosynthesis turns sunlight into chemical energy.", "Shakespeare wrote Hamlet around 1600."]
    recs = _recs(capitals + other)
    items = build_mc_items(recs, k=4, embedder=minilm)
    assert set(_distractors(items[0])) == set(capitals[1:])
    # Nearest first: the distractor order is by descending cosine with the answer.
    emb = minilm.encode(capitals)
    sims = {t: float(emb[0] @ e) for t, e in zip(capitals, emb)}
    got = _distractors(items[0])
    assert [sims[t] for t in got] == sorted((sims[t] for t in got), reverse=True)


def test_same_subset_preferred_then_filled_from_others():
    # Cosines with "red apple pie": tart 0.8 > cake 0.75 > blue car 0.29 > green bike 0.
    vec = {"red apple pie": [1, 0, 0, 0], "red apple tart": [0.8, 0.6, 0, 0], "red apple cake": [0.75, 0, 0.66, 0],
           "blue car": [0.3, 0, 0, 1], "green bike": [0, 0, 0.2, 1]}
    recs = _recs(list(vec), subsets=["x", "y", "y", "x", "z"])
    emb = FixedEmbedder(vec)
    it = build_mc_items(recs, k=3, embedder=emb)[0]
    # Own subset x has just one other response ("blue car"); the rest comes from the nearest elsewhere.
    assert it.distractor_ids == ("r3", "r1")
    it = build_mc_items(recs, k=3, embedder=emb, prefer_same_subset=False)[0]
    assert it.distractor_ids == ("r1", "r2")


def test_exact_and_near_duplicates_excluded():
    vec = {"Paris": [1, 0, 0], "Paris, France": [0.99, 0.14, 0], "Lyon": [0.8, 0.6, 0],
           "Lyon city": [0.79, 0.61, 0], "Nice": [0.6, 0, 0.8], "Bread": [0, 0.1, 1]}
    recs = _recs(["Paris", "  paris ", "Paris, France", "Lyon", "Lyon city", "Nice", "Bread"])
    items = build_mc_items(recs, k=3, near_dup=0.95, embedder=FixedEmbedder(vec))
    it = items[0]
    # "  paris " (exact after normalisation) and "Paris, France" (cosine 0.99) are skipped; "Lyon city"
    # is skipped as a near duplicate of the chosen "Lyon".
    assert _distractors(it) == ["Lyon", "Nice"]
    assert all("paris" not in normalize_text(d) for it in items[:3] for d in _distractors(it))
    for it in items:
        norm = [normalize_text(o) for o in it.options]
        assert len(set(norm)) == len(norm)


def test_pool_widens_when_exclusions_exhaust_it():
    # k=2 gives a first pool of 16; 30 exact copies of the answer sit nearest, the only valid one last.
    vec = {"same": [1, 0], "far": [0, 1]}
    recs = _recs(["same"] * 30 + ["far"])
    items = build_mc_items(recs, k=2, embedder=FixedEmbedder(vec))
    assert items[0].options[1 - items[0].answer] == "far"
    assert items[0].distractor_ids == ("r30",)


def test_deterministic_per_seed_and_independent_of_block_size():
    recs = _recs(_random_texts(200))
    emb = HashingEmbedder()
    a = build_mc_items(recs, k=4, seed=1, embedder=emb)
    assert a == build_mc_items(recs, k=4, seed=1, embedder=emb, block_size=7)
    b = build_mc_items(recs, k=4, seed=2, embedder=emb)
    assert [i.answer for i in a] != [i.answer for i in b]
    # Only the layout changes with the seed: the same distractors are picked.
    assert [set(i.distractor_ids) for i in a] == [set(i.distractor_ids) for i in b]


def test_answer_position_roughly_uniform():
    n, k = 2000, 4
    items = build_mc_items(_recs(_random_texts(n)), k=k, seed=3, embedder=HashingEmbedder())
    counts = np.bincount([i.answer for i in items], minlength=k)
    expected = n / k
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 25, counts  # 3 degrees of freedom: p < 1e-4 for a fair draw


def test_prebuilt_options_kept():
    recs = _recs(_random_texts(6))
    recs[2] = SftRecord(id="mc", prompt="Pick one", response="B", subset="s", position=2,
                        options=("A", "B", "C"), answer=1)
    items = build_mc_items(recs, k=4, embedder=HashingEmbedder())
    assert items[2] == McItem(id="mc", question="Pick one", options=("A", "B", "C"), answer=1,
                              distractor_ids=(), subset="s", position=2)
    assert all(len(i.options) == 4 for j, i in enumerate(items) if j != 2)


def test_too_small_dataset():
    recs = _recs(["a b", "c d", "A  B", "e f"])  # 3 distinct responses once normalised
    with pytest.raises(DataError) as ei:
        build_mc_items(recs, k=4, embedder=HashingEmbedder())
    assert "only 3 distinct responses among 4 records" in str(ei.value)
    assert "lower k" in str(ei.value).lower()


def test_too_uniform_dataset_names_record():
    vec = {"v0": [1, 0], "v1": [0.999, 0.04], "v2": [0.998, 0.06], "v3": [0.997, 0.08], "odd": [0, 1]}
    recs = _recs(list(vec))
    with pytest.raises(DataError) as ei:
        build_mc_items(recs, k=3, near_dup=0.95, embedder=FixedEmbedder(vec))
    msg = str(ei.value)
    assert msg.startswith("field 'response': record 'r0': only 1 valid distractors found among 4 other")
    assert "lower k or raise near_dup" in msg and "(4 more records are short too)" in msg
    # Raising the threshold makes the same data usable.
    assert len(build_mc_items(recs, k=3, near_dup=0.9999, embedder=FixedEmbedder(vec))) == 5


def test_bad_arguments():
    recs = _recs(_random_texts(5))
    with pytest.raises(ValueError, match="k must be"):
        build_mc_items(recs, k=1, embedder=HashingEmbedder())
    with pytest.raises(ValueError, match="near_dup"):
        build_mc_items(recs, near_dup=0.0, embedder=HashingEmbedder())
    with pytest.raises(DataError, match="duplicate record id 'r0'"):
        build_mc_items(recs + recs[:1], embedder=HashingEmbedder())


@pytest.mark.parametrize("m, block", [(5, 7), (1, 3), (37, 4), (100, 1000)])
def test_blocked_topk_matches_brute_force(m, block):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((50, 8)).astype(np.float32)
    keys = rng.standard_normal((37, 8)).astype(np.float32)
    idx, scores = topk_neighbours(q, keys, m, block_size=block)
    full = q @ keys.T
    want = np.argsort(-full, axis=1, kind="stable")[:, :min(m, 37)]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), rtol=1e-5, atol=1e-6)


def _brute_force(emb, m):
    """The top-m rows by float64 score, ties by index: the order both searches promise."""
    full = emb.astype(np.float64) @ emb.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(len(emb)), full.shape), -full), axis=1)[:, :m]
    return order, np.take_along_axis(full, order, axis=1).astype(np.float32)


@pytest.mark.parametrize("n, m, block", [(60, 5, 7), (300, 17, 13), (300, 17, None), (40, 39, 3), (200, 1, 64)])
def test_self_topk_matches_brute_force(n, m, block):
    rng = np.random.default_rng(n + m)
    e = rng.standard_normal((n, 12)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    want_idx, want_s = _brute_force(e, m)
    idx, scores = self_topk_neighbours(e, m, block_size=block)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(scores, want_s, rtol=0, atol=1e-6)
    # The plain search agrees, whatever its block size.
    np.testing.assert_array_equal(topk_neighbours(e, e, m, block_size=block)[0], want_idx)


def test_self_topk_breaks_exact_ties_by_index():
    """Identical embeddings (duplicate prompts) tie exactly: the lower index comes first, even
    when the tied keys span several blocks and more of them tie than the row keeps."""
    rng = np.random.default_rng(1)
    e = rng.standard_normal((90, 6)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    e[[7, 30, 31, 60, 88]] = e[3]
    want_idx, _ = _brute_force(e, 4)
    for block in (5, 16, None):
        idx, scores = self_topk_neighbours(e, 4, block_size=block)
        np.testing.assert_array_equal(idx, want_idx)
        assert idx[88].tolist() == [3, 7, 30, 31] and np.allclose(scores[88], 1.0)


def test_onnx_backend_matches_torch(minilm):
    texts = ["", "x", "What is the capital of France?", "Name the capital city of France.",
             "word " * 300, "Quelle est la capitale de la France ?"]
    torch_emb = Embedder(batch_size=4, backend="torch").encode(texts)
    onnx = Embedder(batch_size=4, backend="onnx")
    got = onnx.encode(texts)
    assert onnx.active_backend == "onnx" and got.shape == (6, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, torch_emb, atol=1e-5)  # "word " * 300 is truncated to 256 tokens alike
    np.testing.assert_allclose(Embedder(batch_size=1, backend="onnx").encode(texts[2:3])[0], got[2], atol=1e-6)


def test_repeated_texts_are_embedded_once(minilm, monkeypatch):
    e = Embedder(batch_size=4, backend="onnx")
    e.encode(["warm up"])
    seen = []
    real = e._onnx.encode
    monkeypatch.setattr(e._onnx, "encode", lambda texts, bs: seen.extend(texts) or real(texts, bs))
    got = e.encode(["b", "a", "b", "", "a"])
    assert sorted(seen) == ["", "a", "b"]
    np.testing.assert_array_equal(got[0], got[2])
    np.testing.assert_allclose(got[[1, 3]], e.encode(["a", ""]), atol=1e-6)


@pytest.mark.parametrize("kwargs, msg", [({"backend": "tensorflow"}, "backend must be"),
                                         ({"num_threads": 0}, "num_threads must be"),
                                         ({"batch_size": 0}, "batch_size must be")])
def test_embedder_bad_settings(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Embedder(**kwargs)


def test_minilm_embedder_normalised_and_shared(minilm):
    from ilp_ray.data import embed

    v = minilm.encode(["hello world", "bonjour"])
    assert v.shape == (2, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Embedder(batch_size=1).encode(["hello world"])[0], v[0], atol=1e-5)
    assert len(embed._MODELS) == 1


def test_hashing_embedder_is_deterministic_and_unit():
    e = HashingEmbedder(dim=64)
    v = e.encode(["the cat sat", "the cat sat", "", "dogs bark"])
    np.testing.assert_array_equal(v[0], HashingEmbedder(dim=64).encode(["the cat sat"])[0])
    np.testing.assert_allclose(np.linalg.norm(v[[0, 3]], axis=1), 1.0, rtol=1e-6)
    assert not v[2].any()


def _typed_recs(rows):
    return [SftRecord(id=f"r{i}", prompt=p, response=r, subset="s", position=i) for i, (p, r) in enumerate(rows)]


MIXED = ([(f"What is the alpha-2 code of {c}?", code) for c, code in
          [("Denmark", "DK"), ("Sweden", "SE"), ("France", "FR"), ("Spain", "ES"), ("Italy", "IT")]]
         + [(f"What is the chemical symbol of {e}?", s) for e, s in
            [("mercury", "Hg"), ("gold", "Au"), ("iron", "Fe"), ("silver", "Ag"), ("neon", "Ne")]]
         + [(f"Define the word '{w}' in full.", g) for w, g in
            [("brook", "a natural stream of water smaller than a river"),
             ("creek", "a small stream or brook"),
             ("hill", "a local and well-defined elevation of the land"),
             ("lake", "a body of water surrounded by land"),
             ("valley", "a long depression in the surface of the land")]])


def test_typed_distractors_match_the_answers_form(minilm):
    """Mixed tasks: a code only faces codes, a definition definitions, whatever MiniLM thinks is near;
    the plain nearest search mixes them (the audit's old behaviour, still available)."""
    from ilp_ray.data.forms import answer_form

    recs = _typed_recs(MIXED)
    typed = build_mc_items(recs, k=4, embedder=minilm)
    for it in typed:
        key = answer_form(it.options[it.answer]).key
        assert all(answer_form(o).key == key for o in it.options), it.options
        assert it.fallback == 0
    nearest = build_mc_items(recs, k=4, embedder=minilm, distractors="nearest")
    assert any(len({answer_form(o).key for o in it.options}) > 1 for it in nearest)
    assert nearest[0].fallback == 0 and typed[0].answer == nearest[0].answer  # same layout seed


def test_a_distractor_naming_the_questions_subject_is_skipped():
    """'a stream or brook' (the answer about 'creek') is right for 'Define the word brook' too."""
    recs = _typed_recs(MIXED)
    brook = build_mc_items(recs, k=4, embedder=HashingEmbedder())[10]
    assert "brook" in brook.question and "a small stream or brook" not in brook.options
    off = build_mc_items(recs, k=5, embedder=HashingEmbedder(), subject_check=False)[10]
    assert "a small stream or brook" in off.options  # k=5: every other definition is needed


def test_a_distractor_echoing_the_questions_subject_is_skipped():
    """'Africa/Tirvstead' for the zone of 'Tirvund': the question's stem, copied by a small model."""
    zones = [("Tirvund", "Africa/Roskford"), ("Tirvstead", "Africa/Tirvstead"), ("Kenya", "Africa/Nairobi"),
             ("Ghana", "Africa/Accra"), ("Mali", "Africa/Bamako"), ("Chad", "Africa/Ndjamena")]
    recs = _typed_recs([(f"Give the tz database zone name for {c}.", z) for c, z in zones])
    tirv = build_mc_items(recs, k=4, embedder=HashingEmbedder())[0]
    assert "Africa/Tirvstead" not in tirv.options and len(tirv.options) == 4
    off = build_mc_items(recs, k=6, embedder=HashingEmbedder(), subject_check=False)[0]
    assert "Africa/Tirvstead" in off.options  # the only way to fill k=6


def test_typed_falls_back_in_recorded_steps():
    """Too few answers of the answer's form: first the same kind (length relaxed), then any form."""
    rows = [("q0?", "alpha beta"), ("q1?", "gamma delta"), ("q2?", "epsilon zeta eta theta iota kappa lambda"),
            ("q3?", "DK"), ("q4?", "42")]
    items = build_mc_items(_typed_recs(rows), k=3, embedder=HashingEmbedder())
    assert items[0].fallback == 1  # the third distractor of a 2-word answer: the 7-word one
    assert items[3].fallback == 2  # a lone code: distractors of any form
    with pytest.raises(ValueError, match="distractors"):
        build_mc_items(_typed_recs(rows), k=3, embedder=HashingEmbedder(), distractors="fancy")
    with pytest.raises(ValueError, match="length_ratio"):
        build_mc_items(_typed_recs(rows), k=3, embedder=HashingEmbedder(), length_ratio=0.5)
