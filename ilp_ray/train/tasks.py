"""The two training tasks as the loop sees them: examples per epoch and a data-order sampler.

``SftTask``: the SFT examples (prompt masked), ordered by the configured ``OrderSampler``.
``CptTask``: each epoch's packed blocks of the D_k / D_general mixture, in draw order (the draws
are already random; a block's labels are its input ids).

Both are rebuilt identically on every rank (and on resume) from the driver's plan.
"""

from __future__ import annotations

from collections.abc import Sequence

from ilp_ray.train.order import OrderSampler, make_sampler
from ilp_ray.train.sft_data import Example


class Task:
    """Examples and their order, per epoch."""

    sampler: OrderSampler | None = None
    truncated = 0

    def examples(self, epoch: int) -> Sequence[Example]:
        raise NotImplementedError

    def order(self, epoch: int) -> list[int]:
        raise NotImplementedError

    def subsets(self, epoch: int) -> Sequence[str]:
        return [e.subset for e in self.examples(epoch)]


class SftTask(Task):
    def __init__(self, cfg, records, tokenizer, world: int = 1):
        from ilp_ray.train.sft_data import encode_sft, resolve_format

        self.format = resolve_format(cfg.sft.format, tokenizer)
        self._examples = encode_sft(records, tokenizer, self.format, cfg.sft.max_length)
        self.truncated = sum(e.truncated for e in self._examples)
        self.sampler = make_sampler(cfg.order.sampler, [r.subset for r in records], cfg.order.seed,
                                    cfg.order.subset_order, dict(cfg.order.options), ids=[r.id for r in records],
                                    batch=cfg.optim.batch_size * world)

    def examples(self, epoch: int) -> Sequence[Example]:
        return self._examples

    def order(self, epoch: int) -> list[int]:
        return list(self.sampler.order(epoch))


class CptTask(Task):
    def __init__(self, cfg, knowledge: Sequence[str], general: Sequence[str], tokenizer):
        from ilp_ray.train.cpt_data import CptData

        m = cfg.mixture
        self.data = CptData(knowledge, general, tokenizer, m.ratio, m.documents, m.seed, cfg.block_size)
        self._epoch, self._blocks = -1, []

    def examples(self, epoch: int) -> Sequence[Example]:
        if epoch != self._epoch:
            blocks, _ = self.data.blocks(epoch)
            self._epoch = epoch
            self._blocks = [Example(id=f"e{epoch}b{i}", subset="cpt", input_ids=b, labels=b)
                            for i, b in enumerate(blocks)]
        return self._blocks

    def order(self, epoch: int) -> list[int]:
        return list(range(len(self.examples(epoch))))


def build_task(kind: str, cfg, payload: dict, tokenizer, world: int = 1) -> Task:
    if kind == "sft":
        return SftTask(cfg, payload["records"], tokenizer, world)
    return CptTask(cfg, payload["knowledge"], payload["general"], tokenizer)
