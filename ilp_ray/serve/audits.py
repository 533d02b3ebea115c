"""Audits started over HTTP: a detached registry actor that launches and tracks audit tasks.

The registry outlives ingress replicas (it is a named detached actor, restarted by Ray if it
dies), so any replica can answer ``GET /v1/audit/{id}``. Each job's status is also written to its
run directory (``ilp_serve_job.json``): a restarted registry, or a restarted cluster, answers from
there (a job that was running when the registry died reads as FAILED: its task died with it), and
a finished job is not kept in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray

JOB_FILE = "ilp_serve_job.json"

REGISTRY_NAME, NAMESPACE = "ilp-audit-registry", "ilp"


@ray.remote(num_cpus=0)  # it only waits on its Ray Data pipeline, whose actors take the CPUs
def _run_audit(cfg: dict) -> dict:
    from ilp_ray.config import AuditConfig
    from ilp_ray.pipeline.audit import run_audit

    result = run_audit(AuditConfig(**cfg), progress=False)
    return {"run_dir": str(result.run_dir), "mlflow_run_id": result.run_id,
            "tracking_uri": result.tracking_uri,
            "summary": {k: v for k, v in result.summary.items() if not isinstance(v, dict)}}


@ray.remote(num_cpus=0, max_restarts=-1)
class AuditRegistry:
    def __init__(self):
        self.jobs: dict[str, dict[str, Any]] = {}

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if not ray.wait([j["ref"]], timeout=0)[0])

    def submit(self, job_id: str, cfg: dict) -> None:
        run_dir = cfg.get("run_dir")
        _write(run_dir, {"id": job_id, "state": "RUNNING", "run_dir": run_dir})
        self.jobs[job_id] = {"ref": _run_audit.remote(cfg), "run_dir": run_dir}

    def status(self, job_id: str, audit_root: str) -> dict | None:
        job = self.jobs.get(job_id)
        if job is None:  # finished earlier, or the registry restarted: the run directory knows
            path = Path(audit_root) / job_id / JOB_FILE
            if not path.is_file():
                return None
            out = json.loads(path.read_text())
            if out.get("state") == "RUNNING":  # its task died with the registry that held it
                out.update(state="FAILED", error="the audit was lost when the service restarted; submit it again")
                _write(out.get("run_dir"), out)
            return out
        out = {"id": job_id, "run_dir": job["run_dir"], "state": "RUNNING"}
        ready, _ = ray.wait([job["ref"]], timeout=0)
        if ready:
            try:
                out.update(ray.get(job["ref"]), state="SUCCEEDED")
            except Exception as e:  # a task error, a dead worker, anything: the job failed
                cause = getattr(e, "cause", None) or e
                # The client gets the error's own message, never the traceback.
                out.update(state="FAILED", error=f"{type(cause).__name__}: {str(cause).splitlines()[0][:500]}")
            _write(job["run_dir"], out)
            del self.jobs[job_id]
        return out


def _write(run_dir: str | None, status: dict) -> None:
    if run_dir:
        from ilp_ray.storage import write_json_atomic

        write_json_atomic(status, Path(run_dir) / JOB_FILE)


def registry():
    return AuditRegistry.options(name=REGISTRY_NAME, namespace=NAMESPACE, lifetime="detached",
                                 get_if_exists=True).remote()
