"""The Serve application: a FastAPI ingress in front of the multiplexed scorer.

    serve run ilp_ray.serve.app:build_app checkpoint_roots=/ckpts      # or: serve deploy deploy/serve.yaml

The ingress authenticates, enforces limits, resolves checkpoint ids and maps errors to status
codes; the scoring itself is ``ilp_ray.detect.item_results`` in the scorer replicas, the
same code path as the audit. No handler returns a stack trace.
"""


import hmac
import logging
import os
import re
import uuid
from pathlib import Path

import ray.exceptions
import ray.serve.exceptions
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from ilp_ray import __version__
from ilp_ray.serve.config import ServeConfig
from ilp_ray.serve.schemas import AuditRequest, AuditStatus, ScoreRequest, ScoreResponse
from ilp_ray.serve.scorer import Scorer

log = logging.getLogger("ilp_ray.serve")
api = FastAPI(title="ilp-ray scoring service", version=__version__,
              description="Score MC items with a checkpoint (pass@N, BoN-N) and start audits.")
#: The errors of a replica that is gone or busy (503: retry), and nothing else.
UNAVAILABLE = (ray.exceptions.RayActorError, ray.serve.exceptions.BackPressureError,
               ray.serve.exceptions.DeploymentUnavailableError, ray.serve.exceptions.ReplicaUnavailableError)
#: Paths any client may reach without the token. /docs and /openapi.json are not among them: the
#: schema names every field and limit, so it is for authenticated clients (as the README says).
PUBLIC_PATHS = frozenset({"/healthz"})


def token_ok(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and bool(token) and hmac.compare_digest(given.encode(), token.encode())


class Guard:
    """ASGI middleware in front of FastAPI: the bearer token and the body size are checked before
    a byte of the body is read or parsed, so an unauthenticated client gets a 401, never the
    field-by-field 422s, and no body past ``limits.max_body_bytes`` is buffered (Content-Length
    first, then a running count for chunked bodies). ``settings`` is set by the ``Api`` replica;
    until then every request but /healthz gets a 503."""

    settings: dict | None = None

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        s = Guard.settings
        if s is None:
            return await _reply(send, 503, {"error": "service starting; retry"})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if s["auth"] != "disabled" and not token_ok(headers.get("authorization", ""), s["token"]):
            return await _reply(send, 401, {"error": "missing or wrong bearer token"},
                                [(b"www-authenticate", b"Bearer")])
        cap = s["max_body_bytes"]
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            return await _reply(send, 413, {"error": f"limit max_body_bytes={cap} exceeded"})
        chunks, size, more = [], 0, True
        while more:  # read the whole body here, bounded; the app gets it replayed
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > cap:
                return await _reply(send, 413, {"error": f"limit max_body_bytes={cap} exceeded"})
            chunks.append(body)
            more = msg.get("more_body", False)
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        return await self.app(scope, replayed, send)


async def _reply(send, status: int, content: dict, headers: list | None = None) -> None:
    import json

    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


api.add_middleware(Guard)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    detail = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
              for e in exc.errors()[:20]]
    return JSONResponse(status_code=422, content={"error": "invalid request", "detail": detail})


@api.exception_handler(HTTPException)
async def _http(request: Request, exc: HTTPException):
    return JSONResponse(status_code=exc.status_code, content={"error": exc.detail},
                        headers=getattr(exc, "headers", None))


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception):
    ref = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s", ref)
    return JSONResponse(status_code=500, content={"error": f"internal error (reference {ref})"})


def _public(status: dict, roots: list[str] | tuple[str, ...] = ()) -> dict:
    """A job's status as a client sees it: the run directory by its name under ``audit_root`` (not
    the service's absolute path), the tracking URI without userinfo (no credentials), and a FAILED
    job's error with no absolute path of this machine (``public_error``)."""
    from ilp_ray.track import public_uri

    out = dict(status)
    if out.get("run_dir"):
        out["run_dir"] = Path(out["run_dir"]).name
    if out.get("tracking_uri"):
        out["tracking_uri"] = public_uri(out["tracking_uri"])
    if isinstance(out.get("error"), str):
        out["error"] = public_error(out["error"], roots)
    return out


_ABS_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\":,;()\[\]{}<>/]+/)*([^\s'\":,;()\[\]{}<>/]*)")


def public_error(message: str, roots: list[str] | tuple[str, ...] = ()) -> str:
    """``message`` without this machine's layout: a path under one of ``roots`` (the data, audit and
    checkpoint roots, as the client names files) becomes relative to it, and any other absolute
    path is cut to its last part (``…/name``). The client learns no more than the names it sent."""
    from ilp_ray.errors import redact

    message = redact(message)
    for root in sorted({str(Path(r).resolve()) for r in roots}, key=len, reverse=True):
        message = message.replace(root.rstrip("/") + "/", "")
    return _ABS_PATH.sub(lambda m: "…/" + m.group(1), message)


