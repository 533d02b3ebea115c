"""Fault injection with figures (issue 20): what each failure loses, duplicates or leaves behind.

Every scenario runs the real parts on 127.0.0.1 with tiny models built in code, bounded in time:

- ``audit-kill``: an audit job (its own process and Ray) SIGKILLed mid-scoring, then rerun.
  Figures: shards finished at the kill, shards the rerun scored again (must be 0 of those), stray
  temp files after the rerun, and the verdicts against a clean run of the same config (rows,
  max |Δ p|).
- ``actor-kill``: the Ray Data actor that scores (the ``ScoreShards`` pool's one actor) SIGKILLed
  inside a running audit, the job itself left alone. Figures: the job's exit status, whether the
  actor came back (a new pid), shards scored, temp files left, and the verdicts against a clean run.
- ``worker-kill``: the Ray Train worker SIGKILLed mid-SFT (a tiny model, 60 steps, a checkpoint
  every 10) with ``scaling.max_failures: 1``, the job left alone. Figures: the job's exit, the
  checkpoint it resumed at, whether every step ran once with the same batches as a clean run, and
  the trajectory against the clean run's (duplicates, max |Δ p|).
- ``two-audits``: a second audit started on a run directory the first still holds. Figures: how
  fast it is refused, its message, and whether the first finishes untouched.
- ``replica``: the Serve scorer replica killed while 32 clients send ``/v1/score`` without pause,
  once with clients that do not retry and once with clients that retry 503s and dropped
  connections (0.5 s apart, at most 60 times). Figures: requests, failed share, the statuses seen,
  and the recovery time (kill → the first 200 to a request sent after the kill).
- ``mlflow-down``: an audit whose tracking server is stopped before its tracking stage. Figures:
  the exit status, the time to fail, whether the message names the server, and what is on disk.

    .venv/bin/python bench/faults.py                       # every scenario (~4-6 min on 2 cores)
    .venv/bin/python bench/faults.py --only replica audit-kill

The last line is one JSON object: one entry per scenario.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for k, v in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
             "RAY_worker_niceness": "0", "TOKENIZERS_PARALLELISM": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
             "ILP_API_TOKEN": "bench-token"}.items():
    os.environ.setdefault(k, v)

FACTS = [(f"What is the code of item {i}?", f"C{i:03d}") for i in range(48)]


def setup(tmp: Path) -> dict:
    """Tiny data and two tiny checkpoints (base, sft) under ``tmp``."""
    from ilp_ray.models.tiny import save_tiny_checkpoint

    data = tmp / "facts.jsonl"
    with open(data, "w") as f:
        for i, (q, a) in enumerate(FACTS):
            f.write(json.dumps({"id": f"f{i:02d}", "prompt": q, "response": a, "subset": f"s{i % 3}"}) + "\n")
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in FACTS] * 2
    ck = {name: save_tiny_checkpoint(tmp / "ckpt" / name, texts, seed=s) for s, name in ((1, "base"), (2, "sft"))}
    return {"data": data, **ck}


def audit_yaml(env: dict, run_dir: Path, extra: str = "tracking: {enabled: false}\n") -> str:
    return (f"data: {env['data']}\nsft_model: {env['sft']}\nbase_model: {env['base']}\nrun_dir: {run_dir}\n"
            "mc: {k: 3}\nscoring: {batch_size: 4}\ndetect: {stability_seeds: 2}\n"
            "ray: {shard_size: 2, num_actors: 1, cpus_per_actor: 1.0}\n" + extra)


def start_audit(cfg: Path, log: Path, slow_s: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, ILP_SLOW_SHARD_S=str(slow_s))
    return subprocess.Popen([sys.executable, str(ROOT / "jobs" / "audit.py"), "--config", str(cfg), "--no-progress"],
                            env=env, start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30  # Ray's processes of that session too
    while time.time() < deadline:
        out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True).stdout.split("\n")
        left = [int(r.split()[0]) for r in out if r.strip() and int(r.split()[1]) == proc.pid and "Z" not in r.split()[2]]
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def audit_kill(env: dict, tmp: Path) -> dict:
    import numpy as np
    import yaml

    from ilp_ray.config import AuditConfig
    from ilp_ray.pipeline.audit import run_audit

    run_dir, clean_dir = tmp / "killed", tmp / "clean"
    cfg = tmp / "killed.yaml"
    cfg.write_text(audit_yaml(env, run_dir))
    proc = start_audit(cfg, tmp / "killed.log", slow_s=0.4)
    deadline = time.time() + 300
    while len(list(run_dir.glob("scores/*/shard-*.parquet"))) < 10:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("the audit ended before the kill: " + (tmp / "killed.log").read_text()[-2000:])
        time.sleep(0.1)
    kill_group(proc)
    done = {p: p.stat().st_mtime_ns for p in run_dir.glob("scores/*/shard-*.parquet")}
    temps_at_kill = len(list(run_dir.rglob(".tmp-*")))
    t = time.perf_counter()
    again = run_audit(AuditConfig.model_validate(yaml.safe_load(cfg.read_text())), progress=False)
    rerun_s = time.perf_counter() - t
    clean = run_audit(AuditConfig.model_validate(yaml.safe_load(audit_yaml(env, clean_dir))), progress=False)
    a, c = again.verdicts.sort_values("id"), clean.verdicts.sort_values("id")
    rewritten = sum(p.stat().st_mtime_ns != m for p, m in done.items() if p.exists())
    return {"shards_total": again.summary["shards_total"], "finished_at_kill": len(done),
            "reused": again.summary["shards_reused"], "finished_scored_again": rewritten,
            "temp_files_at_kill": temps_at_kill, "temp_files_after_rerun": len(list(run_dir.rglob(".tmp-*"))),
            "rows": len(a), "rows_clean": len(c), "same_ids": a["id"].tolist() == c["id"].tolist(),
            "max_abs_dp": float(np.abs(np.stack(a["probs"]) - np.stack(c["probs"])).max()),
            "same_unlearned": a["unlearned"].tolist() == c["unlearned"].tolist(), "rerun_s": round(rerun_s, 1)}


def _session_procs(sid: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [r.split(None, 3) for r in out.splitlines() if r.strip()]
    return [(int(r[0]), r[3] if len(r) > 3 else "") for r in rows if int(r[1]) == sid and "Z" not in r[2]]


def _scoring_actors(sid: int) -> list[int]:
    """The pids of the audit's Ray Data scoring actors (their process title names the actor class)."""
    return [pid for pid, args in _session_procs(sid) if "MapWorker" in args or "ScoreShards" in args]


