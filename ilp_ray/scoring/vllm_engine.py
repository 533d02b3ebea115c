"""The vLLM scoring engine (GPU; ``pip install 'ilp-ray[gpu]'``).

Option log-likelihoods come from ``prompt_logprobs``, as lm-eval's vLLM backend computes them:
each option's full token sequence (context + option, encoded by the same ``LmEvalEncoder`` as the
transformers engine) is submitted with ``max_tokens=1``, and the log-probabilities vLLM reports
for the prompt's own tokens are summed over the option's positions. Each option's context is
computed again: vLLM (0.33 read) does not read the prefix cache for a request that asks for
prompt logprobs (``SamplingParams.skip_reading_prefix_cache``), so ``enable_prefix_caching``
saves nothing here.

Status: written against vLLM's documented ``LLM.generate`` / ``TokensPrompt`` API; the names it
uses were read against vLLM 0.33.0's source, but it has never run: vLLM's wheel (336 MB, pinning
torch 2.14) could not be installed on the GPU machine that was lent (docs/gpu.md).
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

    @staticmethod
    def load_shared(spec: str, max_length: int | None = None, **llm_kwargs):
        """Load a model once: ``(vllm.LLM, HF tokenizer)``; prefix caching on."""
        from transformers import AutoTokenizer
        from vllm import LLM

        from ilp_ray.models import resolve_model

        path = str(resolve_model(spec))
        kwargs = {"enable_prefix_caching": True, "dtype": "auto", **llm_kwargs}
        if max_length:
            kwargs["max_model_len"] = max_length
        return LLM(model=path, **kwargs), AutoTokenizer.from_pretrained(path)

    def score(self, items: Sequence[McItem]) -> list[OptionScores]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # prompt_logprobs=1 returns, per position, the actual token's log-prob (plus the top-1).
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        out: list[OptionScores] = []
        for lo in range(0, len(items), self.batch_size):
            encoded = [self.encoder.encode(it, i) for i, it in enumerate(items[lo:lo + self.batch_size])]
            prompts = [TokensPrompt(prompt_token_ids=list(w)) for e in encoded for w in e.wholes]
            results = iter(self.llm.generate(prompts, params, use_tqdm=False))
            for e in encoded:
                sums = []
                for whole in e.wholes:
                    lps = next(results).prompt_logprobs  # lps[t]: {token_id: Logprob} for position t
                    sums.append(float(sum(lps[t][whole[t]].logprob for t in range(e.ctx_len, len(whole)))))
                self._truncated += e.truncated
                out.append(OptionScores(id=e.id, model=self.tag, logprob_sum=tuple(sums),
                                        n_tokens=e.n_tokens, n_chars=e.n_chars, truncated=e.truncated))
        return out
