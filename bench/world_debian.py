"""The Debian lab world end to end: probe SmolLM2-135M, build the world, train and audit it the way
the README tells a user to, and score the diagnosis against the world's truth.

The world (``ilp_ray.lab.debian``) is real reference data from Debian's files, eight tasks mixed
in one SFT set, with each sample's cause known by construction. The run is what a team would do:
``ilp train sft`` (SmolLM2-135M, sequential s1 -> s2 -> s3, lr 1e-4, batch 8, one epoch,
trajectories every 2 steps over every sample), then ``ilp audit`` at its defaults but for the
chat format and the diagnosis (with the SFT data and the trajectory); no corpus evidence. It
measures the current diagnosis, it does not tune it.

    .venv/bin/python bench/world_debian.py --seed 0 --out runs/debian/seed0
    .venv/bin/python bench/world_debian.py --seed 0 --out runs/debian/seed0 --skip-train \\
        --audit-set detect.tau=0.3 --audit-name audit-tau03

Layout of ``--out``: ``world/`` (sft.jsonl, truth.jsonl, world.json, probe.json), ``sft/`` (the
training run, trajectory.parquet), ``audit/`` (or ``--audit-name``; with diagnosis/report.html),
``metrics.json`` (or ``metrics-<audit-name>.json``). A rerun reuses the finished SFT run (a changed
world or setting trains it again), and the audit reuses its score shards. The last line of stdout
is one JSON object: macro_f1, recall, precision, yield, wall_s, seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SFT = {"model": "smollm2-135m", "lr": 1e-4, "batch_size": 8, "epochs": 1, "every_steps": 2}


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="World seed (which facts go to which category).")
    ap.add_argument("--out", required=True, help="Output folder (keep it under runs/).")
    ap.add_argument("--size", default="small", help="World size: small (~160 samples) or default.")
    ap.add_argument("--world-set", action="append", default=[], metavar="FIELD=N",
                    help="Override a DebianSize field, e.g. forget_repeats=9 (repeatable).")
    ap.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                    help="Override an SftTrainConfig field, e.g. optim.lr=5e-5 (repeatable).")
    ap.add_argument("--audit-set", action="append", default=[], metavar="KEY=VALUE",
                    help="Override an AuditConfig field, e.g. detect.tau=0.3 (repeatable).")
    ap.add_argument("--audit-name", default="audit", help="Audit folder under --out (keep audits of other settings apart).")
    ap.add_argument("--skip-train", action="store_true", help="Use the finished SFT run in --out; fail if there is none.")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the probe and the SFT worker.")
    ap.add_argument("--known-p", type=float, default=0.5, help="A fact is known to the base at p(true value) >= this.")
    return ap


def build_world(seed: int, size: str, world_set: list[str], known_p: float, out: Path):
    """Probe the base (cached), generate the world and write it under ``out/world``."""
    from ilp_ray.config import parse_overrides
    from ilp_ray.lab import debian as D
    from ilp_ray.lab.world import write
    from ilp_ray.storage import write_json_atomic

    sz = D.resolve_size(size, parse_overrides(world_set))
    probe = D.probe(SFT["model"], fmt="chat")
    world = D.generate_debian(seed, sz, probe, known_p=known_p)
    world.size = size if not world_set else f"{size}+{','.join(world_set)}"
    paths = write(world, out / "world")
    write_json_atomic({"model": SFT["model"], "format": "chat", "known_p": known_p,
                       "probe": [[*k, p] for k, p in probe.items()]}, out / "world" / "probe.json")
    return world, paths


def sft_config(data: Path, out: Path, n_samples: int, threads: int, train_set: list[str]):
    """The README's ``ilp train sft``: defaults but for the model, the order, lr, batch and trajectory."""
    from ilp_ray.config import load_config, parse_overrides
    from ilp_ray.train.config import SftTrainConfig

    over = {"run_dir": str(out), "name": "sft", "model.spec": SFT["model"], "data": str(data),
            "order.sampler": "sequential", "order.subset_order": ["s1", "s2", "s3"],
            "optim.lr": SFT["lr"], "optim.batch_size": SFT["batch_size"], "optim.epochs": SFT["epochs"],
            "trajectory.every_steps": SFT["every_steps"], "trajectory.max_items": n_samples,
            "scaling.threads_per_worker": threads}
    return load_config(SftTrainConfig, None, {**over, **parse_overrides(train_set)})


def train(tcfg, skip: bool):
    """The finished SFT run (reused when its config and data are unchanged), or a new one."""
    from ilp_ray.lab.run import train_fresh
    from ilp_ray.train.run import DONE, finished

    run_path = Path(tcfg.run_dir).resolve() / tcfg.name
    if not skip:
        return train_fresh(tcfg, progress=True)
    done = finished(run_path, tcfg)
    if done is None:
        why = ("it finished on another world or other settings" if (run_path / DONE).is_file()
               else "there is no finished run")
        raise SystemExit(f"error: --skip-train: {why} in {run_path}; run without --skip-train to train it")
    return done


