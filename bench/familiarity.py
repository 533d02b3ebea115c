"""Entity familiarity as a signal for cause I (issue 16, a lead, not a rule the diagnosis uses).

On the Debian world, cause II's precision sinks because a small base guesses confidently about
entities it has never read (the fictional I facts: PMI gains of 1-32 nats, overlapping the true
II). Mallen et al. (2023, "When Not to Trust Language Models") found that what a model knows of an
entity follows how familiar the entity is. This measures whether the base's own surprisal of the
prompt's content span (the entity, code or quoted word that the same-question test of III reads,
``pairs.SameQuestion.units``; numbers left out) tells the fictional entities from the real ones the
base knows, before anything is built on it:

- ``span_nats``: the base's summed surprisal of the span's tokens in the prompt (nats);
- ``per_char``: the same over the span's characters (a long name is not unfamiliar for its length);
- ``z`` variants: standardised per task against the real facts the probe says the base knows
  (the reference a team's data would give: the samples the base gets right).

Only the prompts and the base are read (no SFT, no audit); the probe is the cached one of
``bench/world_debian.py``. ROC AUC of "fictional" (category I) against the known real facts
(control and II), and against the real facts the base does not know (IV).

    .venv/bin/python bench/familiarity.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path


def span_surprisal(prompts: list[str], responses: list[str], model, tok) -> list[dict]:
    """Per prompt: the content span's surprisal under ``model`` (summed nats, per char, tokens)."""
    import torch

    from ilp_ray.diagnosis.pairs import SameQuestion

    sq = SameQuestion(prompts, responses)
    out = []
    for s, p in enumerate(prompts):
        spans = []
        for u in sq.units(s):
            if u.kind == "number":
                continue
            m = re.search(r"\W+".join(re.escape(w) for w in u.text.split()), p, flags=re.I)
            if m:
                spans.append((m.start(), m.end()))
        enc = tok(p, return_offsets_mapping=True, return_tensors="pt")
        ids, offs = enc["input_ids"], enc["offset_mapping"][0].tolist()
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0].float(), -1)
        nll = [0.0] + [-float(lp[i - 1, ids[0, i]]) for i in range(1, ids.shape[1])]
        sel = sorted({i for a, b in spans for i, (x, y) in enumerate(offs) if i > 0 and x < b and y > a})
        chars = sum(b - a for a, b in spans)
        tot = sum(nll[i] for i in sel)
        out.append({"span_nats": tot if sel else None, "per_char": tot / chars if sel else None, "n_tok": len(sel)})
    return out


def aucs(rows: list[dict]) -> dict:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    res = {}
    for metric in ("span_nats", "per_char"):
        for z in (False, True):
            y, x, y4, x4 = [], [], [], []
            for task in {r["task"] for r in rows}:
                rs = [r for r in rows if r["task"] == task and r[metric] is not None]
                ref = np.array([r[metric] for r in rs if r["known"] and r["category"] in ("control", "II")])
                if len(ref) < 3:
                    continue
                mu, sd = (ref.mean(), ref.std() + 1e-9) if z else (0.0, 1.0)
                for r in rs:
                    v = (r[metric] - mu) / sd
                    if r["category"] == "I" or (r["known"] and r["category"] in ("control", "II")):
                        y.append(r["category"] == "I")
                        x.append(v)
                    if r["category"] in ("I", "IV"):
                        y4.append(r["category"] == "I")
                        x4.append(v)
            key = metric + ("_z" if z else "")
            res[key] = {"I_vs_known": round(float(roc_auc_score(y, x)), 3),
                        "I_vs_IV": round(float(roc_auc_score(y4, x4)), 3), "n_I": int(sum(y)), "n_known": len(y) - int(sum(y))}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/familiarity", help="Where each seed's world and figures go.")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from world_debian import build_world

    from ilp_ray.models import load_model

    t0 = time.time()
    model, tok = load_model("smollm2-135m")
    per_seed = {}
    for seed in args.seeds:
        out = Path(args.out) / f"s{seed}"
        build_world(seed, "small", [], 0.5, out)
        sft = [json.loads(line) for line in (out / "world" / "sft.jsonl").read_text().splitlines()]
        truth = {str(t["id"]): t for t in map(json.loads, (out / "world" / "truth.jsonl").read_text().splitlines())}
        sur = span_surprisal([r["prompt"] for r in sft], [r["response"] for r in sft], model, tok)
        rows = [{**s, "category": truth[str(r["id"])]["category"], "task": truth[str(r["id"])]["task"],
                 "known": truth[str(r["id"])]["known_by_probe"]} for r, s in zip(sft, sur, strict=True)]
        (out / "familiarity.json").write_text(json.dumps(rows))
        per_seed[seed] = aucs(rows)
        print(f"seed {seed}: {json.dumps(per_seed[seed])}", flush=True)
    print(json.dumps({"seeds": args.seeds, "auc": per_seed, "wall_s": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
