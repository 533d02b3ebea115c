"""The scoring engines against a direct, unbatched forward pass computed here, in the test."""

import itertools
import math

import pytest

from ilp_ray.errors import ConfigError, DataError
from ilp_ray.records import McItem
from ilp_ray.scoring.formats import FORMATS, render

TEXTS = ["Question: What is the capital of France?\nAnswer: Paris",
         "The river Paris flows past the old town and the long bridge."] * 10


def make_items():
    """Ragged option counts (2..5), prompts from 3 to ~70 words, one-word and long options."""
    items = []
    for i in range(14):
        words = " ".join(f"town{k % 9} river" for k in range(1 + 9 * (i % 4)))
        n = 2 + i % 4
        options = tuple(("Paris " + "the long bridge " * (j + i % 3)).strip() for j in range(n))
        items.append(McItem(id=f"it{i}", question=f"{words} What is the capital?", options=options, answer=0))
    return items


ITEMS = make_items()


@pytest.fixture(scope="module")
def tiny():
    from ilp_ray.models.tiny import make_tiny_llama, make_tiny_tokenizer

    tok = make_tiny_tokenizer(TEXTS, vocab_size=320)
    # A wide init gives peaked predictions, so that wrong positions or masks change the scores a lot.
    return make_tiny_llama(tok, seed=0, initializer_range=0.2), tok


def reference_tokens(tok, item, fmt, max_length):
    """lm-eval's _encode_pair, written out again: (token lists per option, context length)."""
    bos_text = tok.decode(tok.bos_token_id)
    def enc(s):
        return tok.encode(s, add_special_tokens=not s.startswith(bos_text))

    wholes, ctx_len = [], None
    for option in item.options:
        ctx, cont = render(item.question, option, fmt, tok)
        stripped = ctx.rstrip()
        cont, ctx = ctx[len(stripped):] + cont, stripped
        ctx_ids = enc(ctx)
        wholes.append(ctx_ids + enc(ctx + cont)[len(ctx_ids):])
        ctx_len = len(ctx_ids)
    cut = max(0, max(len(w) for w in wholes) - 1 - max_length)  # the same cut for every option
    return [w[cut:] for w in wholes], ctx_len - cut, cut > 0


def direct_logprobs(model, tok, item, fmt, max_length):
    import torch

    wholes, ctx_len, truncated = reference_tokens(tok, item, fmt, max_length)
    out = []
    with torch.no_grad():
        for whole in wholes:
            logits = model(torch.tensor([whole[:-1]])).logits[0]
            logprobs = torch.log_softmax(logits, dim=-1)
            out.append(sum(float(logprobs[p, whole[p + 1]]) for p in range(ctx_len - 1, len(whole) - 1)))
    return out, truncated


