"""Request checks of the Serve ingress: limits, and audit configs confined to configured roots.

Each failure is an ``HTTPException`` whose message names the limit or the field.
"""

from fastapi import HTTPException

from ilp_ray.serve.config import ServeConfig
from ilp_ray.serve.schemas import ScoreRequest


def check_limits(body: ScoreRequest, cfg: ServeConfig) -> None:
    lim = cfg.limits
    if len(body.items) > lim.max_items:
        raise HTTPException(413, f"limit max_items={lim.max_items} exceeded: {len(body.items)} items")
    if body.n > lim.max_n:
        raise HTTPException(422, f"limit max_n={lim.max_n} exceeded: n={body.n}")
    total = 0
    for it in body.items:
        if len(it.options) > lim.max_options:
            raise HTTPException(422, f"limit max_options={lim.max_options} exceeded: item {it.id!r} "
                                     f"has {len(it.options)} options")
        if it.answer >= len(it.options):
            raise HTTPException(422, f"item {it.id!r}: answer {it.answer} is out of range for "
                                     f"{len(it.options)} options")
        chars = len(it.question) + sum(len(o) for o in it.options)
        if chars > lim.max_item_chars:
            raise HTTPException(413, f"limit max_item_chars={lim.max_item_chars} exceeded: item "
                                     f"{it.id!r} has {chars} characters")
        total += chars
    if total > lim.max_request_chars:
        raise HTTPException(413, f"limit max_request_chars={lim.max_request_chars} exceeded: {total}")


def audit_config(raw: dict, cfg: ServeConfig, job_id: str) -> dict:
    """Validate an audit config from a client, confining its paths to the configured roots."""
    from pathlib import Path

    from pydantic import ValidationError

    from ilp_ray.config import AuditConfig
    from ilp_ray.serve.checkpoints import CheckpointNotFound, resolve_checkpoint

    raw = dict(raw, run_dir=str(Path(cfg.audit_root).resolve() / job_id))
    try:
        for key in ("sft_model", "base_model"):
            if raw.get(key):
                raw[key] = resolve_checkpoint(str(raw[key]), cfg.checkpoint_roots, cfg.allow_bundled)
    except CheckpointNotFound as e:
        raise HTTPException(404, str(e)) from None
    data = str(raw.get("data", ""))
    if data and "://" not in data:
        p = Path(data).resolve()
        if not any(p.is_relative_to(Path(r).resolve()) for r in cfg.data_roots):
            raise HTTPException(403, "config.data must lie under a configured data root")
    try:
        return AuditConfig(**raw).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        raise HTTPException(422, f"config.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
