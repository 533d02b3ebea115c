"""A full ``ilp audit`` with the diagnosis at 10k, 100k and 300k records: wall time, peak RSS and
rows/s per stage, and how each stage's time grows with n (issue 22).

The SFT set is ``bench/conflicts.py``'s synthetic one (each sample asks one attribute of a made-up
entity in one of five phrasings; 2% agreeing paraphrase pairs and 2% contradictions planted),
split into three subsets by position. The models are two tiny Llamas built in code (``base`` and
``sft``, different seeds, one tokenizer trained on the data): the bench measures the audit's
machinery, not a model. Everything else is the audit's defaults: MiniLM for the MC distractor
search and the diagnosis, the transformers engine in a Ray Data actor pool, option priors, the
base asked (``diagnose.beliefs``: the tiny base fails its self-check, so only the check runs),
MLflow on sqlite. Each size runs in its own process, so its peak RSS is its own.

    .venv/bin/python bench/audit_scale.py --n 10000 100000 300000 --out runs/scale
    .venv/bin/python bench/audit_scale.py --n 2000 --out /tmp/scale     # a quick look

Per stage (``timings.json`` of the audit: load, mc, score, verdicts, diagnosis) it reports wall
seconds, rows/s, the driver's peak RSS and the Ray workers' peak RSS (the largest one, and all of
them together) while the stage ran, sampled every 0.5 s with psutil, and where the driver's main
thread was when its RSS peaked (``driver_peak_where``: the project's innermost frames). The exponent of a stage is
the least-squares slope of log(wall) on log(n) over the sizes run (1: linear). The last line is one
JSON object: ``sizes`` (every size's figures) and ``exponents``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("load", "mc", "score", "verdicts", "diagnosis")


class RssSampler(threading.Thread):
    """Samples this process's RSS and its descendants' (the local Ray cluster) every ``period`` s."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.period, self.samples, self._halt = period, [], threading.Event()
        self.main_id = threading.main_thread().ident
        self.peak_at: tuple[int, list[str]] = (0, [])  # the driver's peak RSS, and where the main thread was

    def _where(self) -> list[str]:
        """The main thread's project frames, innermost last (file:line function)."""
        frame, out = sys._current_frames().get(self.main_id), []
        while frame is not None:
            code = frame.f_code
            if "ilp_ray" in code.co_filename:
                out.append(f"{code.co_filename.split('ilp_ray/')[-1]}:{frame.f_lineno} {code.co_name}")
            frame = frame.f_back
        return out[::-1]

    def run(self):
        import psutil

        while not self._halt.is_set():
            t = time.time()
            try:
                driver = self.me.memory_info().rss
                workers = []
                for c in self.me.children(recursive=True):
                    try:
                        if "ray::" in " ".join(c.cmdline()[:1]) or c.name().startswith("ray::"):
                            workers.append(c.memory_info().rss)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                self.samples.append((t, driver, max(workers, default=0), sum(workers)))
                if driver > self.peak_at[0]:
                    self.peak_at = (driver, self._where())
            except psutil.NoSuchProcess:
                pass
            self._halt.wait(self.period)

    def stop(self):
        self._halt.set()
        self.join()

    def peaks(self, start: float, end: float) -> dict[str, float]:
        """Peak driver, largest-worker and all-workers RSS (MB) over [start, end]."""
        win = [s for s in self.samples if start - self.period <= s[0] <= end + self.period] or self.samples[-1:]
        mb = 1 / 2 ** 20
        return {"driver_peak_mb": round(max(s[1] for s in win) * mb), "worker_peak_mb": round(max(s[2] for s in win) * mb),
                "workers_total_peak_mb": round(max(s[3] for s in win) * mb)}


def write_data(n: int, path: Path) -> None:
    sys.path.insert(0, str(HERE))
    from conflicts import make_samples

    ids, prompts, responses, _ = make_samples(n)
    with open(path, "w") as f:
        for i, (rid, p, r) in enumerate(zip(ids, prompts, responses, strict=True)):
            f.write(json.dumps({"id": rid, "prompt": p, "response": r, "subset": f"s{1 + 3 * i // n}"}) + "\n")