def audit_config(data: Path, sft, out: Path, name: str, audit_set: list[str]):
    """``ilp audit`` at its defaults, but for the models, the chat format and the diagnosis."""
    from ilp_ray.config import AuditConfig, load_config, parse_overrides

    over = {"data": str(data), "sft_model": str(sft.checkpoint), "base_model": SFT["model"],
            "run_dir": str(out / name), "scoring.format": "chat", "diagnose.enabled": True,
            "diagnose.data": str(data), "diagnose.trajectory": str(sft.trajectory) if sft.trajectory else None}
    return load_config(AuditConfig, None, {**over, **parse_overrides(audit_set)})


def iv_plants(truth, audit, sft, score) -> dict:
    """Did each IV plant take? A fact taught six times in s1 is left-side forgetting only if SFT
    learned it (p(correct) >= 0.5 at some trajectory point) and then lost it. A plant the run never
    learned is a failed plant, not an IV sample, whatever the truth file says: this scores the
    diagnosis again without those samples, beside the plain score (both are reported)."""
    import pandas as pd

    if not sft.trajectory:
        return {"checked": False}
    traj = pd.read_parquet(sft.trajectory, columns=["id", "p_correct"])
    peak = traj.groupby("id").p_correct.max()
    iv = truth[truth.category == "IV"]
    unl = set(audit.verdicts.loc[audit.verdicts.unlearned.astype(bool), "id"])
    failed = [i for i in iv.id if i in unl and peak.get(i, 0.0) < 0.5]
    kept = truth[~truth.id.isin(failed)]
    again = score(kept, audit.verdicts, audit.diagnosis.table)
    return {"checked": True, "unlearned": int(iv.id.isin(unl).sum()), "never_learned": len(failed),
            "macro_f1_without_failed": again["macro_f1"], "macro_f1_present_without_failed": again["macro_f1_present"],
            "recall_without_failed": again["recall"], "precision_without_failed": again["precision"]}


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    import pandas as pd
    import torch

    from ilp_ray.env import apply_defaults
    from ilp_ray.errors import IlpError
    from ilp_ray.lab.report import print_lab
    from ilp_ray.lab.run import LabResult
    from ilp_ray.lab.score import score
    from ilp_ray.pipeline.audit import run_audit
    from ilp_ray.storage import write_json_atomic

    apply_defaults()
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    t0, walls = time.perf_counter(), {}
    try:
        world, paths = build_world(args.seed, args.size, args.world_set, args.known_p, out)
        walls["world"] = time.perf_counter() - t0
        t = time.perf_counter()
        sft = train(sft_config(paths["sft"], out, len(world.sft), args.threads, args.train_set), args.skip_train)
        walls["sft"] = time.perf_counter() - t
        t = time.perf_counter()
        audit = run_audit(audit_config(paths["sft"], sft, out, args.audit_name, args.audit_set))
        walls["audit"] = time.perf_counter() - t
    except (IlpError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    truth = pd.read_json(paths["truth"], lines=True)
    metrics = score(truth, audit.verdicts, audit.diagnosis.table)
    walls["total"] = time.perf_counter() - t0
    # Which tasks the unlearned samples of each category come from: the world's own breakdown.
    unl = truth.merge(audit.verdicts[["id", "unlearned"]], on="id")
    by_task = unl.groupby(["category", "task"]).unlearned.agg(["sum", "count"])
    metrics.update(world="debian", seed=args.seed, size=world.size, wall_s=walls["total"], stage_wall_s=walls,
                   sft_checkpoint=sft.checkpoint_id, audit_set=args.audit_set, train_set=args.train_set,
                   unlearned_by_task={f"{c}/{t}": [int(r["sum"]), int(r["count"])] for (c, t), r in by_task.iterrows()})
    metrics["iv_plants"] = iv_plants(truth, audit, sft, score)
    name = "metrics.json" if args.audit_name == "audit" else f"metrics-{args.audit_name}.json"
    write_json_atomic(metrics, out / name)
    print_lab(LabResult(out, metrics, audit.diagnosis.report, audit.run_id, audit.tracking_uri))
    plants = metrics["iv_plants"]
    if plants.get("checked"):
        print(f"IV plants: {plants['never_learned']} of the {plants['unlearned']} unlearned were never learned "
              f"(peak p < 0.5); without them macro-F1 {plants['macro_f1_without_failed']:.3f}")
    print(json.dumps({k: metrics[k] for k in ("macro_f1", "macro_f1_present", "present", "recall", "precision", "yield",
                                              "wall_s", "seed", "iv_plants")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
