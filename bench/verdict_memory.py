"""The verdict stage's driver memory: every item at once (the route before issue 22's chunks)
against the chunked stage (``ilp_ray.audit.verdicts``), side by side on the same synthetic scores.

    .venv/bin/python bench/verdict_memory.py --n 300000 [--out /tmp/verdict-mem]

The parent writes n items (4 options from a 40k-word vocabulary, 4 in 5 built, so calibrated)
and two models' option scores with the prior pseudo-items, as Parquet; then each route runs in a
fresh process that reads them as Arrow tables (as the audit holds them), computes the verdicts
with a base model, priors and the fairness columns, writes them and the summary. Printed per
route: the process's peak RSS (``ru_maxrss``), its RSS before the stage (the tables read) and the
stage's wall time; then whether the two written tables are equal (Arrow ``equals``) and the
summaries too. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(n: int, out: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ilp_ray.scoring.prior import prior_items

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40_000)]
    opts = [[words[j] for j in row] for row in rng.integers(0, len(words), (n, 4))]
    ids = [f"s{i:07d}" for i in range(n)]
    items = pa.table({
        "id": ids, "question": [f"What is {i}?" for i in ids], "options": opts,
        "answer": pa.array(rng.integers(0, 4, n), pa.int64()),
        "distractor_ids": pa.array([[] if i % 5 == 0 else [ids[(i + 1) % n]] for i in range(n)],
                                   pa.list_(pa.string())),
        "subset": [f"s{i * 3 // n + 1}" for i in range(n)], "position": pa.array(range(n), pa.int64()),
        "fallback": pa.array(np.zeros(n, np.int64)),
    })
    pq.write_table(items, out / "items.parquet")
    pseudo = prior_items(opts)
    rows = [(i, o) for i, o in zip(ids, opts)] + [(p.id, list(p.options)) for p in pseudo]
    for tag, seed in (("sft", 1), ("base", 2)):
        r = np.random.default_rng(seed)
        lp = [list(r.normal(-3, 2, len(o))) for _, o in rows]
        pq.write_table(pa.table({"id": [i for i, _ in rows], "logprob_sum": lp,
                                 "n_tokens": [[2] * len(o) for _, o in rows],
                                 "n_chars": [[len(x) for x in o] for _, o in rows],
                                 "truncated": [False] * len(rows)}), out / f"{tag}.parquet")


def route(name: str, out: Path) -> dict:
    import psutil
    import pyarrow.parquet as pq

    from ilp_ray import storage as S
    from ilp_ray.config import AuditConfig

    items = pq.read_table(out / "items.parquet")
    scores = {t: pq.read_table(out / f"{t}.parquet") for t in ("sft", "base")}
    cfg = AuditConfig(data="x.jsonl", sft_model="m", run_dir=str(out / name))
    before = psutil.Process().memory_info().rss
    t = time.perf_counter()
    if name == "chunks":
        from ilp_ray.audit import verdict_stage

        _, summary = verdict_stage(items, scores, True, cfg, out / name)
    else:  # the stage as it was: every item as one pandas frame
        from ilp_ray.audit.score import split_priors
        from ilp_ray.detect import compute_verdicts, summarize

        real, priors = split_priors(items, scores)
        items_df = items.select(["id", "subset", "position", "answer", "distractor_ids"]).to_pandas()
        v, stab = compute_verdicts(items_df, real["sft"].to_pandas(), real["base"].to_pandas(), cfg.scoring,
                                   cfg.detect, priors)
        v = v.merge(items.select(["id", "question", "options", "distractor_ids", "fallback"]).to_pandas(),
                    on="id", how="left")
        S.write_verdicts(v, out / name / "verdicts", cfg.ray.shard_size)
        summary = summarize(v, cfg.detect)
        summary["seed_stability"] = stab
    wall = time.perf_counter() - t
    S.write_json_atomic(summary, out / name / "summary.json")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"route": name, "peak_rss_mb": round(peak / 2**20), "rss_before_mb": round(before / 2**20),
            "stage_peak_over_before_mb": round((peak - before) / 2**20), "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--out", default="/tmp/verdict-mem")
    ap.add_argument("--route", choices=["driver", "chunks"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    if args.route:
        print(json.dumps(route(args.route, out)))
        return
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    make(args.n, out)
    print(f"{args.n:,} items and scores written in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    res = {}
    for name in ("driver", "chunks"):
        proc = subprocess.run([sys.executable, __file__, "--route", name, "--out", str(out)], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        res[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(res[name], file=sys.stderr)
    from ilp_ray import storage as S

    same = S.read_manifested(out / "driver" / "verdicts").equals(S.read_manifested(out / "chunks" / "verdicts"))
    same_summary = json.loads((out / "driver" / "summary.json").read_text()) == json.loads(
        (out / "chunks" / "summary.json").read_text())
    d, c = res["driver"], res["chunks"]
    print(json.dumps({"n": args.n, "routes": res, "tables_equal": bool(same), "summaries_equal": same_summary,
                      "stage_memory_ratio": round(d["stage_peak_over_before_mb"]
                                                  / max(c["stage_peak_over_before_mb"], 1), 2),
                      "wall_ratio": round(d["wall_s"] / c["wall_s"], 2)}))


if __name__ == "__main__":
    main()