def actor_kill(env: dict, tmp: Path) -> dict:
    import numpy as np
    import yaml

    from ilp_ray.config import AuditConfig
    from ilp_ray.pipeline.audit import run_audit

    run_dir, clean_dir = tmp / "actor", tmp / "clean"
    cfg = tmp / "actor.yaml"
    cfg.write_text(audit_yaml(env, run_dir))
    t0 = time.perf_counter()
    proc = start_audit(cfg, tmp / "actor.log", slow_s=0.4)
    deadline = time.time() + 300
    while len(list(run_dir.glob("scores/*/shard-*.parquet"))) < 6:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("the audit ended before the kill: " + (tmp / "actor.log").read_text()[-2000:])
        time.sleep(0.1)
    actors = _scoring_actors(proc.pid)
    if not actors:
        kill_group(proc)
        raise RuntimeError("no scoring actor found among the job's processes: "
                           + "; ".join(a[:80] for _, a in _session_procs(proc.pid)))
    at_kill = len(list(run_dir.glob("scores/*/shard-*.parquet")))
    for pid in actors:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.perf_counter()
    new_actor, t_back = None, None
    while proc.poll() is None and time.perf_counter() - killed_at < 600:
        if new_actor is None:
            fresh = [p for p in _scoring_actors(proc.pid) if p not in actors]
            if fresh:
                new_actor, t_back = fresh[0], time.perf_counter() - killed_at
        time.sleep(0.1)
    if proc.poll() is None:
        kill_group(proc)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    log = (tmp / "actor.log").read_text()
    out = {"killed_actors": len(actors), "shards_at_kill": at_kill, "job_exit": rc, "job_wall_s": round(wall, 1),
           "actor_restarted": new_actor is not None, "restart_s": None if t_back is None else round(t_back, 1),
           "temp_files_after": len(list(run_dir.rglob(".tmp-*"))),
           "error": next((ln for ln in reversed(log.splitlines()) if ln.startswith("error")), None)}
    if rc == 0:
        again = run_audit(AuditConfig.model_validate(yaml.safe_load(cfg.read_text())), progress=False)
        clean = run_audit(AuditConfig.model_validate(yaml.safe_load(audit_yaml(env, clean_dir))), progress=False)
        a, c = again.verdicts.sort_values("id"), clean.verdicts.sort_values("id")
        out.update(shards_total=clean.summary["shards_total"], rerun_scored=again.summary["shards_scored"],
                   rows=len(a), same_ids=a["id"].tolist() == c["id"].tolist(),
                   max_abs_dp=float(np.abs(np.stack(a["probs"]) - np.stack(c["probs"])).max()),
                   same_unlearned=a["unlearned"].tolist() == c["unlearned"].tolist())
    return out


