"""A mitigation study as a Ray job.

    ray job submit --working-dir . -- python jobs/mitigate.py run --run runs/audit --arms conflict_bucket,control

Takes the same subcommands and flags as ``ilp mitigate`` (plan, run, compare); all logic lives in
``ilp_ray.mitigate``. Every arm's training runs on the cluster's Ray Train workers.
"""

import sys
from pathlib import Path

# With --working-dir the repository is the job's cwd; make the package importable even where it
# is not pip-installed on the cluster image.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ilp_ray.cli import app

if __name__ == "__main__":
    app(["mitigate", *sys.argv[1:]])
