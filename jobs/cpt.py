"""Continued pretraining as a Ray job.

    ray job submit --working-dir . -- python jobs/cpt.py --config deploy/train-cpt.yaml [--set key=value ...]

Takes the same flags as ``ilp train cpt``; all logic lives in ``ilp_ray.train``. Rerunning the same
config after a crash resumes from the run's latest checkpoint.
"""

import sys
from pathlib import Path

# With --working-dir the repository is the job's cwd; make the package importable even where it
# is not pip-installed on the cluster image.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ilp_ray.train.cli import train_app

if __name__ == "__main__":
    train_app(["cpt", *sys.argv[1:]])