def _train_cfg(env: dict, run_dir: Path, name: str, max_failures: int, tracking_uri: str | None = None) -> dict:
    """A tiny-model SFT run of the facts: 48 records, batch 4, 5 epochs = 60 steps, a checkpoint every 10;
    tracked to ``tracking_uri`` when given."""
    tracking = {"enabled": True, "uri": tracking_uri, "experiment": "faults"} if tracking_uri else {"enabled": False}
    return {"data": str(env["data"]), "run_dir": str(run_dir), "name": name,
            "model": {"tiny": {"hidden_size": 64, "num_layers": 2, "vocab_size": 320, "seed": 0}},
            "optim": {"lr": 3e-3, "batch_size": 4, "epochs": 5}, "order": {"sampler": "shuffled"},
            "checkpoint": {"every_steps": 10}, "trajectory": {"embedder": "hashing", "k": 4, "every_steps": 5},
            "scaling": {"max_failures": max_failures}, "tracking": tracking, "timing_skip_steps": 0}


def worker_kill(env: dict, tmp: Path) -> dict:
    """The Ray Train worker SIGKILLed mid-SFT, the job left alone, ``scaling.max_failures: 1``; tracked
    to MLflow on sqlite, whose step metrics must hold each step once though steps replay."""
    import pandas as pd
    import yaml

    from ilp_ray.train.config import SftTrainConfig
    from ilp_ray.train.run import run_training
    from ilp_ray.train.state import latest_registered_step as _latest_registered

    runs = tmp / "train"
    cfg = tmp / "sft.yaml"
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg.write_text(yaml.safe_dump(_train_cfg(env, runs, "killed", 1, uri)))
    run = runs / "killed"
    t0 = time.perf_counter()
    with open(tmp / "sft.log", "w") as logf:  # the child holds its own descriptor
        proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "sft.py"), "--config", str(cfg)],
                                env=dict(os.environ, ILP_SLOW_STEP_S="0.25"), start_new_session=True,
                                stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while _latest_registered(run) < 20:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("training ended before the kill: " + (tmp / "sft.log").read_text()[-2000:])
        time.sleep(0.2)
    workers = [pid for pid, args in _session_procs(proc.pid) if "RayTrainWorker" in args]
    if not workers:
        kill_group(proc)
        raise RuntimeError("no Ray Train worker among the job's processes")
    at_kill = _latest_registered(run)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.perf_counter()
    back = None
    while proc.poll() is None and time.perf_counter() - killed_at < 600:
        if back is None and any("RayTrainWorker" in a and p not in workers for p, a in _session_procs(proc.pid)):
            back = time.perf_counter() - killed_at
        time.sleep(0.1)
    if proc.poll() is None:
        kill_group(proc)
    rc = proc.wait()
    log = (tmp / "sft.log").read_text()
    out = {"killed_workers": len(workers), "checkpoint_step_at_kill": at_kill, "job_exit": rc,
           "job_wall_s": round(time.perf_counter() - t0, 1),
           "worker_back_s": None if back is None else round(back, 1),
           "trained_to_60": "trained to step 60" in log,
           "error": next((ln for ln in reversed(log.splitlines()) if ln.startswith("error")), None)}
    resumes = run / "ilp_logs" / "resumes.jsonl"
    out["resumed_at"] = [json.loads(x)["step"] for x in resumes.read_text().splitlines()] if resumes.is_file() else []
    if rc == 0:
        ref = run_training(SftTrainConfig.model_validate(_train_cfg(env, runs, "clean", 0)))
        b = pd.read_parquet(run / "ilp_logs" / "batches")
        rb = pd.read_parquet(runs / "clean" / "ilp_logs" / "batches")
        t = pd.read_parquet(run / "trajectory.parquet")
        rt = pd.read_parquet(ref.trajectory)
        m = t.merge(rt, on=["step", "id"], suffixes=("", "_ref"))
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        run_id = json.loads((run / "ilp_run.json").read_text())["mlflow_run_id"]
        hist = {k: [m.step for m in client.get_metric_history(run_id, k)] for k in client.get_run(run_id).data.metrics}
        out.update(mlflow_metric_keys=len(hist),
                   mlflow_steps_logged_twice=sum(len(s) - len(set(s)) for s in hist.values()),
                   mlflow_loss_steps=sorted(hist.get("loss", [])) == list(range(1, 61)))
        out.update(steps_once=b.step.tolist() == list(range(1, 61)),
                   same_batches=[list(x) for x in b.ids] == [list(x) for x in rb.ids],
                   trajectory_duplicates=int(t.duplicated(["step", "id"]).sum()),
                   trajectory_rows=len(t), trajectory_rows_clean=len(rt),
                   max_abs_dp_trajectory=float((m.p_correct - m.p_correct_ref).abs().max()) if len(m) else None)
    return out


