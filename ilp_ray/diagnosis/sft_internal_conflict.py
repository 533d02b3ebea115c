"""III. Knowledge conflicts within the SFT data (paper 3.2.3; Appendix C.2, Algorithm 3).

1. Embed every prompt (MiniLM; the hashing twin for tests) and find every pair with cosine
   ``>= theta`` (``pairs.similar_pairs``, blocked and memory-bounded; or on Spark).
2. Keep the pairs that ask the same question (``same_question: spans``, ``pairs.SameQuestion``):
   what varies between the two prompts (quoted spans, names, numbers, words rare in the dataset)
   must agree. Templated siblings ("…code of Sollokaia?" / "…of Solnuteia?", cosine 0.95) are
   dropped here, after the search, so both search backends get the same test.
3. Keep the pairs whose responses disagree (``pairs.responses_disagree``): a different MC answer
   text, or free-form responses whose embedding cosine is ``< theta_response``, with the number
   and word-containment rules that embeddings miss.
4. A judge (``judges.JUDGES``) decides which side of each pair is right; the other side is
   *judged wrong* (a deletion candidate for the mitigation stage). A pair the judge calls
   ``both`` right is no conflict: it is cleared, and its samples are not III through it.
5. Conflict groups: the connected components of the remaining conflict pairs, so A–B and B–C put
   A, B and C in one group (the unit the paper buckets apart).

Per sample: ``is_`` when it is in any conflict pair; score: 1.0 when judged wrong, else its
highest prompt cosine to a conflicting partner. Evidence: group id and size, partners with their
responses and cosine, why the prompts count as the same question and the spans in which they
differ, the rule that called the responses different, the judge's verdicts; pairs the judge
cleared (``cleared_by_judge``) and pairs dropped as different questions (``template_partners``,
the first few, and ``template_pairs_dropped``). ``info["groups"]`` holds one row per grouped
sample (written to ``conflict_groups.parquet``; ``group_members`` reads the groups back from it),
``info["pairs"]`` one row per conflict pair, and
``info["template_pairs"]`` / ``info["cleared_pairs"]`` the pairs dropped by step 2 / step 4.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pandas as pd

from ilp_ray.diagnosis.base import (
    CauseCoverage,
    CauseDetector,
    CauseResult,
    CoverageFacts,
    DiagnosisContext,
    r3,
)
from ilp_ray.diagnosis.judges import JUDGES, ConflictPair, judged_wrong
from ilp_ray.diagnosis.pairs import (
    SameQuestion,
    differing_spans,
    pairs_from_neighbours,
    response_rule,
    responses_disagree,
    similar_pairs,
)

_MAX_PARTNERS = 10  # partners listed per sample in its evidence
_MAX_TEMPLATE = 3  # pairs dropped as different questions listed per sample


def conflict_groups(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Group id per sample (-1: in no conflict), numbered 0, 1, … by each group's first member."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    group = np.full(n, -1, dtype=np.int64)
    if len(i) == 0:
        return group
    g = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    members = np.zeros(n, bool)
    members[i] = members[j] = True
    remap: dict[int, int] = {}
    for s in np.flatnonzero(members):  # ascending, so a group is numbered by its first member
        group[s] = remap.setdefault(int(labels[s]), len(remap))
    return group


def group_members(groups: pd.DataFrame) -> list[list[str]]:
    """The conflict groups of a ``conflict_groups.parquet`` table as lists of sample ids, in the
    order of their ``group_id``, each group's ids in table order.

    The table has one row per grouped sample and no list of members per row: a group of G samples
    would repeat its G ids on each of its G rows, G² strings (at 300k templated prompts the largest
    group ran to thousands, and the file and the driver with it). Tables written before that
    change carried a ``members`` column, which this ignores: ``id`` and ``group_id`` say the same.
    """
    if groups is None or not len(groups):
        return []
    ids = groups["id"].astype(str)
    return [list(g) for _, g in ids.groupby(groups["group_id"].to_numpy(), sort=True)]


class SftInternalConflict(CauseDetector):
    name = "sft_internal_conflict"
    roman = "III"
    title = "Conflict within the SFT data"
    short = "SFT-internal conflict"
    order = 10  # the data contradicts itself: every other test is moot while the label is in dispute
    section = "conflict"
    color = "#d62728"
    data_only = True  # the data's own contradictions: no model output needed

    def coverage(self, ctx: DiagnosisContext, facts: CoverageFacts) -> CauseCoverage:
        return CauseCoverage(np.full(facts.n, facts.n >= 2), "fewer than two samples: no pair to compare")

    def detect(self, ctx: DiagnosisContext) -> CauseResult:
        cfg = ctx.config.conflict
        v = ctx.verdicts
        n, ids = len(v), ctx.ids
        emb = ctx.prompt_embeddings()
        t0 = time.perf_counter()
        if cfg.backend == "spark":
            from ilp_ray.diagnosis.spark_search import spark_similar_pairs

            i, j, sim, sat = spark_similar_pairs(emb, cfg.theta, cfg.k, cfg.block_size, cfg.spark_master,
                                                 cfg.spark_partitions, cfg.spark_driver_memory)
        elif n < 2:
            i, j, sim, sat = similar_pairs(emb, cfg.theta, cfg.k)
        else:  # through the context's cache, which V's density search then reuses
            i, j, sim, sat = pairs_from_neighbours(*ctx.prompt_neighbours(min(cfg.k + 1, n), cfg.block_size),
                                                   cfg.theta)
        t1 = time.perf_counter()
        prompts, responses = ctx.prompts(), ctx.responses()
        n_similar = len(i)
        # One reading of every prompt serves both the unit pairs and the test of the pairs found.
        whole = functools.cache(lambda: SameQuestion(prompts, responses, cfg.rare_df, cfg.rare_min_prompts))
        i, j, sim, n_units = self._with_unit_pairs(cfg, prompts, whole, emb, i, j, sim)
        i, j, sim, question, template, dropped = self._same_question(cfg, prompts, responses, whole, ids, i, j, sim)
        del whole
        mc_built = np.array([len(d) == 0 for d in v["distractor_ids"]]) if "distractor_ids" in v \
            else np.zeros(n, bool)
        exact = {"exact": np.ones(n, bool), "embedding": np.zeros(n, bool), "auto": mc_built}[cfg.response_match]
        pair_exact = [bool(exact[a] and exact[b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)]
        first = [response_rule(responses[a], responses[b], x)
                 for a, b, x in zip(i.tolist(), j.tolist(), pair_exact, strict=True)]
        rcos = self._response_cosines(ctx, responses, i, j, [t for t, (vd, _) in enumerate(first) if vd is None])
        keep, rules = [], []
        for t, (vd, rule) in enumerate(first):
            if vd is None:
                vd, rule = responses_disagree(responses[int(i[t])], responses[int(j[t])], rcos.get(t),
                                              cfg.theta_response, pair_exact[t])
            keep.append(vd)
            rules.append(rule)
        keep = np.asarray(keep, bool)
        ci, cj, cs = i[keep], j[keep], sim[keep]
        crules = [r for r, k in zip(rules, keep, strict=True) if k]
        cq = [q for q, k in zip(question, keep, strict=True) if k]
        t2 = time.perf_counter()

        pc = v["pass_expected"].to_numpy(dtype=float)
        bpc = v["base_pass_expected"].to_numpy(dtype=float) if "base_pass_expected" in v else None
        pairs = [ConflictPair(ids[a], ids[b], prompts[a], prompts[b], responses[a], responses[b], float(s),
                              float(pc[a]), float(pc[b]),
                              None if bpc is None else float(bpc[a]), None if bpc is None else float(bpc[b]))
                 for a, b, s in zip(ci.tolist(), cj.tolist(), cs.tolist(), strict=True)]
        verdicts = JUDGES.create(cfg.judge, cfg).judge(pairs) if pairs else []
        # "both" right: the two answers do not contradict each other, so the pair is no conflict.
        conflict = np.array([vd != "both" for vd in verdicts], bool)
        cleared = [t for t in range(len(pairs)) if not conflict[t]]
        wrong = {x for p, vd in zip(pairs, verdicts, strict=True) for x in judged_wrong(p, vd)}
        group = conflict_groups(n, ci[conflict], cj[conflict])

        partners: dict[int, list[dict]] = {}
        cleared_of: dict[int, list[dict]] = {}
        best = np.zeros(n)
        for t, (a, b) in enumerate(zip(ci.tolist(), cj.tolist(), strict=True)):
            for me, other, side in ((a, b, "a"), (b, a, "b")):
                vd = verdicts[t]
                entry = {"id": ids[other], "similarity": r3(cs[t]), "response": responses[other][:200],
                         "why": crules[t], "question": cq[t][0], "differs": cq[t][1] if side == "a" else cq[t][2],
                         "differs_other": cq[t][2] if side == "a" else cq[t][1], "judge": vd}
                if not conflict[t]:
                    cleared_of.setdefault(me, []).append(entry)
                    continue
                best[me] = max(best[me], float(cs[t]))
                entry["this_side"] = "undecided" if vd == "undecided" else ("right" if vd == side else "wrong")
                partners.setdefault(me, []).append(entry)
        is_ = group >= 0
        score = np.where(is_ & np.isin(ids, list(wrong)), 1.0, best)
        sizes = pd.Series(group[is_]).value_counts().to_dict()
        evidence = []
        for s in range(n):
            ev = {"group_id": None, "saturated": bool(sat[s])}
            if is_[s]:
                ps = sorted(partners[s], key=lambda d: -d["similarity"])
                ev = {"group_id": int(group[s]), "group_size": int(sizes[int(group[s])]),
                      "judged_wrong": ids[s] in wrong, "judge": cfg.judge, "response": responses[s][:200],
                      "partners": ps[:_MAX_PARTNERS], "n_partners": len(ps), "theta": cfg.theta,
                      "saturated": bool(sat[s])}
            if s in cleared_of:
                ev["cleared_by_judge"] = cleared_of[s][:_MAX_PARTNERS]
            if s in template:
                ev["template_pairs_dropped"], ev["template_partners"] = template[s]
            evidence.append(ev)
        groups = pd.DataFrame({
            "id": [ids[s] for s in np.flatnonzero(is_)],
            "group_id": group[is_],
            "group_size": [int(sizes[int(g)]) for g in group[is_]],
            "judged_wrong": [ids[s] in wrong for s in np.flatnonzero(is_)],
            "unlearned": v["unlearned"].to_numpy(dtype=bool)[is_],
            "subset": v["subset"].astype(str).to_numpy()[is_],
        })
        rows = np.flatnonzero(conflict)
        pair_table = pd.DataFrame({"a": [pairs[t].a for t in rows], "b": [pairs[t].b for t in rows],
                                   "similarity": cs[rows].astype(float), "why": [crules[t] for t in rows],
                                   "judge": [verdicts[t] for t in rows], "question": [cq[t][0] for t in rows],
                                   "differs_a": [cq[t][1] for t in rows], "differs_b": [cq[t][2] for t in rows]})
        cleared_table = pd.DataFrame({"a": [pairs[t].a for t in cleared], "b": [pairs[t].b for t in cleared],
                                      "similarity": cs[cleared].astype(float), "why": [crules[t] for t in cleared],
                                      "judge": [verdicts[t] for t in cleared]})
        summary = {"theta": cfg.theta, "theta_response": cfg.theta_response, "judge": cfg.judge,
                   "backend": cfg.backend, "same_question": cfg.same_question, "similar_pairs": n_similar,
                   "unit_pairs_added": n_units,
                   "template_pairs_dropped": len(dropped), "conflict_pairs": int(conflict.sum()),
                   "cleared_by_judge": len(cleared), "groups": len(sizes), "grouped_samples": int(is_.sum()),
                   "largest_group": int(max(sizes.values(), default=0)),
                   "judged_wrong": len(wrong), "saturated_samples": int(sat.sum()),
                   "search_seconds": round(t1 - t0, 3), "compare_group_seconds": round(t2 - t1, 3),
                   "judge_report_seconds": round(time.perf_counter() - t2, 3)}
        summary["warnings"] = self._group_warnings(cfg, sizes, group, is_, ids, prompts)
        info = {"groups": groups, "pairs": pair_table, "cleared_pairs": cleared_table, "template_pairs": dropped}
        return CauseResult(self.frame(is_, score, evidence), summary, info)

    @staticmethod
    def _group_warnings(cfg, sizes: dict, group: np.ndarray, is_: np.ndarray, ids: list[str],
                        prompts: list[str]) -> list[str]:
        """A sentence for the reader when groups exceed ``conflict.warn_group_size``."""
        big = {int(g): int(k) for g, k in sizes.items() if k > cfg.warn_group_size}
        if not big:
            return []
        g, k = max(big.items(), key=lambda t: t[1])
        first = int(np.flatnonzero(is_ & (group == g))[0])
        more = f" ({len(big)} groups are over it)" if len(big) > 1 else ""
        return [f"III: a conflict group holds {k} samples, over conflict.warn_group_size {cfg.warn_group_size}"
                f"{more}. III assumes one right answer per question, so a prompt asked with many answers "
                f"(an open-ended task) or a chain of near-duplicate prompts joins them all; e.g. "
                f"{ids[first]}: {prompts[first][:80]!r}. See conflict_groups.parquet (group_id {g}), or "
                f"leave III out for open-ended data (diagnose.causes)."]

    @staticmethod
    def _with_unit_pairs(cfg, prompts: list[str], whole, emb: np.ndarray, i, j, sim):
        """The search's pairs plus those sharing a content unit at cosine >= ``unit_theta``
        (``pairs.unit_pairs``, over ``whole()``, every prompt's ``SameQuestion``); returns
        ``(i, j, sim, pairs added)``, sorted and each pair once."""
        from ilp_ray.diagnosis.pairs import dedupe_pairs, unit_pairs

        if cfg.same_question != "spans" or not cfg.unit_pairs or len(prompts) < 2:
            return i, j, sim, 0
        ui, uj = unit_pairs(whole(), cfg.unit_max_group)
        if not len(ui):
            return i, j, sim, 0
        us = np.einsum("ij,ij->i", emb[ui], emb[uj]).astype(np.float32)
        ok = us >= np.float32(min(cfg.unit_theta, cfg.theta))
        known = set(zip(i.tolist(), j.tolist(), strict=True))
        new = np.array([(a, b) not in known for a, b in zip(ui.tolist(), uj.tolist(), strict=True)], bool) & ok
        if not new.any():
            return i, j, sim, 0
        ai, aj, asim = dedupe_pairs(np.concatenate([i, ui[new]]), np.concatenate([j, uj[new]]),
                                    np.concatenate([sim, us[new]]))
        return ai, aj, asim, int(new.sum())

    @staticmethod
    def _same_question(cfg, prompts: list[str], responses: list[str], whole, ids: list[str], i, j, sim):
        """Apply the same-question test to the search's pairs. ``whole()`` is the test read over
        every prompt (built once, shared with ``_with_unit_pairs``).

        Returns the kept ``(i, j, sim)``; per kept pair ``(why, a's differing spans, b's)``; per
        sample the count and first few of its pairs dropped as different questions,
        ``{sample: (count, [evidence, …])}``; and the dropped pairs as a table.
        """
        dropped = pd.DataFrame({"a": pd.Series(dtype=str), "b": pd.Series(dtype=str),
                                "similarity": pd.Series(dtype=float), "why": pd.Series(dtype=str)})
        if cfg.same_question == "cosine" or len(i) == 0:
            return i, j, sim, [(f"prompt cosine >= {cfg.theta}", [], [])] * len(i), {}, dropped
        if len(prompts) >= cfg.rare_min_prompts:  # rarity is read off every prompt of the dataset
            sq, at = whole(), (lambda r: r)
        else:  # no document frequencies then: only the pairs' own prompts need reading
            rows = sorted(set(i.tolist()) | set(j.tolist()))
            sq = SameQuestion([prompts[r] for r in rows], [responses[r] for r in rows], cfg.rare_df,
                              cfg.rare_min_prompts)
            at = {r: k for k, r in enumerate(rows)}.__getitem__
        keep, question, template, drop = np.ones(len(i), bool), [], {}, []
        for t, (a, b) in enumerate(zip(i.tolist(), j.tolist(), strict=True)):
            same, why, ua, ub = sq.test(at(a), at(b))
            if same:
                question.append((why, *differing_spans(sq.part(at(a)), sq.part(at(b)))))
                continue
            keep[t] = False
            drop.append((ids[a], ids[b], float(sim[t]), why))
            for me, other, mine, theirs in ((a, b, ua, ub), (b, a, ub, ua)):
                count, shown = template.get(me, (0, []))
                if len(shown) < _MAX_TEMPLATE:
                    shown.append({"id": ids[other], "similarity": r3(sim[t]), "why": why,
                                  "this_differs": [str(u) for u in mine[:3]],
                                  "other_differs": [str(u) for u in theirs[:3]]})
                template[me] = (count + 1, shown)
        if drop:
            dropped = pd.DataFrame(drop, columns=["a", "b", "similarity", "why"])
        return i[keep], j[keep], sim[keep], question, template, dropped

    @staticmethod
    def _response_cosines(ctx: DiagnosisContext, responses: list[str], i, j, need: list[int]) -> dict[int, float]:
        """Response cosine of each candidate pair in ``need`` (those the text rules leave open),
        embedding only the responses of those pairs (few, next to n)."""
        if not need:
            return {}
        rows = sorted({int(i[t]) for t in need} | {int(j[t]) for t in need})
        pos = {r: k for k, r in enumerate(rows)}
        e = np.asarray(ctx.embedder.encode([responses[r] for r in rows]), dtype=np.float64)
        return {t: float(e[pos[int(i[t])]] @ e[pos[int(j[t])]]) for t in need}
