"""Cause III on real templated text: does the same-question test tell siblings from paraphrases?

Every prompt, answer and wrong answer comes from Debian data, none from the lab's generator:

- WordNet 3.0 (``wordnet-base``, /usr/share/wordnet): words asked for their definition (the gloss is
  the answer; words with one sense in all of WordNet, so a gloss is the only right answer), quoted
  ("Define the word 'brook'.") and unquoted ("Define brook."), and words asked for a synonym;
- ``iso-codes`` (/usr/share/iso-codes/json): countries' ISO 3166-1 alpha-2, alpha-3 and numeric
  codes, subdivisions' ISO 3166-2 codes, currencies' ISO 4217 codes, languages' ISO 639-3 codes.

Each item is asked once, in one of its family's phrasings: thousands of sibling prompts that share
a template and differ in their slot (a word, a name, a number). Then some items are asked a second
time, in another phrasing (or, for a fifth of the conflicts, the same one):

- ``conflict``: with a wrong answer (the gloss of a WordNet co-hyponym, another lemma of a
  co-hyponym, another entity's code); ``alias`` conflicts name the country by its official or
  common name the second time ("Viet Nam" / "Socialist Republic of Viet Nam" / "Vietnam"). These
  pairs are the truth: the only III pairs there are.
- ``agree``: with the same answer; ``synonym``: with another WordNet synonym of the word ("surplus"
  / "excess"; both right); ``partial``: with the gloss's first clause (both right). None is III.

Both rules run on the same prompts and embeddings, side by side: ``same_question: cosine`` (the
old rule, theta alone) and ``spans`` (the default). Reported per rule: pair precision and recall,
sample precision and recall, the false pairs by kind (``sibling``: two items of one family;
``relation``: one entity in two families, e.g. its alpha-2 and numeric code; ``synonym``/
``partial``/``agree``), the misses by stage (below theta / dropped as different questions / the
responses agreed), timings. Also the measurements behind the rules: MiniLM cosines of the
responses of synonym pairs vs conflict pairs, and of the differing spans of pairs the spans rule
dropped, true conflicts (aliases) vs not. Run from the repo root (~3 min on 2 shared cores):

    .venv/bin/python bench/conflict_templates.py
    .venv/bin/python bench/conflict_templates.py --embedder hashing --scale 0.3   # quick, no MiniLM

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
ISO = Path("/usr/share/iso-codes/json")

PHRASES = {
    "define": ["Define the word '{x}'.", "What does '{x}' mean?", "What is the meaning of the word '{x}'?"],
    "plain": ["Define {x}.", "What is the meaning of {x}?", "Give the definition of {x}."],
    "synonym": ["What is a synonym of '{x}'?", "Give another word for '{x}'.", "Which word means the same as '{x}'?"],
    "alpha2": ["What is the ISO 3166-1 alpha-2 code of {x}?", "Which ISO 3166-1 alpha-2 code does {x} have?",
               "Give the ISO 3166-1 alpha-2 code for {x}."],
    "alpha3": ["What is the ISO 3166-1 alpha-3 code of {x}?", "Which ISO 3166-1 alpha-3 code does {x} have?",
               "Give the ISO 3166-1 alpha-3 code for {x}."],
    "numeric": ["What is the ISO 3166-1 numeric code of {x}?", "Which ISO 3166-1 numeric code does {x} have?",
                "Give the ISO 3166-1 numeric code for {x}."],
    "subdivision": ["What is the ISO 3166-2 code of {x}?", "Which ISO 3166-2 code does {x} have?",
                    "Give the ISO 3166-2 code for {x}."],
    "currency": ["What is the ISO 4217 code of the {x}?", "Which ISO 4217 code does the {x} have?",
                 "Give the ISO 4217 code for the {x}."],
    "language": ["What is the ISO 639-3 code of the {x} language?", "Which ISO 639-3 code does the {x} language have?",
                 "Give the ISO 639-3 code for the {x} language."],
}
SIZES = {"define": 1500, "plain": 300, "synonym": 300, "subdivision": 1200, "language": 1200}  # others: all
SECOND = {"conflict": 150, "alias": 40, "agree": 100, "synonym": 80, "partial": 60}


# ------------------------------------------------------------------------------------------- data
def read_wordnet():
    """Synsets {(pos, offset): (lemmas, gloss, hypernym keys)} and each lemma's sense count."""
    senses: Counter[str] = Counter()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"index.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith(" "):
                f = line.split()
                senses[f[0]] += int(f[2])
    synsets = {}
    for pos in ("noun", "verb", "adj"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            f = head.split()
            n = int(f[3], 16)
            lemmas = [re.sub(r"\(.*\)$", "", f[4 + 2 * k]) for k in range(n)]
            p = 4 + 2 * n
            ptrs = f[p + 1:p + 1 + 4 * int(f[p])]
            hyper = [(ptrs[4 * q + 2], ptrs[4 * q + 1]) for q in range(len(ptrs) // 4) if ptrs[4 * q] in ("@", "@i")]
            gloss = gloss.strip().split('; "')[0].strip().strip('"').strip()
            synsets[(f[2].replace("s", "a"), f[0])] = (lemmas, gloss, hyper)
    return synsets, senses


def wordnet_items(rng: random.Random):
    synsets, senses = read_wordnet()
    children = defaultdict(list)
    for key, (_, _, hyper) in synsets.items():
        for h in hyper:
            children[(h[0].replace("s", "a"), h[1])].append(key)

    def siblings(key):
        return [s for h in synsets[key][2] for s in children[(h[0].replace("s", "a"), h[1])] if s != key]

    of_lemma = defaultdict(set)
    for key, (lemmas, _, _) in synsets.items():
        for lm in lemmas:
            of_lemma[lm].add(key)
    keys = sorted(synsets)
    rng.shuffle(keys)
    used: set[str] = set()
    define, plain, synonym = [], [], []
    for key in keys:
        lemmas, gloss, _ = synsets[key]
        if len(gloss) < 8:
            continue
        one = [w for w in lemmas if senses[w.lower()] == 1 and w.lower() not in used]
        singles = [w for w in lemmas if re.fullmatch(r"[a-z]{3,}", w)]
        if len(synonym) < SIZES["synonym"] and len(singles) >= 3 and singles[0] not in used:
            # a synonym question: the word, two right answers, and a wrong one (a co-hyponym's lemma
            # that shares no synset with the word)
            wrong = [lm for s in siblings(key) for lm in synsets[s][0]
                     if re.fullmatch(r"[a-z]{3,}", lm) and not of_lemma[singles[0]] & of_lemma[lm]][:1]
            if wrong:
                synonym.append({"key": singles[0], "x": singles[0], "answer": singles[1], "alt": singles[2],
                                "wrong": wrong[0]})
                used.update(w.lower() for w in singles)
                continue
        if not one:
            continue
        w = one[0]
        sib = [synsets[s][1] for s in siblings(key) if synsets[s][1] != gloss]
        item = {"key": w.lower(), "x": w.replace("_", " "), "answer": gloss, "wrong": sib[0] if sib else None,
                "partial": gloss.split("; ")[0] if "; " in gloss else None}
        if len(plain) < SIZES["plain"] and key[0] == "n" and re.fullmatch(r"[a-z]+(_[a-z]+)?", w):
            plain.append(item)
        elif len(define) < SIZES["define"]:
            define.append(item)
        else:
            continue
        used.add(w.lower())
        if len(define) >= SIZES["define"] and len(plain) >= SIZES["plain"] and len(synonym) >= SIZES["synonym"]:
            break
    glosses = [synsets[k][1] for k in keys[:2000]]
    for it in define + plain:  # no co-hyponym: a random other gloss is the wrong answer
        it["wrong"] = it["wrong"] or rng.choice([g for g in glosses if g != it["answer"]])
    return define, plain, synonym


def iso_items(rng: random.Random):
    def load(name, key):
        return json.loads((ISO / f"iso_{name}.json").read_text(encoding="utf-8"))[key]

    countries = load("3166-1", "3166-1")
    name_of = {c["alpha_2"]: c.get("common_name", c["name"]) for c in countries}
    fam = {"alpha2": [], "alpha3": [], "numeric": []}
    for c in countries:
        x = c.get("common_name", c["name"])
        aliases = [a for a in (c.get("official_name"), c["name"]) if a and a != x]
        for f, code in (("alpha2", "alpha_2"), ("alpha3", "alpha_3"), ("numeric", "numeric")):
            fam[f].append({"key": c["alpha_2"], "x": x, "answer": c[code], "aliases": aliases})
    subs = load("3166-2", "3166-2")
    rng.shuffle(subs)
    seen, fam["subdivision"] = set(), []
    for s in subs:
        x = f"{s['name']} in {name_of.get(s['code'][:2], s['code'][:2])}"
        if x.casefold() not in seen and len(fam["subdivision"]) < SIZES["subdivision"]:
            seen.add(x.casefold())
            fam["subdivision"].append({"key": s["code"], "x": x, "answer": s["code"]})
    # One entry per name: ISO 4217 lists some names twice (the old and new "Leone", SLL / SLE), a
    # same-question, two-answer pair the truth would have to call III.
    seen, fam["currency"] = set(), []
    for c in load("4217", "4217"):
        if c["name"].casefold() not in seen:
            seen.add(c["name"].casefold())
            fam["currency"].append({"key": c["alpha_3"], "x": c["name"], "answer": c["alpha_3"]})
    langs = [lg for lg in load("639-3", "639-3") if lg["type"] == "L"]
    rng.shuffle(langs)
    seen, fam["language"] = set(), []
    for lg in langs:
        if lg["name"].casefold() not in seen and len(fam["language"]) < SIZES["language"]:
            seen.add(lg["name"].casefold())
            fam["language"].append({"key": lg["alpha_3"], "x": lg["name"], "answer": lg["alpha_3"]})
    for items in fam.values():  # a wrong answer: another item's code of the same family
        answers = [it["answer"] for it in items]
        for it in items:
            it["wrong"] = rng.choice([a for a in answers if a != it["answer"]])
    return fam


def build(seed: int = 0, scale: float = 1.0):
    """The samples ``[{id, family, key, role, prompt, response}]``, the true III pairs (id tuples)
    and the items by family."""
    rng = random.Random(seed)
    define, plain, synonym = wordnet_items(rng)
    fam = {"define": define, "plain": plain, "synonym": synonym, **iso_items(rng)}
    if scale != 1.0:
        fam = {f: items[:max(10, int(len(items) * scale))] for f, items in fam.items()}
    samples, truth = [], set()

    def add(f, it, q, response, role):
        sid = f"{f}-{len(samples)}"
        samples.append({"id": sid, "family": f, "key": it["key"], "role": role,
                        "prompt": PHRASES[f][q].format(x=it.get("ask", it["x"])), "response": response})
        return sid

    first = {}
    for f, items in fam.items():
        for it in items:
            q = rng.randrange(3)
            first[(f, it["key"])] = (add(f, it, q, it["answer"], "base"), q)
    second = {k: max(1, int(v * scale)) for k, v in SECOND.items()}
    pool = [(f, it) for f, items in fam.items() for it in items]
    rng.shuffle(pool)
    taken = set()

    def pick(ok, n):
        out = []
        for f, it in pool:
            if len(out) < n and (f, it["key"]) not in taken and ok(f, it):
                taken.add((f, it["key"]))
                out.append((f, it))
        return out

    def other_q(f, it, same_ok=False):
        q0 = first[(f, it["key"])][1]
        return q0 if same_ok and rng.random() < 0.2 else rng.choice([q for q in range(3) if q != q0])

    for f, it in pick(lambda f, it: True, second["conflict"]):
        sid = add(f, it, other_q(f, it, same_ok=True), it["wrong"], "conflict")
        truth.add(tuple(sorted((first[(f, it["key"])][0], sid))))
    for f, it in pick(lambda f, it: f in ("alpha2", "alpha3", "numeric") and it["aliases"], second["alias"]):
        alias = dict(it, ask=rng.choice(it["aliases"]))
        sid = add(f, alias, other_q(f, it), it["wrong"], "conflict")
        truth.add(tuple(sorted((first[(f, it["key"])][0], sid))))
    for f, it in pick(lambda f, it: f != "synonym", second["agree"]):
        add(f, it, other_q(f, it), it["answer"], "agree")
    for f, it in pick(lambda f, it: f == "synonym", second["synonym"]):
        add(f, it, other_q(f, it), it["alt"], "synonym")
    for f, it in pick(lambda f, it: f in ("define", "plain") and it.get("partial"), second["partial"]):
        add(f, it, other_q(f, it), it["partial"], "partial")
    return samples, truth, fam


# -------------------------------------------------------------------------------------- measuring
def context(samples, embedder, same_question: str, cache=None, theta: float = 0.85):
    import numpy as np
    import pandas as pd

    from ilp_ray.diagnosis.base import DiagnosisContext
    from ilp_ray.diagnosis.config import DiagnosisConfig

    n = len(samples)
    v = pd.DataFrame({"id": [s["id"] for s in samples], "subset": [s["family"] for s in samples],
                      "position": np.arange(n), "answer": 0, "question": [s["prompt"] for s in samples],
                      "options": [[s["response"], "-"] for s in samples], "distractor_ids": [["d"]] * n,
                      "pass_expected": 0.1, "unlearned": True})
    cfg = DiagnosisConfig(embedder="minilm", conflict={"judge": "none", "same_question": same_question,
                                                       "theta": theta})
    ctx = DiagnosisContext(verdicts=v, config=cfg, embedder=embedder)
    if cache is not None:
        ctx._cache = cache  # the same prompt embeddings and neighbour table for both rules
    return ctx


def kind_of(a, b) -> str:
    if a["key"] == b["key"] and a["family"] == b["family"]:
        return b["role"] if b["role"] != "base" else a["role"]  # agree / synonym / partial
    if a["family"] == b["family"]:
        return "sibling"
    return "relation" if a["key"] == b["key"] else "other"


WORDNET_FAMILIES = ("define", "plain", "synonym")


def pr(found: set, truth: set) -> dict:
    return {"precision": round(len(found & truth) / max(1, len(found)), 4),
            "recall": round(len(found & truth) / max(1, len(truth)), 4), "pairs": len(found)}


def evaluate(samples, truth, res, sim_pairs):
    by_id = {s["id"]: s for s in samples}
    found = {tuple(sorted(p)) for p in res.info["pairs"][["a", "b"]].itertuples(index=False)}
    tp = found & truth
    wn = {s["id"] for s in samples if s["family"] in WORDNET_FAMILIES}
    slices = {"wordnet": pr({p for p in found if p[0] in wn}, {p for p in truth if p[0] in wn}),
              "iso": pr({p for p in found if p[0] not in wn}, {p for p in truth if p[0] not in wn}),
              # the pairs a prompt rule can get wrong: two synonym answers to one question are one
              # question, so only a judge (or a lexicon) can clear them
              "without_synonym_answers": pr({p for p in found if kind_of(by_id[p[0]], by_id[p[1]]) != "synonym"},
                                            truth)}
    false = Counter(kind_of(by_id[a], by_id[b]) for a, b in found - truth)
    examples = defaultdict(list)
    for a, b in sorted(found - truth):
        k = kind_of(by_id[a], by_id[b])
        if len(examples[k]) < 3:
            examples[k].append([by_id[a]["prompt"], by_id[b]["prompt"], by_id[a]["response"][:60],
                                by_id[b]["response"][:60]])
    dropped = {tuple(sorted(p)) for p in res.info["template_pairs"][["a", "b"]].itertuples(index=False)}
    missed = truth - found
    miss = {"below_theta": len(missed - sim_pairs), "dropped_as_different_question": len(missed & dropped),
            "responses_agreed": len(missed & sim_pairs - dropped)}
    miss_examples = [[by_id[a]["prompt"], by_id[b]["prompt"]] for a, b in sorted(missed & dropped)[:5]]
    true_s = {x for p in truth for x in p}
    flagged = set(res.frame.index[res.frame["is_sft_internal_conflict"].to_numpy()])
    ids = [s["id"] for s in samples]
    pred_s = {ids[k] for k in flagged}
    r4 = lambda x: round(x, 4)  # noqa: E731
    return {"pair_precision": r4(len(tp) / max(1, len(found))), "pair_recall": r4(len(tp) / max(1, len(truth))),
            "sample_precision": r4(len(pred_s & true_s) / max(1, len(pred_s))),
            "sample_recall": r4(len(pred_s & true_s) / max(1, len(true_s))),
            "conflict_pairs": len(found), "true_pairs_found": len(tp), "slices": slices, "false_pairs": dict(false),
            "false_pair_examples": dict(examples), "misses": miss, "dropped_conflict_examples": miss_examples,
            "similar_pairs": res.summary["similar_pairs"],
            "template_pairs_dropped": res.summary["template_pairs_dropped"],
            "seconds": res.summary["search_seconds"] + res.summary["compare_group_seconds"]
            + res.summary["judge_report_seconds"]}


def quantiles(x) -> dict:
    import numpy as np

    x = np.asarray(x, float)
    if not len(x):
        return {"n": 0}
    return {"n": len(x), **{f"q{int(q * 100):02d}": round(float(np.quantile(x, q)), 3) for q in (0.05, 0.25, 0.5, 0.75, 0.95)}}


def measurements(samples, truth, items, embedder, res_spans, prompts):
    """MiniLM cosines behind the rules: responses of synonym vs conflict pairs; differing spans of
    the pairs the spans rule dropped, true conflicts vs the rest."""
    import numpy as np

    from ilp_ray.diagnosis.pairs import SameQuestion

    def cos(pairs):
        if not pairs:
            return []
        a = np.asarray(embedder.encode([p[0] for p in pairs]))
        b = np.asarray(embedder.encode([p[1] for p in pairs]))
        return (a * b).sum(1).tolist()

    # every synonym item: two WordNet synonyms (both right) vs a synonym and a co-hyponym's lemma
    # (a wrong answer); every definition with a first clause: the gloss and that clause vs the
    # gloss and a co-hyponym's gloss; codes vs another item's code (one-token wrong answers)
    syn = items["synonym"]
    defs = (items["define"] + items["plain"])[:600]
    rc = {"synonym_words": cos([(it["answer"], it["alt"]) for it in syn]),
          "different_words": cos([(it["answer"], it["wrong"]) for it in syn]),
          "gloss_and_first_clause": cos([(it["answer"], it["partial"]) for it in defs if it.get("partial")]),
          "different_glosses": cos([(it["answer"], it["wrong"]) for it in defs]),
          "different_codes": cos([(it["answer"], it["wrong"]) for f in ("alpha2", "alpha3", "subdivision",
                                                                        "currency", "language")
                                  for it in items[f][:120]])}
    out = {"response_cosine": {k: quantiles(v) for k, v in rc.items()}}
    s_, c_ = np.asarray(rc["synonym_words"]), np.asarray(rc["different_words"])
    out["response_cosine"]["auc_synonym_vs_different_words"] = round(float((s_[:, None] > c_[None, :]).mean()), 3)
    out["response_cosine"]["synonyms_at_or_above_theta_response"] = round(float((s_ >= 0.8).mean()), 3)
    out["response_cosine"]["different_words_at_or_above_theta_response"] = round(float((c_ >= 0.8).mean()), 3)
    ids = {s["id"]: k for k, s in enumerate(samples)}
    sq = SameQuestion(prompts)
    spans = {"true_conflict": [], "not_conflict": []}
    for a, b in res_spans.info["template_pairs"][["a", "b"]].itertuples(index=False):
        _, _, ua, ub = sq.test(ids[a], ids[b])
        key = "true_conflict" if tuple(sorted((a, b))) in truth else "not_conflict"
        spans[key].append((" ".join(u.text for u in ua), " ".join(u.text for u in ub)))
    rng = random.Random(0)
    spans["not_conflict"] = rng.sample(spans["not_conflict"], min(2000, len(spans["not_conflict"])))
    sc = {k: cos(v) for k, v in spans.items()}
    out["dropped_span_cosine"] = {k: quantiles(v) for k, v in sc.items()}
    out["dropped_span_examples"] = {k: [list(p) + [round(c, 3)] for p, c in zip(v[:6], sc[k][:6], strict=False)]
                                    for k, v in spans.items()}
    return out


def main(args) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ilp_ray.data.embed import HashingEmbedder, torch_threads
    from ilp_ray.diagnosis.run import make_embedder
    from ilp_ray.diagnosis.sft_internal_conflict import SftInternalConflict

    t0 = time.perf_counter()
    samples, truth, items = build(args.seed, args.scale)
    roles = Counter(s["role"] for s in samples)
    print(f"{len(samples)} samples ({dict(roles)}), {len(truth)} true III pairs, built in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    if args.embedder == "hashing":
        emb = HashingEmbedder()
    else:
        from ilp_ray.diagnosis.config import DiagnosisConfig

        emb = make_embedder(DiagnosisConfig(threads=args.threads))
    with torch_threads(args.threads):
        t1 = time.perf_counter()
        ctx = context(samples, emb, "cosine")
        ctx.prompt_embeddings()
        t_embed = time.perf_counter() - t1
        results, raw = {}, {}
        for rule in ("cosine", "spans"):
            c = context(samples, emb, rule, cache=ctx._cache)
            raw[rule] = SftInternalConflict().run(c)
        # every pair the search found, whatever its responses: the cosine rule's candidates
        i, j, _, _ = _search(ctx)
        ids = [s["id"] for s in samples]
        sim_pairs = {tuple(sorted((ids[a], ids[b]))) for a, b in zip(i.tolist(), j.tolist(), strict=True)}
        for rule, res in raw.items():
            results[rule] = evaluate(samples, truth, res, sim_pairs)
            r = results[rule]
            print(f"{rule:>6}: pairs P {r['pair_precision']:.3f} R {r['pair_recall']:.3f} | samples P "
                  f"{r['sample_precision']:.3f} R {r['sample_recall']:.3f} | {r['conflict_pairs']} pairs, false "
                  f"{r['false_pairs']}, misses {r['misses']}", flush=True)
            print("        " + "; ".join(f"{k}: P {v['precision']:.3f} R {v['recall']:.3f} ({v['pairs']} pairs)"
                                      for k, v in r["slices"].items()), flush=True)
        meas = measurements(samples, truth, items, emb, raw["spans"], [s["prompt"] for s in samples])
        by_theta = {}
        for theta in args.thetas:  # the spans rule at lower prompt-cosine thresholds
            res = SftInternalConflict().run(context(samples, emb, "spans", cache=ctx._cache, theta=theta))
            r = evaluate(samples, truth, res, sim_pairs)
            by_theta[str(theta)] = {k: r[k] for k in ("pair_precision", "pair_recall", "sample_precision",
                                                      "sample_recall", "conflict_pairs")}
            by_theta[str(theta)]["without_synonym_answers"] = r["slices"]["without_synonym_answers"]
            print(f"spans at theta {theta}: pairs P {r['pair_precision']:.3f} R {r['pair_recall']:.3f} "
                  f"(without synonym answers P {r['slices']['without_synonym_answers']['precision']:.3f})", flush=True)
    return {"embedder": args.embedder, "seed": args.seed, "samples": len(samples), "roles": dict(roles),
            "true_pairs": len(truth), "embed_seconds": round(t_embed, 1),
            "old_cosine": results["cosine"], "new_spans": results["spans"], "spans_by_theta": by_theta, **meas,
            "seconds": round(time.perf_counter() - t0, 1)}


def _search(ctx):
    from ilp_ray.diagnosis.pairs import pairs_from_neighbours

    cfg = ctx.config.conflict
    n = len(ctx.verdicts)
    return pairs_from_neighbours(*ctx.prompt_neighbours(min(cfg.k + 1, n), cfg.block_size), cfg.theta)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--embedder", choices=["minilm", "hashing"], default="minilm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of every family's items (and second askings)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    p.add_argument("--thetas", type=lambda x: [float(t) for t in x.split(",") if t], default=[0.8, 0.75, 0.7],
                   help="also run the spans rule at these prompt-cosine thresholds (comma-separated)")
    return p


if __name__ == "__main__":
    if not (WORDNET / "data.noun").exists() or not (ISO / "iso_3166-1.json").exists():
        sys.exit("needs the Debian packages wordnet-base and iso-codes")
    print(json.dumps(main(make_parser().parse_args())))
