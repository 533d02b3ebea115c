"""Does the base's wrong pick beat the same options asked of other entities? (issue 16, a lead)

Cause II fires on a confident wrong base pick that the question raises over its question-free
prior (PMI). A small base also raises an option for the *template* ("What country has the code
*?" raises a country name of the kind it likes, whatever the code), which is no belief about
this entity. This measures, on a finished ``bench/world_debian.py`` run, the template contrast of
each unlearned sample: ``log p(pick | q) - log mean_peers p(pick | q')``, both calibrated by the
option prior as the audit scores them, where the peers ``q'`` are up to ``--k`` other prompts of
the same template (``data.forms.prompt_templates``) with the item's own options. It reads the
world's truth only to report, by true category, how the contrast of each diagnosis falls.

    .venv/bin/python bench/template_contrast.py --run runs/debian/s2
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="A finished bench/world_debian.py --out folder.")
    ap.add_argument("--k", type=int, default=4, help="Peer prompts of the same template per item.")
    ap.add_argument("--audit-name", default="audit")
    args = ap.parse_args(argv)
    import numpy as np
    import pandas as pd
    import torch

    from ilp_ray.config import ScoringConfig
    from ilp_ray.data.forms import prompt_templates
    from ilp_ray.records import McItem
    from ilp_ray.scoring.engines import make_engine
    from ilp_ray.scoring.prior import prior_items, prior_lookup
    from ilp_ray.storage import load_verdicts

    torch.set_num_threads(2)
    t0, run = time.time(), args.run
    diag = pd.read_parquet(f"{run}/{args.audit_name}/diagnosis/diagnosis.parquet")
    truth = pd.read_json(f"{run}/world/truth.jsonl", lines=True).set_index("id")
    sft = pd.read_json(f"{run}/world/sft.jsonl", lines=True)
    v = load_verdicts(f"{run}/{args.audit_name}").set_index("id")
    tids = dict(zip(sft.id, prompt_templates(sft.prompt.tolist()).ids, strict=True))
    prompt = dict(zip(sft.id, sft.prompt, strict=True))
    rng = np.random.default_rng(0)
    unl = diag[diag.unlearned]
    items, owner = [], []
    for i in unl.id:
        peers = [j for j in sft.id if tids[j] == tids[i] and prompt[j] != prompt[i]]
        peers = [peers[k] for k in rng.permutation(len(peers))[:args.k]]
        for j in [i, *peers]:
            items.append(McItem(id=f"{i}|{j}", question=prompt[j], options=tuple(v.loc[i, "options"]), answer=0))
            owner.append(i)
    eng = make_engine(ScoringConfig(format="chat"), "smollm2-135m", tag="base")
    pitems = prior_items([it.options for it in items])
    prior = prior_lookup(pitems, [sc.logprob_sum for sc in eng.score(pitems)])
    dists: dict[str, list] = {}
    for it, sc in zip(items, eng.score(items), strict=True):
        lp = np.array(sc.logprob_sum) - np.array([prior[o] for o in it.options])
        p = np.exp(lp - lp.max())
        dists.setdefault(it.id.split("|")[0], []).append(p / p.sum())
    rows = []
    for _, r in unl.iterrows():
        ps = dists[r.id]
        pred = int(np.argmax(ps[0]))
        contrast = (float(np.log(ps[0][pred] + 1e-12) - np.log(np.mean(ps[1:], axis=0)[pred] + 1e-12))
                    if len(ps) > 1 else None)
        rows.append({"id": r.id, "category": truth.loc[r.id, "category"], "cause": r.cause,
                     "audit_p_pick": round(float(max(v.loc[r.id, "base_probs"])), 3),
                     "rescored_p_pick": round(float(ps[0][pred]), 3), "peers": len(ps) - 1,
                     "contrast": None if contrast is None else round(contrast, 2)})
    df = pd.DataFrame(rows)
    print(df.sort_values(["cause", "category"]).to_string(index=False))
    called_ii = df[df.cause == "base_conflict"]
    by = {c: sorted(g.contrast.dropna().tolist()) for c, g in called_ii.groupby("category")}
    print(json.dumps({"run": run, "k": args.k, "called_II_contrast_by_true_category": by,
                      "max_rescore_gap": round(float((df.audit_p_pick - df.rescored_p_pick).abs().max()), 3),
                      "wall_s": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
