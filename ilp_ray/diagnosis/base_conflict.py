"""II. Conflicts between SFT and the base model (paper 3.2.2, Eq. 6).

The belief is the shared ``base_belief`` section's (``DiagnosisContext.base_beliefs``, which cause I
reads too); this detector's own section holds its score weights. Fires when the base model prefers
a wrong option with confidence ``>= tau_c``:
``P_base(y'|x) >= tau_c`` with ``y' != y_SFT``, and (``require_support``, the default) when
something beyond the pick says that this is a belief about *this* question:

- ``pmi``: the question raised the base's wrong pick by at least ``pmi_margin`` nats over its
  question-free share among the options (``base_pmi``, from the audit's option priors). A small
  base prefers short, common or fluent strings whatever is asked; such a pick beats no prior.
  Where the audit calibrated the pick by those same priors (the default for built items) it is
  the option the question raised most by construction, and the test asks only for a 2× raise:
  the evidence and the summary say so (``pmi_implied``), and it still counts;
- ``jsd``: the JS divergence between the base and fine-tuned option distributions (Eq. 3) is above
  ``js_threshold`` (paper 0.3): SFT pushed against the belief;
- ``corpus``: the pretraining corpus contradicts the SFT label.

The evidence's ``fired_by`` lists which held.

Without option priors (an audit with the fairness check off) ``pmi`` cannot be tested and the
evidence says so.

Where the base was asked (``diagnose.beliefs: auto``, off by default, and only for a base that
passes its self-check), the pick of a built MC item is not read: its options are other records'
responses, so the value the base believes is rarely among them. II then fires when most of the
base's own answers to the prompt are one answer that is not the SFT's (``fired_by: asked``), or
when its pick is confident and the corpus contradicts the label (``corpus``).

With corpus evidence, II fires only where the corpus does not lack or support the SFT value
(``corpus.veto``): a confident wrong answer to something the base never read is a guess (cause
I), and one the corpus contradicts is the pretrained belief this cause is about.

Score: the base model's confidence in its wrong option (asked: the share of its answers that are
its own), plus ``jsd_weight`` (0.1) when the JSD supports it and up to ``corpus_weight`` (0.2) ×
``corpus_score`` when the pretraining corpus contradicts the SFT label. Rows whose
base model prefers the right answer score 0. Silent without a base model, and says so.
"""

from __future__ import annotations

import numpy as np

from ilp_ray.diagnosis.base import CauseDetector, CauseResult, DiagnosisContext, r3


class BaseConflict(CauseDetector):
    name = "base_conflict"
    roman = "II"
    title = "Conflict between SFT and the base model"
    short = "base conflict"
    order = 30  # a positive signal (a belief), tested before the negative one (no knowledge)
    section = "base_conflict"
    color = "#ff7f0e"
    needs_base = True

    def detect(self, ctx: DiagnosisContext) -> CauseResult:
        cfg, belief = ctx.config.base_conflict, ctx.config.base_belief
        v = ctx.verdicts
        if not ctx.has_base:
            return CauseResult(self.silent(len(v), {"base_model": "missing"}),
                               {"silent": "no base model was scored"})
        answer = v["answer"].to_numpy(dtype=np.int64)
        b = ctx.base_beliefs()
        bprobs = [np.asarray(p, dtype=float) for p in v["base_probs"]]
        bpred, bconf, wrong, js, gain = b["pred"], b["confidence"], b["wrong"], b["js"], b["pmi_gain"]
        js_support, pmi_support, corpus_support, supported = b["jsd"], b["pmi"], b["corpus"], b["supported"]
        has_pmi = b["pmi_tested"]
        probed, holds, said = b["probed"], b["holds"], ctx.generated()
        corpus = ctx.corpus()
        guess = ctx.config.corpus.veto & np.isin(ctx.corpus_verdicts(), ["absent", "supports"])
        confident = b["confident"]
        fired = b["belief"] & ~guess
        score = np.where(wrong, bconf + cfg.jsd_weight * js_support, 0.0)
        share = np.array([said[i]["modal_share"] if i in said else 0.0 for i in v["id"].astype(str)], dtype=float)
        score = np.where(probed, np.where(holds, share + cfg.jsd_weight * js_support, 0.0), score)
        evidence = []
        for i, (vid, opts) in enumerate(zip(v["id"].astype(str), v["options"], strict=False)):
            ev = {"base_pred": int(bpred[i]), "base_choice": str(opts[bpred[i]]),
                  "answer_text": str(opts[answer[i]]), "base_confidence": r3(bconf[i]),
                  "base_p_correct": r3(bprobs[i][answer[i]]), "tau_c": belief.tau_c,
                  "pmi_gain": r3(gain[i]), "pmi_margin": belief.pmi_margin,
                  "js_base_sft": r3(js[i]), "js_supports": bool(js_support[i]),
                  "js_threshold": belief.js_threshold,
                  "fired_by": [n for n, ok in (("pmi", pmi_support[i]), ("jsd", js_support[i]),
                                               ("corpus", corpus_support[i])) if ok]}
            if probed[i]:
                g = said[vid]
                ev.update(asked={"says": g["modal"], "share": r3(g["modal_share"]),
                                 "sft_answer_share": r3(g["label_share"]), "answers": list(g["answers"])[:5]},
                          fired_by=(["asked"] if holds[i] else []) + (["corpus"] if corpus_support[i]
                                                                     and confident[i] else []))
            if b["pmi_implied"][i]:
                ev["pmi_calibrated"] = ("the pick is calibrated by the option priors: the item's most raised "
                                        "option by construction, so pmi asks only for a 2x raise")
            elif not has_pmi[i]:
                ev["pmi"] = "untested: the audit scored no option priors"
            if vid in corpus:
                verdict, cs = corpus[vid]
                ev.update(corpus_verdict=verdict, corpus_score=r3(cs))
                if verdict == "contradicts" and wrong[i]:
                    score[i] += cfg.corpus_weight * cs
                if guess[i] and confident[i]:
                    ev.update(vetoed=f"the corpus {'lacks' if verdict == 'absent' else 'supports'} this "
                                     "fact: the base model's answer is a guess, not a pretrained belief")
            if probed[i] and not fired[i]:
                ev["not_held"] = (f"asked {len(said[vid]['answers'])} times, the base gives no one answer "
                                  "other than the SFT's most of the time: its MC pick is not a belief")
            elif confident[i] and not guess[i] and belief.require_support and not supported[i]:
                ev["unsupported"] = ("a confident wrong pick that the question does not raise over its prior, "
                                     "SFT did not move, and no corpus contradicts: not a belief")
            evidence.append(ev)
        summary = {"tau_c": belief.tau_c, "js_threshold": belief.js_threshold, "pmi_margin": belief.pmi_margin,
                   "require_support": belief.require_support, "pmi_tested": int(has_pmi.sum()),
                   "pmi_implied": int(b["pmi_implied"].sum()),
                   "base_wrong": int(wrong.sum()), "confident_wrong": int(confident.sum()),
                   "vetoed_by_corpus": int((confident & guess).sum()),
                   "unsupported": int((confident & ~guess & ~supported).sum()) if belief.require_support else 0,
                   "asked": ctx.belief_status, "asked_holds": int((probed & holds).sum()),
                   "fired_by": {"asked": int((fired & probed & holds).sum()),
                                "pmi": int((fired & ~probed & pmi_support).sum()),
                                "jsd": int((fired & ~probed & js_support).sum()),
                                "corpus": int((fired & corpus_support).sum())},
                   "js_supported": int((fired & js_support).sum())}
        return CauseResult(self.frame(fired, score, evidence), summary)
