"""Prompt formats and the lm-eval-compatible encoder."""

import pytest

from ilp_ray.errors import ConfigError
from ilp_ray.scoring.formats import FORMATS, render


@pytest.fixture(scope="module")
def tok():
    from ilp_ray.models.tiny import make_tiny_tokenizer

    return make_tiny_tokenizer(["Question: What is the capital of France?\nAnswer: Paris"] * 20, vocab_size=320)


def test_formats_listed():
    assert FORMATS == ("chat", "plain", "lm-eval")


def test_lm_eval_format_puts_the_space_before_the_option():
    assert render("What is 2+2?", "Four", "lm-eval") == ("Question: What is 2+2?\nAnswer:", " Four")


def test_plain_format():
    assert render("What is 2+2?", "Four", "plain") == ("What is 2+2?\n", "Four")


def test_chat_format_uses_the_template_with_a_generation_prompt(tok):
    context, cont = render("Hi?", "Yes", "chat", tok)
    assert context == "<bos><|user|>\nHi?\n<|assistant|>\n"
    assert cont == "Yes"


def test_unknown_format_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown format 'lmeval'; valid formats: chat, plain, lm-eval"):
        render("q", "o", "lmeval")


def test_chat_without_tokenizer_is_an_error():
    with pytest.raises(ConfigError, match="needs a tokenizer with a chat template"):
        render("q", "o", "chat")


def test_encoder_moves_trailing_whitespace_onto_the_continuation(tok):
    from ilp_ray.scoring.encoding import LmEvalEncoder

    enc = LmEvalEncoder(tok, "plain", 64)
    ctx, cont = enc.encode_pair("Capital?\n", "Paris")
    assert ctx == tok.encode("Capital?")  # BOS + the words, no newline
    assert ctx[0] == tok.bos_token_id
    assert tok.decode(cont) == "\nParis"
    assert ctx + cont == tok.encode("Capital?\nParis")


def test_encoder_adds_no_second_bos_to_a_chat_context(tok):
    from ilp_ray.scoring.encoding import LmEvalEncoder

    enc = LmEvalEncoder(tok, "chat", 64)
    context, cont = render("Hi?", "Yes", "chat", tok)
    ctx, _ = enc.encode_pair(context, cont)
    assert ctx.count(tok.bos_token_id) == 1 and ctx[0] == tok.bos_token_id


def test_encoder_rejects_a_bad_format_at_build_time(tok):
    from ilp_ray.scoring.encoding import LmEvalEncoder

    with pytest.raises(ConfigError, match="valid formats"):
        LmEvalEncoder(tok, "json", 64)
