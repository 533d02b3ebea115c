"""SFT-internal conflict search (cause III) at 10k, 30k and 100k samples on one machine.

Synthetic prompts are generated deterministically: each sample asks for one attribute of one
made-up entity in one of several phrasings. Planted among them: paraphrase pairs that agree (the
same fact asked twice, same answer) and contradiction pairs (the same fact asked twice, different
answers). Each size runs in its own process so that its peak RSS is its own. Reported per size:
embedding seconds, similarity-search seconds, response comparison + grouping seconds, the
detector's total, peak RSS, and the recall of the planted contradictions; then the growth exponent
of the search time (log-log slope). Run from the repo root:

    .venv/bin/python bench/conflicts.py                                   # 10k, 30k, 100k, hashing
    .venv/bin/python bench/conflicts.py --n 100000 --embedder minilm      # the issue's target
    .venv/bin/python bench/conflicts.py --n 10000 --embedder minilm --backend torch
    .venv/bin/python bench/conflicts.py --backend-ratio                   # torch vs ONNX, side by side

It runs as ``ilp diagnose`` does: the diagnosis's embedder and every core (``threads`` unset).
``--embedder hashing`` (default) gives the search-only figure. The last line is one JSON object with
``seconds`` and ``peak_rss_mb`` (of the largest size) and every size's figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

ATTRS = ["capital", "founder", "population", "currency", "height", "birth year", "inventor", "main export",
         "official language", "largest lake", "oldest building", "national animal"]
PHRASES = ["What is the {a} of the {e}?", "Tell me the {a} of the {e}.", "Which is the {a} of the {e}?",
           "Do you know the {a} of the {e}?", "Name the {a} of the {e}."]
_WORDS = ("amber anchor apple arctic autumn badger bamboo banner barley basalt beacon birch bison blossom "
          "bramble bronze brook cactus canyon canvas cedar cellar chalk cherry cinder citrus clover cobalt "
          "comet copper coral cotton crater crimson crystal cypress dahlia delta desert dingo dolphin "
          "dragon dune eagle ember falcon fern fjord flint forest fossil fox garnet geyser ginger glacier "
          "granite grove gull harbor hazel heron hollow honey horizon iris ivory jade jasmine juniper kelp "
          "kestrel lagoon lantern lark lava lemon lilac linen lotus lynx magnet mango maple marble marsh "
          "meadow mesa mint mirror moss nectar nickel oasis ocean olive onyx orchid osprey otter pebble "
          "pepper pine plum prairie quartz quill raven reef ridge river saffron sage salmon sapphire "
          "savanna scarlet shale sierra silver slate spruce summit swan thistle thunder tiger timber topaz "
          "tulip tundra valley velvet violet walnut willow wolf zephyr")
WORDS = _WORDS.split()


def entity(rng) -> str:
    """A made-up subject of five real words, so prompts differ in content (and the hashing
    embedder, which knows no synonyms, still sees paraphrases as close)."""
    return " ".join(rng.sample(WORDS, 5))


def make_samples(n: int, plant: float = 0.02, seed: int = 0):
    """(ids, prompts, responses, planted contradiction pairs as index tuples).

    The first ``plant × n`` facts are asked twice with the same answer (agreeing paraphrases), the
    next ``plant × n`` twice with different numbers in the answer (contradictions).
    """
    import random

    rng = random.Random(seed)
    ids, prompts, responses, contradictions = [], [], [], []
    n_pairs = int(n * plant)
    i = 0
    while len(prompts) < n:
        a, e = ATTRS[i % len(ATTRS)], entity(rng)
        p1, p2 = rng.sample(PHRASES, 2)
        value = f"{rng.choice(WORDS).capitalize()} {rng.randint(1, 999)}"
        ids.append(f"s{len(prompts)}")
        prompts.append(p1.format(a=a, e=e))
        responses.append(value)
        if i < 2 * n_pairs and len(prompts) < n:  # planted: the same fact asked again
            other = value if i < n_pairs else f"{value.split()[0]} {rng.randint(1000, 1999)}"
            if i >= n_pairs:
                contradictions.append((len(prompts) - 1, len(prompts)))
            ids.append(f"s{len(prompts)}")
            prompts.append(p2.format(a=a, e=e))
            responses.append(other)
        i += 1
    return ids, prompts, responses, contradictions


def run_one(n: int, embedder: str, k: int, theta: float, backend: str = "auto") -> dict:
    import numpy as np
    import pandas as pd

    from ilp_ray.data.embed import torch_threads
    from ilp_ray.diagnosis.base import DiagnosisContext
    from ilp_ray.diagnosis.config import DiagnosisConfig
    from ilp_ray.diagnosis.run import diagnosis_threads, make_embedder
    from ilp_ray.diagnosis.sft_internal_conflict import SftInternalConflict

    ids, prompts, responses, planted = make_samples(n)
    v = pd.DataFrame({"id": ids, "subset": "bench", "position": np.arange(n), "answer": 0, "question": prompts,
                      "options": [[r, "x"] for r in responses], "distractor_ids": [["d"]] * n,
                      "pass_expected": 0.1, "unlearned": True})
    # The diagnosis's own embedder and threads (every core, as `ilp diagnose` runs it).
    cfg = DiagnosisConfig(embedder=embedder, embed_backend=backend, conflict={"theta": theta, "k": k, "judge": "model"})
    emb = make_embedder(cfg)
    ctx = DiagnosisContext(verdicts=v, config=cfg, embedder=emb)
    with torch_threads(diagnosis_threads(cfg)):
        t0 = time.perf_counter()
        ctx.prompt_embeddings()
        t_embed = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = SftInternalConflict().run(ctx)
        t_detect = time.perf_counter() - t1
    found = set(map(tuple, res.info["pairs"][["a", "b"]].itertuples(index=False)))
    hits = sum((ids[a], ids[b]) in found for a, b in planted)
    s = res.summary
    return {"n": n, "embedder": embedder, "backend": getattr(emb, "active_backend", "-"), "embed_s": round(t_embed, 2), "search_s": s["search_seconds"],
            "compare_group_s": s["compare_group_seconds"], "detector_s": round(t_detect, 2),
            "seconds": round(t_embed + t_detect, 2), "texts_per_s": round(n / t_embed, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "planted_contradictions": len(planted), "recall": round(hits / max(1, len(planted)), 4),
            "conflict_pairs": s["conflict_pairs"], "groups": s["groups"], "saturated": s["saturated_samples"]}


def backend_ratio(n: int = 4000, rounds: int = 2) -> dict:
    """MiniLM texts/s on torch and on ONNX Runtime, alternated in one process on the same prompts
    (every core, the diagnosis's batch size), and their ratio."""
    from ilp_ray.data.embed import Embedder
    from ilp_ray.diagnosis.config import DiagnosisConfig

    _, prompts, _, _ = make_samples(n)
    bs, speed = DiagnosisConfig().embed_batch_size, {"torch": [], "onnx": []}
    embedders = {b: Embedder(batch_size=bs, num_threads=os.cpu_count(), backend=b) for b in speed}
    for e in embedders.values():
        e.encode(prompts[:200])  # load (and export) outside the timing
    for _ in range(rounds):
        for b, e in embedders.items():
            t = time.perf_counter()
            e.encode(prompts)
            speed[b].append(n / (time.perf_counter() - t))
    out = {b: round(sum(v) / len(v), 1) for b, v in speed.items()}
    out["onnx_over_torch"] = round(out["onnx"] / out["torch"], 3)
    print(f"MiniLM texts/s: torch {out['torch']:.0f}, onnx {out['onnx']:.0f}, ratio {out['onnx_over_torch']:.2f}")
    return out


def main(args) -> dict:
    if args.backend_ratio:
        return backend_ratio()
    if args.theta is None:
        args.theta = 0.85 if args.embedder == "minilm" else 0.79
    sizes = [args.n] if args.n else [10_000, 30_000, 100_000]
    if args.one:
        return run_one(sizes[0], args.embedder, args.k, args.theta, args.backend)
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--one", "--n", str(n), "--embedder", args.embedder, "--k", str(args.k),
               "--theta", str(args.theta), "--backend", args.backend]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
        if out.returncode != 0:
            raise SystemExit(f"n={n} failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"n={n:>7}: embed {row['embed_s']:7.1f}s ({row['texts_per_s']:.0f}/s)  search {row['search_s']:7.1f}s  "
              f"compare+group {row['compare_group_s']:5.1f}s  total {row['seconds']:7.1f}s  "
              f"peak {row['peak_rss_mb']} MB  recall {row['recall']:.3f}", flush=True)
    result = {"embedder": args.embedder, "k": args.k, "theta": args.theta, "sizes": rows,
              "seconds": rows[-1]["seconds"], "peak_rss_mb": max(r["peak_rss_mb"] for r in rows)}
    if len(rows) > 1:
        x = [math.log(r["n"]) for r in rows]
        for key in ("search_s", "seconds"):
            y = [math.log(max(r[key], 1e-3)) for r in rows]
            mx, my = sum(x) / len(x), sum(y) / len(y)
            result[f"growth_exponent_{key}"] = round(
                sum((a - mx) * (b - my) for a, b in zip(x, y, strict=False)) / sum((a - mx) ** 2 for a in x), 2)
        print(f"growth exponent: search {result['growth_exponent_search_s']}, total {result['growth_exponent_seconds']}")
    return result


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="one size; default: 10k, 30k and 100k")
    p.add_argument("--embedder", choices=["hashing", "minilm"], default="hashing")
    p.add_argument("--k", type=int, default=16, help="neighbours searched per sample")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto", help="MiniLM backend")
    p.add_argument("--theta", type=float, default=None, help=(
        "prompt cosine threshold; default 0.85 for MiniLM (the config default) and 0.79 for the hashing "
        "embedder, whose paraphrase cosines on these prompts are 0.79-0.90 (others stay below 0.79)"))
    p.add_argument("--backend-ratio", action="store_true", help="only compare MiniLM on torch and ONNX, side by side")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(main(make_parser().parse_args())))