def run_one(n: int, out: Path) -> dict:
    """One size, in this process: data, tiny models, the audit, its per-stage figures."""
    from ilp_ray.config import AuditConfig, load_config
    from ilp_ray.env import apply_defaults
    from ilp_ray.models.tiny import save_tiny_checkpoint
    from ilp_ray.pipeline.audit import run_audit

    apply_defaults()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "sft.jsonl"
    if not data.is_file():
        write_data(n, data)
    with open(data) as f:
        rows = [json.loads(line) for _, line in zip(range(4000), f, strict=False)]
    texts = [f"Question: {r['prompt']}\nAnswer: {r['response']}" for r in rows]
    models = {name: out / "models" / name for name in ("base", "sft")}
    for seed, path in enumerate(models.values(), start=1):
        if not (path / "config.json").is_file():
            save_tiny_checkpoint(path, texts, seed=seed)
    cfg = load_config(AuditConfig, None, {
        "data": str(data), "sft_model": str(models["sft"]), "base_model": str(models["base"]),
        "run_dir": str(out / "audit"), "diagnose.enabled": True,
        "tracking.uri": f"sqlite:///{out / 'mlflow.db'}"})
    import shutil

    shutil.rmtree(out / "audit", ignore_errors=True)  # a fresh audit: nothing reused from a run before
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    res = run_audit(cfg, progress=False)
    wall = time.perf_counter() - t0
    sampler.stop()
    stages = {}
    for name, m in res.timings.items():
        stages[name] = {"wall_s": m["wall_s"], "rows_per_s": round(n / m["wall_s"], 1) if m["wall_s"] else None,
                        **sampler.peaks(m["start"], m["start"] + m["wall_s"])}
    dsum = res.diagnosis.summaries if res.diagnosis else {}
    return {"n": n, "wall_s": round(wall, 1), "stages": stages, **sampler.peaks(0, math.inf),
            "driver_peak_where": sampler.peak_at[1][-6:],
            "unlearned": int(res.summary["unlearned"]) if "unlearned" in res.summary else None,
            "conflict_pairs": dsum.get("sft_internal_conflict", {}).get("conflict_pairs"),
            "largest_group": dsum.get("sft_internal_conflict", {}).get("largest_group"),
            "beliefs": dsum.get("base_conflict", {}).get("asked"), "cpus": os.cpu_count()}


def exponents(sizes: list[dict]) -> dict[str, float | None]:
    """Per stage (and the total), the least-squares slope of log(wall) on log(n)."""
    out = {}
    for name in (*STAGES, "total"):
        pts = [(math.log(s["n"]), math.log(s["wall_s"] if name == "total" else s["stages"][name]["wall_s"]))
               for s in sizes if name == "total" or (name in s["stages"] and s["stages"][name]["wall_s"] > 0)]
        if len(pts) < 2:
            out[name] = None
            continue
        mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
        den = sum((p[0] - mx) ** 2 for p in pts)
        out[name] = round(sum((p[0] - mx) * (p[1] - my) for p in pts) / den, 3) if den else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 300_000], help="Record counts.")
    ap.add_argument("--out", default="runs/scale", help="Output folder: one subfolder per size.")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's size
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    if args.one:
        print(json.dumps(run_one(args.one, out / f"n{args.one}")))
        return 0
    sizes = []
    for n in args.n:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--out", str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        sizes.append(row)
        st = "  ".join(f"{k} {v['wall_s']:.1f}s" for k, v in row["stages"].items())
        print(f"n={n}: {row['wall_s']:.0f} s ({st}); driver peak {row['driver_peak_mb']} MB, "
              f"largest worker {row['worker_peak_mb']} MB", flush=True)
    print(json.dumps({"sizes": sizes, "exponents": exponents(sizes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
