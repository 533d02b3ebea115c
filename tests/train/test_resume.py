"""A real SFT job killed mid-run (SIGKILL of its process group) resumes where its checkpoint left it."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ilp_ray.train.state import latest_registered_step as _latest_registered
from tests.train.conftest import train_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _start(cfg_path: Path, log: Path, slow_s: float) -> subprocess.Popen:
    env = {**os.environ, "ILP_SLOW_STEP_S": str(slow_s)}
    return subprocess.Popen([sys.executable, str(ROOT / "jobs" / "sft.py"), "--config", str(cfg_path)],
                            cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies are already dead: they only wait to be reaped)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True, check=True).stdout
    rows = (line.split() for line in out.splitlines() if line.strip())
    return [int(p) for p, s, stat in rows if int(s) == sid and not stat.startswith("Z")]


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the job's session and wait until none is left.

    Ray puts each worker in its own process group (same session), so killing the job's group alone
    leaves the train workers running for a moment, long enough to write one more checkpoint.
    """
    deadline = time.time() + 30
    while pids := _session_pids(sid):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.time() < deadline, f"processes of the killed job still alive: {pids}"
        time.sleep(0.1)


def test_killed_job_resumes_at_its_checkpoint(tmp_path, interference_jsonl, ray_session):
    import pandas as pd

    from ilp_ray.train.config import SftTrainConfig
    from ilp_ray.train.run import run_training

    # 16 records, batch 4, 15 epochs: 60 steps, reshuffled every epoch; a checkpoint every 10.
    over = {"order.sampler": "shuffled", "optim.epochs": 15, "checkpoint.every_steps": 10,
            "trajectory.every_steps": 5, "engine.strategy": "deepspeed"}
    cfg = train_config(interference_jsonl, tmp_path / "runs", "killed", **over)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # tracked, as a user's run is: MLflow sees the resume too
    cfg["tracking"] = {"enabled": True, "uri": uri, "experiment": "resume"}
    cfg_path = tmp_path / "sft.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "runs" / "killed"

    job = _start(cfg_path, tmp_path / "first.log", slow_s=0.25)
    deadline = time.time() + 240
    while _latest_registered(run) < 20:
        assert job.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint registered in time"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    _kill_session(job.pid)
    # With every process of the job gone, nothing writes to the run any more; what a restart resumes
    # from is the latest checkpoint that was registered (and so fully written) before the kill.
    registered = _latest_registered(run)
    on_disk = sorted(int(p.name.removeprefix("checkpoint_step")) for p in run.glob("checkpoint_step*"))
    assert 20 <= registered < 60 and registered in on_disk

    job = _start(cfg_path, tmp_path / "second.log", slow_s=0)
    assert job.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    second = (tmp_path / "second.log").read_text()
    resumes = [json.loads(line) for line in (run / "ilp_logs" / "resumes.jsonl").read_text().splitlines()]
    assert len(resumes) == 1
    killed_at = resumes[0]["step"]
    assert killed_at in on_disk and registered <= killed_at < 60  # the newest checkpoint, never an older one
    assert "trained to step 60" in second

    ref = run_training(SftTrainConfig.model_validate(train_config(interference_jsonl, tmp_path / "runs",
                                                                  "uninterrupted", **over)))
    assert ref.metrics["step"] == 60

    def logs(name):
        batches = pd.read_parquet(tmp_path / "runs" / name / "ilp_logs" / "batches")
        traj = pd.read_parquet(tmp_path / "runs" / name / "trajectory.parquet")
        return batches, traj

    (b, t), (rb, rt) = logs("killed"), logs("uninterrupted")
    # Same steps, each once, and the same examples at every step as the uninterrupted run.
    assert b.step.tolist() == list(range(1, 61))
    assert [list(x) for x in b.ids] == [list(x) for x in rb.ids]
    # The trajectory: no (step, id) twice, the same evaluation steps, and the same figures.
    assert not t.duplicated(["step", "id"]).any()
    assert sorted(set(t.step)) == sorted(set(rt.step))
    merged = t.merge(rt, on=["step", "id"], suffixes=("", "_ref"))
    assert len(merged) == len(rt)
    assert (merged.p_correct - merged.p_correct_ref).abs().max() < 1e-3
    # MLflow: every step metric of the killed run once per step, though steps after the checkpoint
    # ran twice (once before the kill, once after the resume), and the steps the clean run logs.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run_id = json.loads((run / "ilp_run.json").read_text())["mlflow_run_id"]
    keys = list(client.get_run(run_id).data.metrics)
    assert "loss" in keys
    for key in keys:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), f"{key}: steps logged twice {sorted(steps)}"
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == list(range(1, 61))  # log_every 1
