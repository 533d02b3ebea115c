"""The ``model`` corpus judge: MC likelihood of the options given passage + question.

For each item with matched passages and MC options (answer first), the project's scoring engine
(``make_engine``: transformers by default) scores ``"<passage>\\n<question>"`` over the options,
with the item's best passage(s) as context. Reading the passage, the model should pick the
option the passage states:

- the answer is the argmax with p ≥ ``min_p`` → supports, score p(answer);
- another option is the argmax with p ≥ ``min_p`` → contradicts, score p(that option);
- otherwise → absent, score 1 − max p.

Items without candidates are absent (score 1); items without options fall back to ``rule``.
"""

from __future__ import annotations

import math

from ilp_ray.evidence.judge import CorpusJudge, RuleJudge
from ilp_ray.records import McItem


class ModelJudge(CorpusJudge):
    name = "model"
    min_p = 0.5  # a majority of the option mass: below it the model is not reading a clear answer

    def __init__(self, cfg, engine=None):
        super().__init__(cfg)
        if engine is None:
            if not cfg.model:
                raise ValueError("judge.model is required for judge 'model' (a checkpoint dir or bundled name)")
            from ilp_ray.config import ScoringConfig
            from ilp_ray.scoring.engines import make_engine

            engine = make_engine(ScoringConfig(), cfg.model, tag="corpus-judge")
        self.engine = engine
        self._rule = RuleJudge(cfg)

    def judge(self, facts, candidates):
        out: list[tuple[str, float] | None] = [None] * len(facts)
        items, where = [], []
        for i, (f, cands) in enumerate(zip(facts, candidates, strict=True)):
            cands = list(cands)[: self.cfg.max_passages]
            if not cands:
                out[i] = ("absent", 1.0)
            elif not f.options or len(f.options) < 2:
                out[i] = self._rule.judge([f], [cands])[0]
            else:
                context = "\n".join(c.text for c in cands)
                items.append(McItem(id=f.id, question=f"{context}\n{f.prompt or f.query}",
                                    options=tuple(f.options), answer=0, subset=f.subset))
                where.append(i)
        for i, s in zip(where, self.engine.score(items) if items else [], strict=True):
            m = max(s.logprob_sum)
            p = [math.exp(x - m) for x in s.logprob_sum]
            z = sum(p)
            p = [x / z for x in p]
            top = max(range(len(p)), key=p.__getitem__)
            if p[top] < self.min_p:
                out[i] = ("absent", 1.0 - p[top])
            else:
                out[i] = ("supports" if top == 0 else "contradicts", p[top])
        return out
