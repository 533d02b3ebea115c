"""HTTP request and response bodies of the scoring service (they define its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(..., min_length=1, description="'system', 'user' or 'assistant' (the chat template's roles).")
    content: str = Field(..., description="The turn's text.")


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("id")
    @classmethod
    def _id_length(cls, v):
        if len(str(v)) > 256:
            raise ValueError("at most 256 characters")
        return v

    id: str | int = Field(..., description="Your id for the item; echoed back (at most 256 characters).")
    question: str = Field(..., description=(
        "The question (the prompt). Empty: the options are scored without one, their prior, as "
        "the audit's calibration and fairness check ask (ilp_ray/scoring/prior.py)."))
    options: list[str] = Field(..., min_length=2, description="The options, in order.")
    answer: int = Field(..., ge=0, description="Index of the correct option.")
    history: list[Turn] = Field(default_factory=list, description=(
        "The conversation before the question, oldest first (a system turn, earlier turns): "
        "rendered before it, as the audit renders a sample taken from a conversation."))


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(..., description="Checkpoint id (GET /v1/checkpoints) or bundled name.")
    items: list[Item] = Field(..., min_length=1)
    format: Literal["chat", "plain", "lm-eval"] = Field("lm-eval", description="Prompt format.")
    n: int = Field(5, ge=1, description="N of pass@N and BoN-N.")
    temperature: float = Field(1.0, ge=1e-3, le=1e3, allow_inf_nan=False, description=(
        "Softmax temperature over option scores (0.001-1000: outside it the softmax over- or underflows)."))
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the N draws (0 to 2^32 - 1).")
    length_norm: Literal["none", "chars", "tokens"] = Field("none", description="Option score normalisation.")


class ItemResult(BaseModel):
    id: str
    loglikelihoods: list[float]
    n_tokens: list[int]
    n_chars: list[int]
    answer: int
    probs: list[float]
    pred: int = Field(..., description="argmax of the summed log-likelihoods (lm-eval acc).")
    pred_norm: int = Field(..., description="argmax per character (lm-eval acc_norm).")
    correct: bool
    pass_at_n: float = Field(..., description="Fraction of N seeded draws that are correct.")
    pass_expected: float = Field(..., description="p(correct): the exact expectation of pass@N.")
    bon_correct: bool = Field(..., description="Is the most confident of the N draws correct?")
    entropy: float
    confidence: float
    truncated: bool


class ScoreResponse(BaseModel):
    checkpoint: str
    format: str
    n: int
    items: list[ItemResult]


class AuditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(..., description=(
        "An audit config (as in audit.yaml). sft_model/base_model are checkpoint ids; run_dir is "
        "chosen by the service."))


class AuditStatus(BaseModel):
    id: str
    state: Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]
    run_dir: str | None = Field(None, description="The job's run directory, by its name under the service's audit_root.")
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
