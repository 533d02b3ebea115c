"""I. Base model knowledge limitations: blind knowledge (paper 3.2.1, Eq. 4; Appendix A.3).

Blind when the base model fails under repeated sampling and is not confidently wrong:

- base pass@N (N = 10) ``< 0.2``: N draws from the base option distribution, seeded per item
  (``metrics.item_uniforms``), as the audit draws the fine-tuned model's pass@N;
- base BoN-5 accuracy ``< 0.1``: one BoN-5 is right or wrong, so its accuracy is the mean over
  ``seeds`` independent BoN-5 runs;
- both on chance-corrected figures (``chance_corrected``, the default): ``(x - 1/k) / (1 - 1/k)``
  for an item of k options. The paper's thresholds are for free generation, where a model that
  lacks a fact almost never produces it; among k options a blind model is right 1/k of the time;
- where the base was asked (``diagnose.beliefs``), it does not produce the SFT answer in
  ``beliefs.knows_share`` of its answers: the paper's pass@N is about producing the answer;
- not a wrong belief: no wrong option held as the shared ``base_belief`` section defines it, the
  rule cause II fires on (confident, and with ``require_support`` raised by the question, moved by
  SFT or contradicted by the corpus: ``DiagnosisContext.base_beliefs``). A confident pick that beats
  no prior is a guess;
- with corpus evidence that the corpus lacks the fact (``corpus.veto``), the two
  tests above are lifted: the base never read it, so whatever it answers, right or confidently
  wrong, is a guess;
- with corpus evidence, the corpus does not support the fact: a fact the base read and still
  does not know is a rare pattern that pretraining did not learn (cause V), not a gap.

Score: ``1 - base p(correct)`` (the verdicts' ``base_pass_expected``: how far the base is from
knowing it), moved by up to ``corpus_weight`` (0.25) × ``corpus_score`` up when the corpus lacks the fact (``absent``) and down when it ``supports`` it
(the base model saw the fact yet did not learn it). Silent without a base model, and says so.
"""

from __future__ import annotations

import numpy as np

from ilp_ray import metrics as M
from ilp_ray.diagnosis.base import CauseDetector, CauseResult, DiagnosisContext, r3


def base_pass_and_bon(ids: list[str], probs: np.ndarray, answers: np.ndarray, n: int, bon_n: int,
                      seeds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(sampled pass@n, BoN-bon_n accuracy over ``seeds`` seeds) of ``probs``, seeded per item.

    The BoN seeds start after the pass@N seed, so the two figures use independent draws.
    """
    passes = M.pass_at_n_sampled(M.sample_draws(probs, M.item_uniforms(ids, n, seed)), answers)
    bon = np.zeros(len(ids))
    for s in range(seeds):
        draws = M.sample_draws(probs, M.item_uniforms(ids, bon_n, seed + 1 + s))
        bon += M.bon_correct(probs, draws, answers)
    return passes, bon / seeds


class BaseKnowledgeGap(CauseDetector):
    name = "base_knowledge_gap"
    roman = "I"
    title = "Base model lacks the knowledge"
    short = "knowledge gap"
    order = 40  # excludes II explicitly, so after it
    section = "knowledge_gap"
    color = "#1f77b4"
    needs_base = True

    def detect(self, ctx: DiagnosisContext) -> CauseResult:
        cfg = ctx.config.knowledge_gap
        v = ctx.verdicts
        if not ctx.has_base:
            return CauseResult(self.silent(len(v), {"base_model": "missing"}),
                               {"silent": "no base model was scored"})
        ids = ctx.ids
        answers = v["answer"].to_numpy(dtype=np.int64)
        probs = M.pad_ragged(list(v["base_probs"]), 0.0)
        passes, bon = base_pass_and_bon(ids, probs, answers, cfg.n, cfg.bon_n, cfg.seeds, cfg.seed)
        pc = v["base_pass_expected"].to_numpy(dtype=float)  # the audit's figure, not recomputed
        chance = 1.0 / np.maximum(np.array([len(p) for p in v["base_probs"]], dtype=float), 2.0)
        if cfg.chance_corrected:
            passes_c, bon_c = (passes - chance) / (1 - chance), (bon - chance) / (1 - chance)
        else:
            passes_c, bon_c = passes, bon
        corpus = ctx.corpus()
        veto = ctx.config.corpus.veto
        said = ctx.corpus_verdicts()
        guess, read = veto & (said == "absent"), veto & (said == "supports")
        b = ctx.base_beliefs()
        confidently_wrong = b["belief"]
        blind = (passes_c < cfg.pass_threshold) & (bon_c < cfg.bon_threshold) & ~b["knows"]
        asked = ctx.generated()
        fired = ((blind & ~confidently_wrong) | guess) & ~read
        score = 1.0 - pc
        evidence = []
        for i, vid in enumerate(ids):
            ev = {f"base_pass_at_{cfg.n}": r3(passes[i]), "pass_threshold": cfg.pass_threshold,
                  f"base_bon{cfg.bon_n}_accuracy": r3(bon[i]), "bon_threshold": cfg.bon_threshold,
                  "chance": r3(chance[i]), "chance_corrected": cfg.chance_corrected,
                  f"base_pass_at_{cfg.n}_corrected": r3(passes_c[i]), f"base_bon{cfg.bon_n}_corrected": r3(bon_c[i]),
                  "bon_seeds": cfg.seeds, "base_p_correct": r3(pc[i]),
                  "base_confidently_wrong": bool(confidently_wrong[i])}
            if b["probed"][i]:
                ev["asked_sft_answer_share"] = r3(asked[vid]["label_share"])
                if b["knows"][i]:
                    ev["knows"] = "asked, the base produces the SFT answer: the knowledge is there"
            if read[i]:
                ev.update(vetoed="the corpus supports this fact: the base read it and did not learn it "
                                 "(a rare pattern, cause V)")
            if guess[i] and not (blind[i] and not confidently_wrong[i]):
                ev.update(guess="the corpus lacks this fact: whatever the base model answers is a guess, "
                                "so its pass@N and confidence say nothing")
            if vid in corpus:
                verdict, cs = corpus[vid]
                ev.update(corpus_verdict=verdict, corpus_score=r3(cs))
                score[i] += {"absent": cfg.corpus_weight, "supports": -cfg.corpus_weight}.get(verdict, 0.0) * cs
            evidence.append(ev)
        summary = {"n": cfg.n, "bon_n": cfg.bon_n, "pass_threshold": cfg.pass_threshold,
                   "chance_corrected": cfg.chance_corrected,
                   "bon_threshold": cfg.bon_threshold, "blind": int(fired.sum()),
                   "base_pass_mean": float(passes.mean()) if len(passes) else float("nan")}
        return CauseResult(self.frame(fired, score, evidence), summary,
                           {"base_pass": passes, "base_bon": bon, "n": cfg.n})
