"""Seed sweep of ``ilp lab experiment mitigations``: mean and spread of every recovery cell.

    .venv/bin/python bench/mitigation_sweep.py --size small --seeds 20 21 22 23 24 [--base tiny] [--root /tmp/msweep]
        [--budget paper|matched]

Each seed runs the lab and the mitigation study in ``<root>/<size>-seed<seed>`` (a finished seed is
reused), one subprocess per seed. Printed: per seed the truth matrix's diagonal; then per cell of
the truth matrix (true category × arm) the mean and standard deviation over the seeds, and per
cause how many seeds the aimed arm dominated (by ``MARGIN``, 10 points). The last line is one
JSON object with all of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--base", default="tiny")
    ap.add_argument("--seeds", type=int, nargs="+", default=[20, 21, 22, 23, 24])
    ap.add_argument("--root", default="/tmp/msweep")
    ap.add_argument("--arms", default=None)
    ap.add_argument("--budget", default="paper", choices=["paper", "matched"],
                    help="matched: every arm's SFT at progressive epochs' cap (ilp lab experiment mitigations).")
    args = ap.parse_args()
    from ilp_ray.lab.mitigations import table_name

    tables = {}
    for seed in args.seeds:
        out = Path(args.root) / f"{args.size}-{args.base}-seed{seed}"
        cmd = [sys.executable, "-m", "ilp_ray.cli", "lab", "experiment", "mitigations", "--seed", str(seed),
               "--size", args.size, "--base", args.base, "--out", str(out), "--no-progress"]
        if args.arms:
            cmd += ["--arms", args.arms]
        cmd += ["--budget", args.budget]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"seed {seed} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        tables[seed] = json.loads((out / "mitigations" / table_name(args.budget)).read_text())
        d = tables[seed]["truth"]["diagonal"]
        cells = ", ".join(f"{c} {v['share']:.2f}/{v['margin']:+.2f}" for c, v in d.items() if v.get("share") is not None)
        print(f"seed {seed} ({time.perf_counter() - t:.0f} s): aimed share/margin {cells}", file=sys.stderr, flush=True)
    summary = aggregate(tables)
    summary.update(size=args.size, base=args.base, seeds=list(tables), budget=args.budget)
    for cat, row in summary["truth_mean"].items():
        print(f"{cat:<8} " + "  ".join(f"{a} {m:.2f}±{summary['truth_std'][cat][a]:.2f}" for a, m in row.items()),
              file=sys.stderr)
    print(json.dumps(summary))


def aggregate(tables: dict[int, dict]) -> dict:
    cells: dict[str, dict[str, list[float]]] = {}
    dom: dict[str, list[bool]] = {}
    margins: dict[str, list[float]] = {}
    walls = []
    for t in tables.values():
        walls.append(t["wall_s"])
        for cat, row in t["truth"]["matrix"].items():
            for arm, v in row.items():
                if v is not None:
                    cells.setdefault(cat, {}).setdefault(arm, []).append(v)
        for cause, d in t["truth"]["diagonal"].items():
            if d.get("share") is not None:
                dom.setdefault(cause, []).append(bool(d["dominates"]))
                margins.setdefault(cause, []).append(d["margin"])
    mean = {c: {a: round(statistics.mean(v), 3) for a, v in r.items()} for c, r in cells.items()}
    std = {c: {a: round(statistics.pstdev(v), 3) for a, v in r.items()} for c, r in cells.items()}
    return {"truth_mean": mean, "truth_std": std,
            "dominated_seeds": {c: f"{sum(v)}/{len(v)}" for c, v in dom.items()},
            "margin_mean": {c: round(statistics.mean(v), 3) for c, v in margins.items()},
            "margin_min": {c: round(min(v), 3) for c, v in margins.items()},
            "wall_s_mean": round(statistics.mean(walls), 1) if walls else None}


if __name__ == "__main__":
    main()
