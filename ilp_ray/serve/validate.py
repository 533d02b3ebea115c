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
    ids: dict[str, object] = {}
    for it in body.items:  # ids are echoed as strings: 3 and "3" would be one item
        if str(it.id) in ids:
            raise HTTPException(422, f"items: duplicate id {it.id!r} (ids are compared as strings)")
        ids[str(it.id)] = it.id
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


#: What a client may set in ``POST /v1/audit``'s config, as dotted prefixes: the data and the
#: models (confined below), and the detection, MC, scoring-format and diagnosis *settings*. Every
#: URL, environment-variable name, credential, path, Spark master, index, plugin, Ray resource and
#: tracking field comes from the service's own ``audit_defaults`` (finding 1 of issue 20: a client
#: naming ``scoring.url`` or ``*_api_key_env`` would have the service send its secrets anywhere).
CLIENT_FIELDS = (
    "data", "data_format", "sft_model", "base_model", "name", "preset",
    "mc.k", "mc.seed", "mc.near_dup", "mc.prefer_same_subset", "mc.distractors", "mc.length_ratio",
    "mc.subject_check",
    "scoring.format", "scoring.batch_size", "scoring.max_length", "scoring.length_norm", "scoring.temperature",
    "scoring.calibration",
    "detect",
    "evidence.enabled", "evidence.scope", "evidence.retrieve.k", "evidence.match.enabled", "evidence.match.theta",
    "diagnose.enabled", "diagnose.preset", "diagnose.causes", "diagnose.scope", "diagnose.relapse_to_base",
    "diagnose.report_worst", "diagnose.base_conflict", "diagnose.corpus", "diagnose.knowledge_gap",
    "diagnose.forgetting", "diagnose.insufficient",
    *(f"diagnose.conflict.{k}" for k in ("theta", "same_question", "rare_df", "rare_min_prompts", "unit_pairs",
                                          "unit_theta", "unit_max_group", "theta_response", "response_match", "k",
                                          "judge_margin")),
)


def _leaves(raw: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in raw.items():
        key = f"{prefix}{k}"
        out.extend(_leaves(v, key + ".") if isinstance(v, dict) and v else [key])
    return out


def _allowed(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") for f in CLIENT_FIELDS)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def audit_config(raw: dict, cfg: ServeConfig, job_id: str) -> dict:
    """Validate an audit config from a client: only ``CLIENT_FIELDS`` may be set (anything else is
    a 422 naming the field), merged over the service's ``audit_defaults``; the models resolved
    under the checkpoint roots and the data under the data roots, and passed on resolved."""
    from pathlib import Path

    from ilp_ray.serve.checkpoints import CheckpointNotFound, resolve_checkpoint

    refused = [f for f in _leaves(raw) if not _allowed(f)]
    if refused:
        raise HTTPException(422, f"config.{refused[0]}: not settable by a client; the service's own "
                                 "config sets it" + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""))
    for field, top in cfg.limits.audit_max.items():
        node: object = raw
        for part in field.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool) and node > top:
            raise HTTPException(422, f"config.{field}: limit audit_max.{field}={top:g} exceeded: {node}")
    raw = _merge(cfg.audit_defaults, raw)
    raw["run_dir"] = str(Path(cfg.audit_root).resolve() / job_id)
    try:
        for key in ("sft_model", "base_model"):
            if raw.get(key):
                raw[key] = resolve_checkpoint(str(raw[key]), cfg.checkpoint_roots, cfg.allow_bundled)
    except CheckpointNotFound as e:
        raise HTTPException(404, str(e)) from None
    data = raw.get("data")
    if not isinstance(data, str) or not data:
        raise HTTPException(422, "config.data: a path under a configured data root is required")
    if "://" in data:
        if not data_uri_allowed(data, cfg.data_uri_prefixes):
            raise HTTPException(403, "config.data must be a path under a configured data root, or a URI under "
                                     "a configured data URI prefix")
        return _validated(raw)
    if data.startswith("~"):
        raise HTTPException(403, "config.data must be a path under a configured data root (no URI schemes)")
    p = (Path(cfg.data_roots[0]) / data if cfg.data_roots and not Path(data).is_absolute() else Path(data)).resolve()
    if not any(p.is_relative_to(Path(r).resolve()) for r in cfg.data_roots):
        raise HTTPException(403, "config.data must lie under a configured data root")
    raw["data"] = str(p)
    return _validated(raw)


def _validated(raw: dict) -> dict:
    from pydantic import ValidationError

    from ilp_ray.config import AuditConfig

    try:
        return AuditConfig(**raw).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        raise HTTPException(422, f"config.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def data_uri_allowed(uri: str, prefixes: list[str]) -> bool:
    """Whether a client's data URI lies under one of ``prefixes`` (``ServeConfig.data_uri_prefixes``):
    it starts with the prefix, and carries no credentials, no ``.``/``..`` segment (percent-encoded
    or not), no backslash, query or fragment that could lead a reader elsewhere."""
    from urllib.parse import unquote, urlsplit

    u = urlsplit(uri)
    if "@" in u.netloc or any(c in uri for c in "\\?#"):
        return False
    if any(seg in (".", "..") for seg in unquote(u.path).split("/")):
        return False
    return any(uri.startswith(p) and len(uri) > len(p) for p in prefixes)
