"""Scoring engines: log-likelihood of each option of a multiple-choice item.

Only the light contract is imported here; engines (torch, transformers) load on first use.
"""

from ilp_ray.scoring.base import ScoringEngine
from ilp_ray.scoring.formats import FORMATS, render

__all__ = ["FORMATS", "ScoringEngine", "render"]