@serve.deployment(name="Api", ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Api:
    def __init__(self, scorer: DeploymentHandle, cfg: dict):
        self.cfg = ServeConfig(**cfg)
        self.scorer = scorer
        self.token = os.environ.get(self.cfg.token_env, "")
        if self.cfg.auth == "token" and not self.token:
            raise RuntimeError(f"auth is 'token' but ${self.cfg.token_env} is empty: set it, or set "
                               "auth: disabled explicitly for local use")
        Guard.settings = {"auth": self.cfg.auth, "token": self.token, "max_body_bytes": self.cfg.limits.max_body_bytes}

    def _authorize(self, request: Request) -> None:
        """The same check as ``Guard`` (which already refused a bad token): defence in depth, should
        a route ever be mounted past the middleware."""
        if self.cfg.auth != "disabled" and not token_ok(request.headers.get("authorization", ""), self.token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "version": __version__}

    @api.get("/v1/checkpoints")
    async def checkpoints(self, request: Request) -> dict:
        from ilp_ray.serve.checkpoints import list_checkpoints

        self._authorize(request)
        return {"checkpoints": list_checkpoints(self.cfg.checkpoint_roots, self.cfg.allow_bundled)}

    @api.post("/v1/score", response_model=ScoreResponse)
    async def score(self, body: ScoreRequest, request: Request) -> dict:
        from ilp_ray.serve.checkpoints import CheckpointNotFound, resolve_checkpoint
        from ilp_ray.serve.validate import check_limits

        self._authorize(request)
        check_limits(body, self.cfg)
        try:
            resolve_checkpoint(body.checkpoint, self.cfg.checkpoint_roots, self.cfg.allow_bundled)
        except CheckpointNotFound as e:
            raise HTTPException(404, str(e)) from None
        handle = self.scorer.options(multiplexed_model_id=body.checkpoint)
        try:
            out = await handle.score.remote(body.model_dump())
        except UNAVAILABLE as e:  # a replica died, is restarting or is full: the client should retry
            log.warning("scorer unavailable: %s", type(e).__name__)
            raise HTTPException(503, "scorer unavailable; retry the request") from None
        except Exception:  # anything else (a corrupt checkpoint, a bug) is not cured by retrying
            ref = uuid.uuid4().hex[:12]
            log.exception("scorer failed %s", ref)
            raise HTTPException(500, f"scoring failed (reference {ref}); retrying will not help") from None
        if "error" in out:
            raise HTTPException(out["status"], out["error"])
        return out

    @api.post("/v1/audit", response_model=AuditStatus, status_code=202)
    async def start_audit(self, body: AuditRequest, request: Request) -> dict:
        from ilp_ray.serve.audits import registry
        from ilp_ray.serve.validate import audit_config

        self._authorize(request)
        job_id = uuid.uuid4().hex[:16]
        cfg = audit_config(body.config, self.cfg, job_id)
        reg = registry()
        cap = self.cfg.limits.max_concurrent_audits
        try:
            running = await reg.running.remote()
        except UNAVAILABLE:
            raise HTTPException(503, "audit registry restarting; retry the request") from None
        if running >= cap:
            raise HTTPException(429, f"limit max_concurrent_audits={cap} reached; retry when one finishes",
                                headers={"Retry-After": "60"})
        await reg.submit.remote(job_id, cfg)
        return _public({"id": job_id, "state": "RUNNING", "run_dir": cfg["run_dir"]})

    @api.get("/v1/audit/{job_id}", response_model=AuditStatus)
    async def audit_status(self, job_id: str, request: Request) -> dict:
        from ilp_ray.serve.audits import registry

        self._authorize(request)
        if not (len(job_id) == 16 and all(c in "0123456789abcdef" for c in job_id)):
            raise HTTPException(404, f"unknown audit {job_id[:40]!r}")
        try:
            status = await registry().status.remote(job_id, str(Path(self.cfg.audit_root).resolve()))
        except UNAVAILABLE:  # the registry is restarting (Ray restarts it): retry
            raise HTTPException(503, "audit registry restarting; retry the request") from None
        if status is None:
            raise HTTPException(404, f"unknown audit {job_id!r}")
        return _public(status, [*self.cfg.data_roots, self.cfg.audit_root, *self.cfg.checkpoint_roots])


def build_app(args: dict) -> serve.Application:
    """The application for ``serve run``/``serve deploy``: ``args`` are ``ServeConfig`` fields."""
    args = dict(args)
    for key in ("checkpoint_roots", "data_roots"):  # `serve run ... key=a,b` passes strings
        if isinstance(args.get(key), str):
            args[key] = [s for s in args[key].split(",") if s]
    cfg = ServeConfig(**args)
    dump = cfg.model_dump()
    scorer = Scorer.options(ray_actor_options=cfg.scorer_actor_options, **cfg.scorer).bind(dump)
    return Api.bind(scorer, dump)
