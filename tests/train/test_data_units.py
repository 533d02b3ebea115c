"""SFT masking and truncation, data-order samplers and the CPT mixture: fast, no Ray, no training."""

import math

import numpy as np
import pytest

from ilp_ray.records import SftRecord
from ilp_ray.train.sft_data import IGNORE


@pytest.fixture(scope="module")
def tokenizer():
    from ilp_ray.models.tiny import make_tiny_tokenizer

    return make_tiny_tokenizer(["What is the capital of France?\nParis", "hello world"] * 4, vocab_size=300)


def test_labels_mask_exactly_the_prompt(tokenizer):
    from ilp_ray.train.sft_data import encode_sft

    rec = SftRecord(id="a", prompt="What is the capital of France?", response="Paris")
    for fmt, context in (("chat", "<bos><|user|>\nWhat is the capital of France?\n<|assistant|>"),
                         ("plain", "What is the capital of France?")):
        (ex,) = encode_sft([rec], tokenizer, fmt, max_length=64)
        # By hand: the context (its trailing newline moves onto the response, as the scorer does),
        # then the response, then EOS. Only the last two carry labels.
        ctx = tokenizer.encode(context, add_special_tokens=fmt == "plain")
        resp = tokenizer.encode(context + "\nParis", add_special_tokens=fmt == "plain")[len(ctx):]
        assert tokenizer.decode(resp) == "\nParis"
        assert list(ex.input_ids) == ctx + resp + [tokenizer.eos_token_id]
        assert list(ex.labels) == [IGNORE] * len(ctx) + resp + [tokenizer.eos_token_id]
        assert not ex.truncated


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_response(tokenizer):
    from ilp_ray.errors import DataError
    from ilp_ray.train.sft_data import encode_sft

    long = SftRecord(id="long", prompt="hello world " * 40, response="Paris")
    (full,) = encode_sft([long], tokenizer, "plain", max_length=512)
    (ex,) = encode_sft([long], tokenizer, "plain", max_length=16)
    n_resp = sum(label != IGNORE for label in full.labels)
    assert ex.truncated and len(ex.input_ids) == 16
    assert ex.input_ids[-n_resp:] == full.input_ids[-n_resp:]  # the response and EOS are intact
    assert ex.input_ids[:-n_resp] == full.input_ids[-16:-n_resp]  # the prompt's end survives
    assert sum(label != IGNORE for label in ex.labels) == n_resp
    with pytest.raises(DataError, match=r"record 'long'.*response"):
        encode_sft([SftRecord(id="long", prompt="q", response="hello world " * 10)], tokenizer, "plain", 8)


def test_samplers_are_deterministic_and_sequential_follows_subset_order():
    from ilp_ray.train.order import SAMPLERS, OrderSampler, boundary_positions, make_sampler

    subsets = ["A", "B", "A", "C", "B", "A"]
    sh = make_sampler("shuffled", subsets, 3, None, {})
    assert sh.order(0) == make_sampler("shuffled", subsets, 3, None, {}).order(0)
    assert sorted(sh.order(0)) == list(range(6)) and sh.order(0) != sh.order(1)
    seq = make_sampler("sequential", subsets, 0, ["C", "A", "B"], {})
    assert seq.order(0) == seq.order(5) == [3, 0, 2, 5, 1, 4]
    assert boundary_positions(seq.order(0), subsets) == [0, 3]
    with pytest.raises(ValueError, match="every subset"):
        make_sampler("sequential", subsets, 0, ["A", "B"], {})
    with pytest.raises(KeyError, match="Did you mean 'shuffled'"):
        make_sampler("shufled", subsets, 0, None, {})

    class Reverse(OrderSampler):  # a later mitigation plugs in like this, without touching the loop
        name = "reverse"

        def order(self, epoch):
            return list(range(len(self.subsets)))[::-1]

    SAMPLERS.register("reverse-test", Reverse)
    assert make_sampler("reverse-test", subsets, 0, None, {}).order(0) == [5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_mixture_matches_the_ratio_within_sampling_error(ratio):
    from ilp_ray.train.cpt_data import mixture_draws

    n = 20_000
    draws = mixture_draws(50, 400, ratio, n, seed=7, epoch=0)
    share = sum(c == 0 for c, _ in draws) / n
    # Binomial(n, ratio): 4 standard errors is a bound a correct sampler breaks about once in 16,000.
    assert abs(share - ratio) < 4 * math.sqrt(ratio * (1 - ratio) / n)
    # Each corpus is walked through a permutation: D_k's 50 documents are used evenly.
    counts = np.bincount([i for c, i in draws if c == 0], minlength=50)
    assert counts.max() - counts.min() <= 1
    assert draws == mixture_draws(50, 400, ratio, n, seed=7, epoch=0)
    assert draws != mixture_draws(50, 400, ratio, n, seed=7, epoch=1)


def test_txt_documents_and_packing(tmp_path):
    from ilp_ray.errors import DataError
    from ilp_ray.train.cpt_data import pack, read_documents

    (tmp_path / "d.txt").write_text("one\nline two\n\n  \nthree\n\n\nfour\n")
    assert read_documents(tmp_path / "d.txt") == ["one\nline two", "three", "four"]
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n\n{"txt": "b"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:3: field 'text'"):
        read_documents(tmp_path / "d.jsonl")
    assert pack([[1, 2, 3], [4, 5]], 3, eos_id=0) == [(1, 2, 3), (0, 4, 5)]


def test_the_audit_scores_the_sequence_that_was_trained(tokenizer):
    """An SFT example, without its EOS, is token for token what the audit core scores for its answer."""
    from ilp_ray.records import McItem
    from ilp_ray.scoring.encoding import LmEvalEncoder
    from ilp_ray.train.sft_data import encode_sft

    rec = SftRecord(id="a", prompt="What is the capital of France?", response="Paris")
    for fmt in ("chat", "plain"):
        (ex,) = encode_sft([rec], tokenizer, fmt, max_length=64)
        enc = LmEvalEncoder(tokenizer, fmt, 64).encode(McItem(id="a", question=rec.prompt,
                                                              options=("Paris", "Rome"), answer=0))
        assert list(enc.wholes[0]) == list(ex.input_ids[:-1])
        assert enc.ctx_len == sum(label == IGNORE for label in ex.labels)
