"""Audits started over HTTP: a detached registry actor that launches and tracks audit tasks.

The registry outlives ingress replicas (it is a named detached actor), so any replica can answer
``GET /v1/audit/{id}``. It is in-memory: restarting the Ray cluster forgets the jobs (their run
directories and MLflow runs remain).
"""

from __future__ import annotations

from typing import Any

import ray

REGISTRY_NAME, NAMESPACE = "ilp-audit-registry", "ilp"


@ray.remote(num_cpus=0)  # it only waits on its Ray Data pipeline, whose actors take the CPUs
def _run_audit(cfg: dict) -> dict:
    from ilp_ray.config import AuditConfig
    from ilp_ray.pipeline.audit import run_audit

    result = run_audit(AuditConfig(**cfg), progress=False)
    return {"run_dir": str(result.run_dir), "mlflow_run_id": result.run_id,
            "tracking_uri": result.tracking_uri,
            "summary": {k: v for k, v in result.summary.items() if not isinstance(v, dict)}}


@ray.remote(num_cpus=0)
class AuditRegistry:
    def __init__(self):
        self.jobs: dict[str, dict[str, Any]] = {}

    def submit(self, job_id: str, cfg: dict) -> None:
        self.jobs[job_id] = {"ref": _run_audit.remote(cfg), "run_dir": cfg.get("run_dir")}

    def status(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        out = {"id": job_id, "run_dir": job["run_dir"], "state": "RUNNING"}
        ready, _ = ray.wait([job["ref"]], timeout=0)
        if ready:
            try:
                out.update(ray.get(job["ref"]), state="SUCCEEDED")
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if getattr(e, "cause", None) is not None else e
                # The client gets the error's own message, never the traceback.
                out.update(state="FAILED", error=f"{type(cause).__name__}: {str(cause).splitlines()[0][:500]}")
        return out


def registry():
    return AuditRegistry.options(name=REGISTRY_NAME, namespace=NAMESPACE, lifetime="detached",
                                 get_if_exists=True).remote()
