"""II. Conflicts between SFT and the base model (paper 3.2.2, Eq. 6).

Fires when the base model prefers a wrong option with confidence ``>= tau_c``:
``P_base(y'|x) >= tau_c`` with ``y' != y_SFT``. The JS divergence between the base and fine-tuned
option distributions (Eq. 3) above ``js_threshold`` (paper 0.3) is recorded as supporting evidence
but is not required: a conflict that SFT failed to move shows a *small* divergence.

With corpus evidence, II fires only where the corpus does not lack or support the SFT value
(``corpus_veto``): a confident wrong answer to something the base never read is a guess (cause
I), and one the corpus contradicts is the pretrained belief this cause is about.

Score: the base model's confidence in its wrong option, plus 0.1 when the JSD supports it and
up to 0.2 × ``corpus_score`` when the pretraining corpus contradicts the SFT label. Rows whose
base model prefers the right answer score 0. Silent without a base model, and says so.
"""

from __future__ import annotations

import numpy as np

from ilp_ray.diagnosis.base import CauseDetector, CauseResult, DiagnosisContext, r3


class BaseConflict(CauseDetector):
    name = "base_conflict"
    roman = "II"
    title = "Conflict between SFT and the base model"

    def detect(self, ctx: DiagnosisContext) -> CauseResult:
        cfg = ctx.config.base_conflict
        v = ctx.verdicts
        if not ctx.has_base:
            return CauseResult(self.silent(len(v), {"base_model": "missing"}),
                               {"silent": "no base model was scored"})
        answer = v["answer"].to_numpy(dtype=np.int64)
        bprobs = [np.asarray(p, dtype=float) for p in v["base_probs"]]
        bpred = np.array([int(p.argmax()) for p in bprobs])
        bconf = np.array([float(p.max()) for p in bprobs])
        wrong = bpred != answer
        js = v["js_base_sft"].to_numpy(dtype=float) if "js_base_sft" in v else np.full(len(v), np.nan)
        js_support = js > cfg.js_threshold
        corpus = ctx.corpus()
        guess = cfg.corpus_veto & np.isin(ctx.corpus_verdicts(), ["absent", "supports"])
        fired = wrong & (bconf >= cfg.tau_c) & ~guess
        score = np.where(wrong, bconf + 0.1 * js_support, 0.0)
        evidence = []
        for i, (vid, opts) in enumerate(zip(v["id"].astype(str), v["options"], strict=False)):
            ev = {"base_pred": int(bpred[i]), "base_choice": str(opts[bpred[i]]),
                  "answer_text": str(opts[answer[i]]), "base_confidence": r3(bconf[i]),
                  "base_p_correct": r3(bprobs[i][answer[i]]), "tau_c": cfg.tau_c,
                  "js_base_sft": r3(js[i]), "js_supports": bool(js_support[i]),
                  "js_threshold": cfg.js_threshold}
            if vid in corpus:
                verdict, cs = corpus[vid]
                ev.update(corpus_verdict=verdict, corpus_score=r3(cs))
                if verdict == "contradicts" and wrong[i]:
                    score[i] += 0.2 * cs
                if guess[i] and wrong[i] and bconf[i] >= cfg.tau_c:
                    ev.update(vetoed=f"the corpus {'lacks' if verdict == 'absent' else 'supports'} this "
                                     "fact: the base model's answer is a guess, not a pretrained belief")
            evidence.append(ev)
        summary = {"tau_c": cfg.tau_c, "js_threshold": cfg.js_threshold,
                   "base_wrong": int(wrong.sum()),
                   "vetoed_by_corpus": int((wrong & (bconf >= cfg.tau_c) & guess).sum()), "js_supported": int((fired & js_support).sum())}
        return CauseResult(self.frame(fired, score, evidence), summary)
