"""Training jobs on Ray Train + DeepSpeed: SFT with per-sample learning trajectories, and CPT.

Importing this package is cheap: torch, ray, deepspeed and transformers are imported inside the
functions that run training. Entry points: ``ilp train sft|cpt`` (``ilp_ray.train.cli``),
``jobs/sft.py`` and ``jobs/cpt.py``, or ``run_training(cfg)`` from Python.
"""

from ilp_ray.train.state import checkpoint_id

__all__ = ["checkpoint_id", "run_training", "train_loop_per_worker"]


def __getattr__(name: str):
    if name == "run_training":
        from ilp_ray.train.run import run_training

        return run_training
    if name == "train_loop_per_worker":
        from ilp_ray.train.loop import train_loop_per_worker

        return train_loop_per_worker
    raise AttributeError(name)
