"""Model loading (checkpoint dirs, bundled names) and the tiny in-code model."""

import json

import pytest

from ilp_ray.errors import DataError
from ilp_ray.models import resolve_model

TEXTS = ["Question: What is the capital of France?\nAnswer: Paris", "The cat sat on the mat."] * 10


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from ilp_ray.models.tiny import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", TEXTS, seed=3, vocab_size=300)


def test_tiny_tokenizer_special_tokens_and_any_text():
    from ilp_ray.models.tiny import make_tiny_tokenizer

    tok = make_tiny_tokenizer(TEXTS, vocab_size=300)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = tok.encode("naïve ✓ 東京")  # never seen in training: byte-level BPE still encodes it
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "naïve ✓ 東京"
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat == "<bos><|user|>\nhi\n<|assistant|>\n"


def test_tiny_llama_is_deterministic_by_seed_and_leaves_global_rng_alone():
    import torch

    from ilp_ray.models.tiny import make_tiny_llama, make_tiny_tokenizer

    tok = make_tiny_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = make_tiny_llama(tok, seed=0), make_tiny_llama(tok, seed=0), make_tiny_llama(tok, seed=1)
    assert torch.rand(1) == before
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.config.vocab_size == len(tok) and a.config.num_key_value_heads == 2


def test_checkpoint_round_trip(tiny_dir):
    import torch

    from ilp_ray.models import load_model
    from ilp_ray.models.tiny import make_tiny_llama, make_tiny_tokenizer

    assert resolve_model(tiny_dir) == tiny_dir
    model, tok = load_model(str(tiny_dir))
    ref = make_tiny_llama(make_tiny_tokenizer(TEXTS, vocab_size=300), seed=3)
    ids = torch.tensor([tok.encode("The cat sat")])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-6)
    assert not model.training


def test_directory_without_config_json_is_named(tmp_path):
    with pytest.raises(DataError, match=r"no config\.json") as err:
        resolve_model(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_directory():
    with pytest.raises(DataError, match="does not exist"):
        resolve_model("./no/such/checkpoint")


def test_unknown_bundled_name_suggests_the_closest():
    with pytest.raises(DataError, match=r"\(known: smollm2-135m\)\. Did you mean 'smollm2-135m'\?"):
        resolve_model("smollm2-135")
    with pytest.raises(DataError, match="unknown model 'gpt-17'") as err:
        resolve_model("gpt-17")
    assert "Did you mean" not in str(err.value)


def test_shared_tensors_are_saved_once():
    import torch

    from ilp_ray.models import _dedup_shared

    w = torch.randn(4, 3)
    out = _dedup_shared({"embed.weight": w, "lm_head.weight": w, "other": torch.randn(2)})
    assert list(out) == ["embed.weight", "other"]


@pytest.mark.slow
def test_smollm2_cache_is_a_plain_checkpoint():
    from ilp_ray.models import load_model

    path = resolve_model("smollm2-135m")  # dequantises on first use (~25 s), then instant
    marker = json.loads((path / "ilp_cache.json").read_text())
    assert marker["gguf_file"].endswith(".gguf")
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"]
    model, tok = load_model("smollm2-135m")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def test_a_prebuilt_cache_is_read_first_and_never_written(tmp_path, monkeypatch):
    """The image's baked cache ($ILP_PREBUILT_CACHE, read-only in a pod): a bundled model found
    there is used as it is; a half-written one (no marker) is not, and the writable cache is used."""
    from ilp_ray.models import _cache_marker

    baked, writable = tmp_path / "baked", tmp_path / "writable"
    model = baked / "models" / "smollm2-135m"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("ILP_PREBUILT_CACHE", str(baked))
    monkeypatch.setenv("ILP_CACHE_DIR", str(writable))
    # No marker: not ready there, so the model is built into the writable cache (here: a marker
    # planted there stands in for the 20 s dequantisation).
    target = writable / "models" / "smollm2-135m"
    target.mkdir(parents=True)
    _cache_marker(target).write_text("{}")
    assert resolve_model("smollm2-135m") == target
    _cache_marker(model).write_text("{}")
    assert resolve_model("smollm2-135m") == model
    before = sorted(p.name for p in baked.rglob("*"))
    resolve_model("smollm2-135m")
    assert sorted(p.name for p in baked.rglob("*")) == before
