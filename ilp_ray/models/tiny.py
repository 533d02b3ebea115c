"""A tiny Llama and its tokenizer, built in code in well under a second.

Used by the tests (no network, no model download) and by the lab, which pretrains such a model
from scratch on CPU. The tokenizer is a byte-level BPE, so any text encodes without unknown
tokens; like Llama's, it prepends ``<bos>``, which exercises the BOS handling of the scoring code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"

# One user turn renders as "<bos><|user|>\n{content}\n<|assistant|>\n". It starts with the BOS
# text, so (like real chat templates) callers must not add a second BOS when encoding it.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on ``texts``.

    Args:
        texts: training text; any iterable of strings (may be tiny: the 256 byte symbols are
            always in the vocabulary, so every string encodes).
        vocab_size: target vocabulary size, including the byte alphabet and special tokens.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``<pad>``/``<bos>``/``<eos>`` (ids 0/1/2), that adds
        ``<bos>`` when ``add_special_tokens`` is true, and has a one-line chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   chat_template=CHAT_TEMPLATE)


def make_tiny_llama(tokenizer, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
                    num_heads: int = 4, num_kv_heads: int = 2, max_position_embeddings: int = 512,
                    initializer_range: float = 0.02):
    """A randomly initialised ``LlamaForCausalLM`` sized for ``tokenizer``, in eval mode.

    Args:
        tokenizer: gives the vocabulary size and the special token ids.
        seed: initialisation seed; the same seed gives the same weights. The global torch RNG
            is left as it was.
        hidden_size, num_layers, num_heads, num_kv_heads, max_position_embeddings: architecture
            (``num_kv_heads < num_heads`` gives grouped-query attention, as in SmolLM2).
        initializer_range: std of the weight init; larger values give less uniform
            predictions, which makes tests that compare log-likelihoods more discriminating.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings, initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def save_tiny_checkpoint(out_dir: str | os.PathLike, texts: Iterable[str], seed: int = 0, **kw) -> Path:
    """Build a tiny tokenizer + Llama and save them as a loadable HF checkpoint directory.

    Args:
        out_dir: directory to write (created if needed).
        texts: tokenizer training text.
        seed: model initialisation seed.
        **kw: ``vocab_size`` for the tokenizer; the rest go to ``make_tiny_llama``.

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    tokenizer = make_tiny_tokenizer(texts, vocab_size=kw.pop("vocab_size", 512))
    model = make_tiny_llama(tokenizer, seed=seed, **kw)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