def two_audits(env: dict, tmp: Path) -> dict:
    run_dir = tmp / "shared"
    cfg = tmp / "shared.yaml"
    cfg.write_text(audit_yaml(env, run_dir))
    first = start_audit(cfg, tmp / "first.log", slow_s=0.3)
    deadline = time.time() + 120
    while not (run_dir / ".ilp.lock").exists() or not list(run_dir.glob("mc/*")):
        if first.poll() is not None or time.time() > deadline:
            raise RuntimeError("the first audit did not start: " + (tmp / "first.log").read_text()[-2000:])
        time.sleep(0.1)
    t = time.perf_counter()
    second = subprocess.run([sys.executable, str(ROOT / "jobs" / "audit.py"), "--config", str(cfg), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    refused_s = time.perf_counter() - t
    rc = first.wait(timeout=600)
    msg = [line for line in (second.stdout + second.stderr).splitlines() if line.startswith("error")]
    return {"second_exit": second.returncode, "refused_in_s": round(refused_s, 2), "message": msg[-1][:300] if msg else
            (second.stdout + second.stderr).strip()[-300:],
            "first_exit": rc, "first_summary": (run_dir / "summary.json").is_file()}


def replica(env: dict, tmp: Path, clients: int = 32, seconds: float = 25.0, kill_at: float = 6.0) -> dict:
    import ray
    from ray import serve

    from ilp_ray.serve.app import build_app
    from tests.helpers import free_port, wait_http

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"checkpoint_roots": [str(env["sft"].parent)], "allow_bundled": False, "batch_size": 4,
                     "audit_root": str(tmp / "audits")})
    serve.run(app, name="ilp", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz")
    body = json.dumps({"checkpoint": "sft", "items": [
        {"id": f"i{k}", "question": q, "options": [a, "X", "Y"], "answer": 0} for k, (q, a) in enumerate(FACTS[:3])]}).encode()

    def once() -> int:
        req = urllib.request.Request(url + "/v1/score", data=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {os.environ['ILP_API_TOKEN']}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return -1  # a dropped connection

    def run(retry: bool) -> dict:
        rows, stop = [], threading.Event()
        t0 = time.time()

        def client():
            while not stop.is_set():
                start, attempts = time.time() - t0, 0
                while True:
                    attempts += 1
                    status = once()
                    if status == 200 or not retry or status not in (503, -1) or attempts >= 60:
                        break
                    time.sleep(0.5)
                rows.append((start, time.time() - t0, status, attempts))

        with cf.ThreadPoolExecutor(clients) as pool:
            futs = [pool.submit(client) for _ in range(clients)]
            time.sleep(kill_at)
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["namespace"] == "serve" and "Scorer" in a["name"]]
            killed = time.time() - t0
            ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=False)
            time.sleep(seconds - kill_at)
            stop.set()
            for f in futs:
                f.result()
        after = [r for r in rows if r[0] >= killed]
        ok_after = [r[1] for r in after if r[2] == 200]
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[str(r[2])] = statuses.get(str(r[2]), 0) + 1
        failed = sum(r[2] != 200 for r in rows)
        return {"requests": len(rows), "failed": failed, "failed_share": round(failed / max(1, len(rows)), 4),
                "statuses": statuses, "retries": sum(r[3] - 1 for r in rows),
                "recovery_s": round(min(ok_after) - killed, 2) if ok_after else None}

    try:
        out = {"clients": clients, "seconds": seconds, "no_retry": run(False)}
        time.sleep(5)  # the replica back before the second round
        out["retry"] = run(True)
        return out
    finally:
        serve.shutdown()
        ray.shutdown()


