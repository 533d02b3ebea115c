"""Process environment defaults: offline models, one torch thread, a quiet local Ray.

Set with ``setdefault`` so that a user's own environment always wins.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # Nothing is downloaded from a model hub at run time.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # transformers' and the hub's per-file bars would drown the job's own progress bar.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray workers otherwise run at nice 15 and lose the CPU to the driver.
    "RAY_worker_niceness": "0",
    "SPARK_LOCAL_IP": "127.0.0.1",
}

# Only for a Ray that this process starts itself: token auth (on by default in 2.60) has nothing to
# protect on a single machine, and a cluster sets its own policy.
LOCAL_RAY = {"RAY_AUTH_MODE": "disabled"}


def apply_defaults(local_ray: bool = True) -> None:
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)
    if local_ray:
        for k, v in LOCAL_RAY.items():
            os.environ.setdefault(k, v)


def init_ray(address: str | None = None, **kwargs):
    """Join ``address`` or start a local Ray, unless this process already has one."""
    import ray

    apply_defaults(local_ray=address is None)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 configure_logging=False, **kwargs)
    return ray