@pytest.mark.parametrize("strategy", ["packed", "cache"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("max_length", [None, 32])
def test_engine_equals_direct_forward_pass(tiny, fmt, strategy, max_length):
    from ilp_ray.scoring.hf import TransformersEngine

    model, tok = tiny
    engine = TransformersEngine((model, tok), fmt=fmt, batch_size=4, max_length=max_length,
                                strategy=strategy, tag="tiny")
    scores = engine.score(ITEMS)
    n_truncated = 0
    for item, got in zip(ITEMS, scores):
        want, truncated = direct_logprobs(model, tok, item, fmt, engine.max_length)
        assert got.id == item.id and got.model == "tiny"
        assert len(got.logprob_sum) == len(item.options)
        assert got.logprob_sum == pytest.approx(want, abs=1e-4)
        assert got.truncated == truncated
        n_truncated += truncated
    assert engine.truncated_count == n_truncated
    if max_length:
        assert n_truncated >= len(ITEMS) // 2  # the long prompts really were cut
    else:
        assert n_truncated == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_naive_engine_agrees(tiny, fmt):
    from ilp_ray.scoring.hf import TransformersEngine
    from ilp_ray.scoring.naive import NaiveEngine

    fast = TransformersEngine(tiny, fmt=fmt, batch_size=3).score(ITEMS)
    slow = NaiveEngine(tiny, fmt=fmt).score(ITEMS)
    for a, b in zip(fast, slow):
        assert a.logprob_sum == pytest.approx(b.logprob_sum, abs=1e-4)
        assert (a.n_tokens, a.n_chars, a.truncated) == (b.n_tokens, b.n_chars, b.truncated)


def test_token_and_char_counts_by_hand(tiny):
    from ilp_ray.scoring.hf import TransformersEngine

    tok = tiny[1]
    assert tok.tokenize(" Paris") == ["ĠParis"]
    assert tok.tokenize("\nParis") == ["Ċ", "Pa", "ris"]  # no leading space: the rare form of the word
    item = McItem(id="x", question="What is the capital?", options=("Paris", "Paris Paris"), answer=0)
    lm = TransformersEngine(tiny, fmt="lm-eval").score([item])[0]
    # " Paris" is one token; " Paris Paris" two. n_chars is the option's own length, as lm-eval's
    # acc_norm divides by len(choice), without the " " delimiter.
    assert lm.n_tokens == (1, 2) and lm.n_chars == (5, 11)
    plain = TransformersEngine(tiny, fmt="plain").score([item])[0]
    assert plain.n_tokens == (3, 4)  # the context's trailing "\n" is scored with the option
    assert plain.n_chars == (5, 11)


def test_results_keep_input_order_and_handle_empty_input(tiny):
    from ilp_ray.scoring.hf import TransformersEngine

    engine = TransformersEngine(tiny, batch_size=2)
    assert engine.score([]) == []
    shuffled = ITEMS[::-1]
    assert [s.id for s in engine.score(shuffled)] == [it.id for it in shuffled]


def test_single_option_item_and_probabilities_are_finite(tiny):
    from ilp_ray.scoring.hf import TransformersEngine

    item = McItem(id="one", question="Q?", options=("Paris",), answer=0)
    (s,) = TransformersEngine(tiny).score([item])
    assert len(s.logprob_sum) == 1 and math.isfinite(s.logprob_sum[0]) and s.logprob_sum[0] < 0


def test_engine_from_a_checkpoint_directory(tmp_path):
    from ilp_ray.models.tiny import save_tiny_checkpoint
    from ilp_ray.scoring.hf import TransformersEngine

    path = save_tiny_checkpoint(tmp_path / "ck", TEXTS, seed=1, vocab_size=300)
    engine = TransformersEngine(str(path), fmt="plain")
    assert engine.tag == str(path)
    assert engine.score(ITEMS[:2])[0].model == str(path)


def test_unknown_format(tiny):
    from ilp_ray.scoring.hf import TransformersEngine

    with pytest.raises(ConfigError, match="unknown format 'mmlu'; valid formats: chat, plain, lm-eval"):
        TransformersEngine(tiny, fmt="mmlu")


def test_option_longer_than_max_length_names_the_item(tiny):
    from ilp_ray.scoring.hf import TransformersEngine
    from ilp_ray.scoring.naive import NaiveEngine

    item = McItem(id="too-long", question="Q?", options=("Paris", "the long bridge " * 20), answer=0)
    for engine in (TransformersEngine(tiny, max_length=16), NaiveEngine(tiny, max_length=16)):
        with pytest.raises(DataError, match=r"item 'too-long': option 1 is \d+ tokens, longer than the "
                                            r"model's max_length 16"):
            engine.score([item])


def test_bad_engine_arguments(tiny):
    from ilp_ray.scoring.hf import TransformersEngine

    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        TransformersEngine(tiny, batch_size=0)
    with pytest.raises(ValueError, match="unknown strategy 'fast'"):
        TransformersEngine(tiny, strategy="fast")
    with pytest.raises(ValueError, match="needs its tokenizer"):
        TransformersEngine(tiny[0])


def test_partition_covers_everything_and_respects_max_rows():
    from ilp_ray.scoring.hf import _partition

    lengths = sorted([3, 3, 4, 5, 40, 41, 41, 90, 200, 200, 201])
    groups = _partition(lengths, max_rows=3, overhead=16)
    assert groups[0][0] == 0 and groups[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(groups))
    assert all(0 < hi - lo <= 3 for lo, hi in groups)
    assert (0, 3) in groups or (0, 4) in groups or (0, 2) in groups  # short rows are not padded to 200


# --- SmolLM2 (slow): the real model, and parity with lm-eval's own HF backend -------------------

MC = [
    ("What is the capital of France?", ["Paris", "London", "Berlin", "Madrid"]),
    ("What is the largest planet in our solar system?", ["Jupiter", "Mars", "Earth", "Venus"]),
    ("How many legs does a spider have?", ["Eight", "Six", "Four", "Ten"]),
    ("What do bees make?", ["Honey", "Milk", "Silk", "Wax paper"]),
    ("Which gas do plants absorb from the air?", ["Carbon dioxide", "Oxygen", "Helium", "Neon"]),
    ("What is the boiling point of water at sea level in Celsius?", ["100 degrees", "50 degrees", "0 degrees"]),
    ("Who wrote Romeo and Juliet?", ["William Shakespeare", "Charles Dickens", "Jane Austen", "Mark Twain"]),
    ("What is the chemical symbol for gold?", ["Au", "Ag", "Gd", "Go"]),
    ("Which ocean is the largest?", ["The Pacific Ocean", "The Atlantic Ocean", "The Indian Ocean"]),
    ("What is 7 times 8?", ["56", "54", "64", "48", "58"]),
    ("Which animal is known as the king of the jungle?", ["The lion", "The elephant", "The zebra"]),
    ("What color is the sky on a clear day?", ["Blue", "Green", "Red", "Purple"]),
    ("In which country are the pyramids of Giza?", ["Egypt", "Mexico", "Peru", "India"]),
    ("What is the freezing point of water in Fahrenheit?", ["32 degrees", "0 degrees", "100 degrees"]),
    ("Which instrument has 88 keys?", ["The piano", "The violin", "The flute", "The drum"]),
    ("What is the opposite of hot?", ["Cold", "Warm", "Spicy", "Loud"]),
    ("How many days are in a leap year?", ["366", "365", "364", "360"]),
    ("What language is mainly spoken in Brazil?", ["Portuguese", "Spanish", "French", "English"]),
    ("Which planet is closest to the sun?", ["Mercury", "Venus", "Mars", "Neptune"]),
    ("What do you call a baby cat?", ["A kitten", "A puppy", "A calf", "A foal"]),
    ("Explain briefly why the sky appears blue during the day to a curious child who asked.",
     ["Because air scatters blue light from the sun more than other colours",
      "Because the ocean reflects onto the sky", "Because of blue paint"]),
]
MC_ITEMS = [McItem(id=f"mc{i}", question=q, options=tuple(o), answer=0) for i, (q, o) in enumerate(MC)]


@pytest.fixture(scope="module")
def smollm2():
    import torch

    from ilp_ray.models import load_model

    torch.set_num_threads(1)
    return load_model("smollm2-135m")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["lm-eval", "chat"])
def test_smollm2_engine_equals_direct_forward_pass(smollm2, fmt):
    from ilp_ray.scoring.hf import TransformersEngine

    model, tok = smollm2
    items = MC_ITEMS[:5] + MC_ITEMS[-1:]
    scores = TransformersEngine(smollm2, fmt=fmt, batch_size=4).score(items)
    for item, got in zip(items, scores):
        want, _ = direct_logprobs(model, tok, item, fmt, 2048)
        assert got.logprob_sum == pytest.approx(want, abs=1e-3)


@pytest.mark.slow
def test_smollm2_parity_with_lm_eval_hflm(smollm2):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from ilp_ray.models import resolve_model
    from ilp_ray.scoring.hf import TransformersEngine

    ours = TransformersEngine(smollm2, fmt="lm-eval", batch_size=8).score(MC_ITEMS)
    lm = HFLM(pretrained=str(resolve_model("smollm2-135m")), batch_size=8, device="cpu", dtype="float32")
    requests = [Instance("loglikelihood", doc={}, arguments=render(it.question, o, "lm-eval"), idx=j)
                for it in MC_ITEMS for j, o in enumerate(it.options)]
    lls = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    pos = 0
    for item, got in zip(MC_ITEMS, ours):
        ref = lls[pos:pos + len(item.options)]
        pos += len(item.options)
        assert got.logprob_sum == pytest.approx(ref, abs=2e-3)
        def argmax(xs):
            return max(range(len(xs)), key=xs.__getitem__)

        assert argmax(got.logprob_sum) == argmax(ref)  # acc
        # acc_norm, as lm-eval's multiple_choice computes it: log-likelihood / len(choice) in chars
        norm_ref = [ll / len(o) for ll, o in zip(ref, item.options)]
        norm_ours = [ll / n for ll, n in zip(got.logprob_sum, got.n_chars)]
        assert argmax(norm_ours) == argmax(norm_ref)
