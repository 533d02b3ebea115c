"""Checkpoint ids → directories, confined to configured roots.

An id is a relative path under one of the roots (``team/run-7/step-1000``) or a bundled model
name. Absolute paths, ``..`` components, backslashes, NUL bytes and symlinks that leave the root
are refused; the error never echoes the filesystem layout.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath


class CheckpointNotFound(LookupError):
    """The id names no servable checkpoint (the message is safe to return to a client)."""


def resolve_checkpoint(ckpt_id: str, roots: list[str], allow_bundled: bool = True) -> str:
    """The model spec to load for ``ckpt_id``: a bundled name, or an absolute directory inside a root."""
    from ilp_ray.models import BUNDLED

    if allow_bundled and ckpt_id in BUNDLED:
        return ckpt_id
    bad = (not ckpt_id or len(ckpt_id) > 512 or "\\" in ckpt_id or "\x00" in ckpt_id
           or ckpt_id.startswith(("/", "~")) or ":" in ckpt_id)
    parts = PurePosixPath(ckpt_id).parts
    if bad or any(p in ("..", ".") for p in parts):
        raise CheckpointNotFound(f"invalid checkpoint id {ckpt_id!r}: use a path relative to a checkpoint root")
    for root in roots:
        base = Path(root).resolve()
        cand = (base / Path(*parts)).resolve()  # resolves symlinks: a link out of the root is caught here
        if cand.is_relative_to(base) and (cand / "config.json").is_file():
            return str(cand)
    raise CheckpointNotFound(f"unknown checkpoint {ckpt_id!r}")


def list_checkpoints(roots: list[str], allow_bundled: bool = True, max_depth: int = 4) -> list[str]:
    """Ids of the checkpoints under the roots (directories with a config.json), and bundled names."""
    from ilp_ray.models import BUNDLED

    out = sorted(BUNDLED) if allow_bundled else []
    for root in roots:
        base = Path(root).resolve()
        if not base.is_dir():
            continue
        for cfg in sorted(base.rglob("config.json")):
            rel = cfg.parent.relative_to(base)
            if len(rel.parts) <= max_depth and cfg.parent.resolve().is_relative_to(base) and rel.parts:
                out.append(rel.as_posix())
    return out
