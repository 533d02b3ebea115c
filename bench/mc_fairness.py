"""Are the MC items fair questions? Distractor search × scoring rule, on real mixed facts, side by side.

The SFT set is real reference data from Debian packages (ISO codes, /etc/services ports, tz zones,
WordNet glosses; ``ilp_ray.lab.debian``), mixed in one set as teams mix tasks, every record a
*true* fact with its first template's prompt. The bundled SmolLM2-135M (no fine-tuning: the base a
team audits against) scores every item in the chat format, and every item's options again with
an empty question (the prior).

For each distractor search (``nearest``: by meaning, any form; ``typed``: the answer's form,
the prompt's template first) it reports:

- ``form_mismatch`` / ``task_mismatch``: items with an option of another answer form / another task;
- per scoring rule (``sum``: summed log-likelihood; ``chars``: per character, lm-eval's acc_norm;
  ``tokens``: per token; ``prior``: minus the question-free log-likelihood, lm-eval's
  acc_mutual_info): ``accuracy`` on these true facts (a rule that measures knowledge picks the
  true value more often), and the share of picks that are the item's shortest option;
- ``unfair``: items whose answer or a distractor has question-free probability >= 0.9 (the
  fairness check's default), and per band of the prior's top probability, how often the
  uncalibrated pick is the prior's pick (the evidence for that threshold).

    .venv/bin/python bench/mc_fairness.py [--per-task 25] [--format chat] [--seed 0]

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

BANDS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 0.99), (0.99, 1.01))


def records(per_task: int, seed: int):
    """True facts of every task, ``per_task`` each (seeded), with the task's first template."""
    from ilp_ray.lab.debian import TASKS, real_facts, words
    from ilp_ray.records import SftRecord

    rng = np.random.default_rng(seed)
    facts = real_facts()
    facts["definition"] = words()[0]
    out, task_of = [], {}
    for name, task in TASKS.items():
        pool = sorted(facts[name].items())
        pick = rng.choice(len(pool), size=min(per_task, len(pool)), replace=False)
        for j in sorted(pick.tolist()):
            entity, value = pool[j]
            rid = f"{name}-{j}"
            out.append(SftRecord(id=rid, prompt=task.templates[0].format(e=entity), response=value,
                                 position=len(out)))
            task_of[value] = name
    return out, task_of


def scores(engine, items):
    from ilp_ray.records import McItem

    with_q = engine.score(items)
    empty = engine.score([McItem(id=it.id, question="", options=it.options, answer=it.answer) for it in items])
    return with_q, empty


def measure(items, with_q, empty, task_of) -> dict:
    from ilp_ray.data.forms import answer_form

    rules: dict[str, list] = {r: [] for r in ("sum", "chars", "tokens", "prior")}
    unfair, follows = [], {b: [] for b in BANDS}
    form_mis = task_mis = 0
    for it, s, e in zip(items, with_q, empty, strict=True):
        key = answer_form(it.options[it.answer]).key
        form_mis += any(answer_form(o).key != key for o in it.options)
        task_mis += any(task_of.get(o) != task_of.get(it.options[it.answer]) for o in it.options)
        lp, pl = np.array(s.logprob_sum), np.array(e.logprob_sum)
        chars, toks = np.array(s.n_chars, float), np.array(s.n_tokens, float)
        shortest = int(np.argmin(chars))
        for name, sc in (("sum", lp), ("chars", lp / chars), ("tokens", lp / toks), ("prior", lp - pl)):
            pick = int(np.argmax(sc))
            rules[name].append((pick == it.answer, pick == shortest))
        pp = np.exp(pl - pl.max())
        pp /= pp.sum()
        unfair.append(bool(pp.max() >= 0.9))
        for lo, hi in BANDS:
            if lo <= pp.max() < hi:
                follows[(lo, hi)].append(int(np.argmax(lp)) == int(np.argmax(pl)))
    n = len(items)
    return {
        "items": n, "form_mismatch": round(form_mis / n, 4), "task_mismatch": round(task_mis / n, 4),
        "rules": {r: {"accuracy": round(float(np.mean([a for a, _ in v])), 4),
                      "shortest_pick": round(float(np.mean([b for _, b in v])), 4)} for r, v in rules.items()},
        "unfair": round(float(np.mean(unfair)), 4),
        "sum_pick_is_prior_pick": {f"{lo}-{min(hi, 1.0)}": {"n": len(v), "share": round(float(np.mean(v)), 3)
                                                              if v else None} for (lo, hi), v in follows.items()},
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-task", type=int, default=25)
    p.add_argument("--format", default="chat")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from ilp_ray.config import ScoringConfig
    from ilp_ray.data import build_mc_items
    from ilp_ray.scoring.engines import make_engine

    torch.set_num_threads(args.threads)
    recs, task_of = records(args.per_task, args.seed)
    engine = make_engine(ScoringConfig(format=args.format, batch_size=16), "smollm2-135m")
    out = {"records": len(recs), "format": args.format, "seed": args.seed, "per_task": args.per_task}
    for search in ("nearest", "typed"):
        t = time.perf_counter()
        items = build_mc_items(recs, k=4, seed=args.seed, distractors=search)
        build_s = time.perf_counter() - t
        m = measure(items, *scores(engine, items), task_of)
        m["build_s"] = round(build_s, 2)
        m["fallback"] = {str(k): sum(it.fallback == k for it in items) for k in (0, 1, 2)}
        out[search] = m
        print(f"{search:8s} form mismatch {m['form_mismatch']:.3f}  task mismatch {m['task_mismatch']:.3f}  "
              f"unfair {m['unfair']:.3f}  " + "  ".join(f"{r} acc {v['accuracy']:.3f} (shortest {v['shortest_pick']:.2f})"
                                                      for r, v in m["rules"].items()))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