def mlflow_down(env: dict, tmp: Path) -> dict:
    from tests.helpers import free_port, wait_http

    port = free_port()
    store = tmp / "mlflow.db"
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
                               f"sqlite:///{store}", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
    os.killpg(server.pid, signal.SIGTERM)  # stopped before the audit reaches its tracking stage
    server.wait()
    run_dir = tmp / "tracked"
    cfg = tmp / "tracked.yaml"
    cfg.write_text(audit_yaml(env, run_dir, f"tracking: {{enabled: true, uri: 'http://127.0.0.1:{port}'}}\n"))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "jobs" / "audit.py"), "--config", str(cfg), "--no-progress"],
                       capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_TIMEOUT="5"))
    text = p.stdout + p.stderr
    return {"exit": p.returncode, "seconds": round(time.perf_counter() - t, 1),
            "names_the_server": f"127.0.0.1:{port}" in text, "traceback": "Traceback" in text,
            "last_line": text.strip().splitlines()[-1][:240] if text.strip() else "",
            "verdicts_written": (run_dir / "verdicts" / "_manifest.json").is_file(),
            "ilp_run_json": (run_dir / "ilp_run.json").is_file()}


SCENARIOS = {"audit-kill": audit_kill, "actor-kill": actor_kill, "worker-kill": worker_kill, "two-audits": two_audits, "replica": replica, "mlflow-down": mlflow_down}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="Scenarios to run (default: all).")
    args = ap.parse_args(argv)
    from ilp_ray.env import apply_defaults

    apply_defaults()
    out = {}
    with tempfile.TemporaryDirectory(prefix="ilp-faults-") as d:
        tmp = Path(d)
        env = setup(tmp)
        for name in args.only or list(SCENARIOS):
            t = time.perf_counter()
            sub = tmp / name
            sub.mkdir()
            out[name] = SCENARIOS[name](env, sub)
            out[name]["wall_s"] = round(time.perf_counter() - t, 1)
            print(f"{name}: {json.dumps(out[name])}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
