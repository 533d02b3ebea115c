"""Corpus evidence as a Ray job.

    ray job submit --working-dir . -- python jobs/evidence.py --data sft.jsonl --index corpus-idx --out runs/ev

Takes the same flags as ``ilp corpus evidence``; all logic lives in ``ilp_ray.evidence.run``.
"""

import sys
from pathlib import Path

# With --working-dir the repository is the job's cwd; make the package importable even where it
# is not pip-installed on the cluster image.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ilp_ray.cli import app

if __name__ == "__main__":
    app(["corpus", "evidence", *sys.argv[1:]])
