"""The scoring-engine registry, and the one place that turns a scoring config into an engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ilp_ray.registry import Registry

if TYPE_CHECKING:
    from ilp_ray.config import ScoringConfig
    from ilp_ray.scoring.base import ScoringEngine

ENGINES: Registry = Registry("scoring engine", "ilp_ray.scoring.base:ScoringEngine")
ENGINES.register("transformers", "ilp_ray.scoring.hf:TransformersEngine")
ENGINES.register("naive", "ilp_ray.scoring.naive:NaiveEngine")
ENGINES.register("http", "ilp_ray.scoring.http:HttpEngine")
ENGINES.register("vllm", "ilp_ray.scoring.vllm_engine:VllmEngine")


def make_engine(scoring: ScoringConfig, model: str, tag: str | None = None) -> ScoringEngine:
    """Build the configured engine for ``model`` (a checkpoint dir or a bundled name)."""
    cls = ENGINES.get(scoring.engine)
    extra = {"http": {"url": scoring.url}, "vllm": scoring.vllm_args}.get(scoring.engine, {})
    return cls(model, fmt=scoring.format, batch_size=scoring.batch_size,
               max_length=scoring.max_length, tag=tag or str(model), **extra)
