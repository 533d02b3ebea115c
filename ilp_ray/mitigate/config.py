"""The mitigation study's config (``ilp mitigate … --config mitigate.yaml``): one section per arm.

Each arm's section is its registered class's ``Config`` (``ilp_ray.mitigate.arms``); its defaults
are the paper's where it gives one, each field says why. Loaded with ``ilp_ray.config.load_config``,
so a bad file or ``--set`` names the file, line and field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ilp_ray.config_base import TrackingConfig, _Section
from ilp_ray.evidence.config import IndexConfig


class LlmSource(_Section):
    """An OpenAI-compatible endpoint that writes explanatory documents for a triple (off by default)."""

    enabled: bool = Field(False, description="Ask an LLM for documents (paper: the OpenAI API); off: sources only.")
    base_url: str | None = Field(None, description="Endpoint base URL (…/v1/chat/completions is appended).")
    model: str = Field("gpt-4o-mini", description="Model name sent in the request.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Env variable holding the API key, if any.")
    documents: int = Field(2, ge=1, description="Documents asked for per triple.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds per request.")

    @model_validator(mode="after")
    def _url(self):
        if self.enabled and not self.base_url:
            raise ValueError("llm.enabled needs llm.base_url")
        return self


class KnowledgeSources(_Section):
    """Where D_k's documents come from. Not the pretraining corpus: CPT on text the base already
    saw in pretraining teaches it nothing new."""

    index: IndexConfig | None = Field(None, description=(
        "A corpus index (tantivy or Elasticsearch, built with `ilp corpus index`) over a knowledge "
        "source; each triple's subject, relation and object are its query."))
    files: list[str] = Field(default_factory=list, description=(
        "Document files (JSONL or Parquet with 'text', or .txt: one document per line); a document "
        "serves a triple when it names the triple's subject."))
    llm: LlmSource = LlmSource()
    k: int = Field(20, ge=1, description="Index hits read per triple.")
    per_triple: int = Field(10, ge=1, description=(
        "Documents kept per triple at most (paper: about ten documents per knowledge area)."))
    max_overlap: float = Field(0.6, gt=0, le=1, description=(
        "A document that holds the SFT sample's prompt, or this share of the sample's word 3-grams, "
        "repeats the sample and is left out (paper: 'deliberately avoiding direct content from the "
        "original unlearned SFT samples')."))

    def configured(self) -> bool:
        return self.index is not None or bool(self.files) or self.llm.enabled


class CptArmConfig(_Section):
    """knowledge_cpt (cause I, Algorithm 1) and conflict_cpt (cause II, Algorithm 2)."""

    sources: KnowledgeSources = KnowledgeSources()
    extractor: Literal["rules", "llm"] = Field("rules", description=(
        "Triples from question and answer: 'rules' (subject = the question's named span, relation = "
        "its other content words, object = the answer), or 'llm' (sources.llm's endpoint)."))
    general: str | None = Field(None, description=(
        "General corpus D_general mixed with D_k; None needs ratio 1.0 (D_k alone)."))
    ratio: float = Field(0.2, gt=0, le=1, description="λ, D_k's share of the CPT mixture (paper: 0.2).")
    epochs: int = Field(1, ge=1, description="CPT passes over the mixture.")
    lr: float | None = Field(None, gt=0, description="CPT learning rate; None: the SFT run's.")
    block_size: int = Field(256, ge=8, description="Tokens per packed CPT block.")
    documents: int | None = Field(None, ge=1, description=(
        "Documents drawn per CPT epoch; None: |D_k| / λ (each D_k document once on average)."))

    def unmet(self) -> str | None:
        """Why the arm cannot run as configured, or None."""
        if not self.sources.configured():
            return "no knowledge sources configured (sources.index, .files or .llm)"
        if self.general is None and self.ratio != 1.0:
            return f"ratio {self.ratio} needs a general corpus (general), or set ratio: 1.0"
        return None


class DeleteArmConfig(_Section):
    """conflict_delete (cause III, Algorithm 3's removal)."""

    undecided: Literal["keep", "drop_both"] = Field("keep", description=(
        "A pair the judge could not decide: 'keep' both sides (removal needs a judged-wrong side, "
        "as in the paper), or drop both."))


class BucketArmConfig(_Section):
    """conflict_bucket (cause III, Algorithm 3's buckets)."""

    release_p: float | None = Field(0.5, ge=0, le=1, description=(
        "Dynamic grouping (paper: re-evaluated every K steps): a group whose members all reach this "
        "p(correct) at an evaluation shuffles freely until one falls below; None: static groups."))
    every_steps: int | None = Field(None, ge=1, description=(
        "K, steps between re-evaluations; None: the SFT run's trajectory schedule."))


class ResampleArmConfig(_Section):
    """dynamic_resample (cause IV, Algorithm 4)."""

    every_steps: int = Field(500, ge=1, description="T, steps between per-subset evaluations (paper: 500).")
    min_windows: int = Field(4, ge=1, description=(
        "A run shorter than this many windows of T steps evaluates every (steps / min_windows) steps "
        "instead, so re-sampling can act at all on a small run (the plan records the value used)."))
    delta: float = Field(0.05, ge=0, description="δ, relative accuracy drop that triggers re-sampling (paper: 5%).")
    upweight: float = Field(2.0, ge=1, description=(
        "A dropped subset's weight in the next window (2: its samples come twice as often)."))


#: progressive_epochs' default cap: max_epochs = EPOCH_CAP × e₀.
EPOCH_CAP = 4


class ProgressiveArmConfig(_Section):
    """progressive_epochs (cause V, Algorithm 5)."""

    initial_epochs: int | None = Field(None, ge=1, description=(
        "e₀; None: the SFT run's own epochs (the audit found those insufficient)."))
    max_epochs: int | None = Field(None, ge=1, description="Most epochs in all; None: 4 × e₀.")
    epsilon: float = Field(0.01, ge=0, description="ε, least epoch-end improvement that earns an epoch (paper: 0.01).")
    metric: Literal["accuracy", "p_correct"] = Field("accuracy", description=(
        "The validation figure: the trajectory sample's accuracy or mean p(correct)."))


class MitigateConfig(_Section):
    audit: str = Field(..., description="The audit run directory (with audit_config.json and diagnosis/).")
    out: str | None = Field(None, description="The study directory; None: <audit>/mitigate.")
    arms: list[str] | None = Field(None, description=(
        "Arms to plan and run; None: every registered arm whose prerequisites are met (the others are "
        "planned as skipped, with the reason)."))
    sft: dict = Field(default_factory=dict, description=(
        "Overrides of the original SFT training config (dotted keys or nested), e.g. scaling or "
        "trajectory settings; the original comes from the SFT checkpoint's training run."))
    train_config: str | None = Field(None, description=(
        "The original SFT training config (YAML) where the checkpoint was not trained by `ilp train sft`."))
    general_mc: str | None = Field(None, description=(
        "A general MC set (JSONL {id, question, options, answer}) scored before and after every arm: "
        "the general-ability cost of a mitigation (paper, Table 14)."))
    general_format: Literal["chat", "plain", "lm-eval"] = Field("lm-eval", description=(
        "Prompt format of the general MC set."))
    reaudit_base: bool = Field(True, description=(
        "Copy the original audit's base-model scores into each re-audit (the base did not change)."))
    tracking: TrackingConfig = TrackingConfig(experiment="ilp-mitigate")
    knowledge_cpt: CptArmConfig = CptArmConfig()
    conflict_cpt: CptArmConfig = CptArmConfig()
    conflict_delete: DeleteArmConfig = DeleteArmConfig()
    conflict_bucket: BucketArmConfig = BucketArmConfig()
    dynamic_resample: ResampleArmConfig = ResampleArmConfig()
    progressive_epochs: ProgressiveArmConfig = ProgressiveArmConfig()

    @field_validator("arms")
    @classmethod
    def _known(cls, v):
        if v is None:
            return v
        from ilp_ray.mitigate.arms import ARMS

        for name in v:
            try:
                ARMS.get(name)
            except KeyError as e:  # its message suggests the closest name
                raise ValueError(str(e).strip("'\"")) from None
        if len(set(v)) != len(v):
            raise ValueError(f"arms {v} name an arm twice")
        return v

    def section(self, arm: str):
        return getattr(self, arm, None)
