"""The baseline engine: one full, unbatched forward pass per (item, option).

No prompt sharing, no padding, no batching, so nothing that could go wrong in those tricks: the
reference route that tests compare ``TransformersEngine`` with, and the benchmark's floor.
"""

from __future__ import annotations

from collections.abc import Sequence

from ilp_ray.records import McItem, OptionScores
from ilp_ray.scoring.base import ScoringEngine
from ilp_ray.scoring.encoding import LmEvalEncoder
from ilp_ray.scoring.hf import default_max_length, model_and_tokenizer


class NaiveEngine(ScoringEngine):
    """Score each option with its own forward pass over ``whole[:-1]``.

    Args:
        model, tokenizer, fmt, max_length, tag: as for ``TransformersEngine`` (same encoding, same
            truncation).
        batch_size: ignored (there is no batching here).
    """

    name = "naive"

    def __init__(self, model, tokenizer=None, *, fmt: str = "lm-eval", max_length: int | None = None,
                 tag: str | None = None, batch_size: int = 1):
        del batch_size  # accepted so that the registry can build either engine from one config
        model, tokenizer, tag = model_and_tokenizer(model, tokenizer, tag)
        super().__init__(tag)
        self.model = model.eval()
        self.encoder = LmEvalEncoder(tokenizer, fmt, default_max_length(model, max_length))

    def score(self, items: Sequence[McItem]) -> list[OptionScores]:
        import torch

        out = []
        with torch.inference_mode():
            for i, item in enumerate(items):
                enc = self.encoder.encode(item, i)
                sums = []
                for whole in enc.wholes:
                    ids = torch.tensor([whole[:-1]], device=self.model.device)
                    logprobs = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), -1)
                    targets = torch.tensor(whole[enc.ctx_len:], device=ids.device)
                    rows = torch.arange(enc.ctx_len - 1, len(whole) - 1, device=ids.device)
                    sums.append(float(logprobs[rows, targets].sum()))
                self._truncated += enc.truncated
                out.append(OptionScores(id=enc.id, model=self.tag, logprob_sum=tuple(sums),
                                        n_tokens=enc.n_tokens, n_chars=enc.n_chars,
                                        truncated=enc.truncated))
        return out
