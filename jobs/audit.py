"""Full audit as a Ray job.

    ray job submit --working-dir . -- python jobs/audit.py --config audit.yaml [--set key=value ...]

Takes the same flags as ``ilp audit``; all logic lives in ``ilp_ray.pipeline.audit`` (the stages themselves in ``ilp_ray.audit``). The config's
``evidence`` and ``diagnose`` sections add the corpus-evidence and diagnosis stages to the job.
"""

import sys
from pathlib import Path

# With --working-dir the repository is the job's cwd; make the package importable even where it
# is not pip-installed on the cluster image.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ilp_ray.cli import app

if __name__ == "__main__":
    app(["audit", *sys.argv[1:]])
