"""The lab over several seeds: how well the diagnosis recovers the truth, and how much that varies.

Each seed is one full ``ilp lab run`` (its own world, pretraining, SFT, evidence, audit and
diagnosis) in its own process, one after another. Reported per seed: macro-F1, each cause's
recall and precision, the control yield and the wall time; then the mean, standard deviation and
minimum of each over the seeds. A seed whose folder already holds a finished run is not trained
again (the lab skips finished stages), so a sweep can be resumed or re-scored cheaply.

    .venv/bin/python bench/lab_sweep.py --size default --seeds 10 11 12 13 14
    .venv/bin/python bench/lab_sweep.py --size small --seeds 0 1 2 3 4 --out runs/lab-sweep
    .venv/bin/python bench/lab_sweep.py --base smollm2 --size small --seeds 0 1 2   # the real-model lab
    .venv/bin/python bench/lab_sweep.py --world debian --size small --seeds 0 1 2   # the Debian world

``--world debian`` runs ``bench/world_debian.py`` per seed instead (a second world, real Debian
data with SmolLM2-135M as the base; ``--base`` does not apply, and ``--set`` goes to its audit).

The last line is one JSON object: the per-seed figures and the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAUSES = ("I", "II", "III", "IV", "V")


def run_seed(size: str, seed: int, out: Path, extra: list[str], base: str = "tiny", world: str = "lab") -> dict:
    if world == "debian":
        folder = out / f"debian-{size}-seed{seed}"
        cmd = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "bench" / "world_debian.py"), "--size", size,
               "--seed", str(seed), "--out", str(folder), *extra]
    else:
        folder = out / (f"{size}-seed{seed}" if base == "tiny" else f"{base}-{size}-seed{seed}")
        cmd = [str(ROOT / ".venv" / "bin" / "ilp"), "lab", "run", "--base", base, "--size", size, "--seed", str(seed),
               "--out", str(folder), "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    log = folder.with_suffix(".log")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if rc != 0:
        raise SystemExit(f"seed {seed} failed (exit {rc}); see {log}")
    m = json.loads((folder / "metrics.json").read_text())
    return {"seed": seed, "macro_f1": m["macro_f1"], "recall": m["recall"], "precision": m["precision"],
            "yield": m["yield"], "wall_s": m["wall_s"], "process_s": round(time.perf_counter() - t0, 1),
            "evidence_accuracy": m.get("evidence", {}).get("accuracy")}


def summarise(rows: list[dict]) -> dict:
    def stats(xs: list[float]) -> dict:
        return {"mean": round(statistics.fmean(xs), 3), "std": round(statistics.pstdev(xs), 3),
                "min": round(min(xs), 3), "max": round(max(xs), 3)}

    out = {"seeds": [r["seed"] for r in rows], "macro_f1": stats([r["macro_f1"] for r in rows]),
           "control_yield": stats([r["yield"]["control"] for r in rows]),
           "wall_s": stats([r["wall_s"] for r in rows])}
    for c in CAUSES:
        out[f"recall_{c}"] = stats([r["recall"][c] for r in rows])
        out[f"precision_{c}"] = stats([r["precision"][c] for r in rows])
    out["min_recall_over_causes_and_seeds"] = round(min(r["recall"][c] for r in rows for c in CAUSES), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="default", choices=["small", "default"])
    ap.add_argument("--base", default="tiny", choices=["tiny", "smollm2"])
    ap.add_argument("--world", default="lab", choices=["lab", "debian"], help=(
        "lab: ilp lab run (the fictional world, --base picks its base); debian: bench/world_debian.py."))
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14])
    ap.add_argument("--out", default="runs/lab-sweep", help="One folder per seed under here.")
    ap.add_argument("--set", action="append", default=[], help=(
        "Passed to ilp lab run --set, or to world_debian.py --audit-set with --world debian (repeatable)."))
    args = ap.parse_args()
    flag = "--audit-set" if args.world == "debian" else "--set"
    extra = [a for s in args.set for a in (flag, s)]
    rows = []
    for seed in args.seeds:
        r = run_seed(args.size, seed, Path(args.out).resolve(), extra, args.base, args.world)
        rows.append(r)
        rec = " ".join(f"{c} {r['recall'][c]:.2f}" for c in CAUSES)
        print(f"seed {seed}: macro-F1 {r['macro_f1']:.3f} | recall {rec} | control yield "
              f"{r['yield']['control']:.2f} | {r['wall_s']:.0f} s", flush=True)
    s = summarise(rows)
    print(f"macro-F1 over {len(rows)} seeds: mean {s['macro_f1']['mean']:.3f} ± {s['macro_f1']['std']:.3f} "
          f"(min {s['macro_f1']['min']:.3f}); lowest recall of any cause on any seed "
          f"{s['min_recall_over_causes_and_seeds']:.2f}")
    print(json.dumps({"world": args.world, "size": args.size, "runs": rows, "summary": s}))


if __name__ == "__main__":
    sys.exit(main())
