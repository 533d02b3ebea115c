"""Training configs (SFT and CPT): pydantic sections loaded with ``ilp_ray.config.load_config``.

Shared sections (model, optimiser, engine, scaling, checkpointing) are used by both jobs; the
SFT job adds data order and trajectories, the CPT job its corpus mixture. Defaults follow the
paper where it gives one (the CPT mix 0.2 knowledge / 0.8 general) and otherwise a setting that
trains on a 2-core CPU machine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ilp_ray.config_base import DATA_FORMAT_HELP, DataFormat, TrackingConfig, _Section


class TinyModelConfig(_Section):
    """A Llama built in code, with a byte-level BPE tokenizer trained on the training texts."""

    hidden_size: int = Field(64, ge=8, description="Width of the residual stream.")
    num_layers: int = Field(2, ge=1, description="Decoder layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads (must divide hidden_size).")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention when < num_heads).")
    vocab_size: int = Field(512, ge=260, description="Tokenizer vocabulary: 256 bytes + 3 specials + merges.")
    max_position_embeddings: int = Field(512, ge=16, description="Context length of the model.")
    seed: int = Field(0, description="Initialisation seed of the weights.")

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        return self


class ModelConfig(_Section):
    spec: str | None = Field(None, description=(
        "Start from a HF checkpoint directory or a bundled model name (smollm2-135m)."))
    tiny: TinyModelConfig | None = Field(None, description="Start from a tiny Llama built in code instead.")

    @model_validator(mode="after")
    def _one(self):
        if (self.spec is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'spec' (a checkpoint dir or bundled name) or 'tiny'")
        return self


class OptimConfig(_Section):
    lr: float = Field(1e-4, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up from 0 to lr over these steps.")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description=(
        "Decay after warm-up, to 0 at the last step; 'constant' keeps lr."))
    fused: bool = Field(True, description=(
        "torch's fused AdamW kernel (CPU and CUDA): the same update, ~10% faster steps on small models."))
    grad_clip: float | None = Field(1.0, gt=0, description="Global gradient-norm clip; None turns it off.")
    batch_size: int = Field(8, ge=1, description="Examples per worker per step (global batch: × num_workers).")
    epochs: int = Field(1, ge=1, description="Passes over the data.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps even mid-epoch.")
    seed: int = Field(0, description="Seed of torch's RNG on every worker.")


class EngineConfig(_Section):
    strategy: Literal["deepspeed", "ddp"] = Field("deepspeed", description=(
        "DeepSpeed ZeRO (the engine), or plain torch DDP for comparison; never a silent fallback."))
    zero_stage: int | None = Field(None, ge=0, le=3, description=(
        "DeepSpeed ZeRO stage; None: 1 on CPU, 2 on GPU."))
    precision: Literal["fp32", "bf16", "fp16"] | None = Field(None, description=(
        "Training precision; None: fp32 on CPU (no fast bf16 kernels there), bf16 on GPU."))


class ScalingSection(_Section):
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker; also picks the GPU engine defaults.")
    cpus_per_worker: float = Field(1.0, gt=0, description=(
        "CPUs reserved per worker; leave one free on small machines for the driver and Ray."))
    resources_per_worker: dict[str, float] | None = Field(None, description=(
        "Extra Ray resources per worker (overrides cpus_per_worker's CPU entry when it names CPU)."))
    threads_per_worker: int = Field(1, ge=1, description="torch threads per worker (2 collapse under contention).")
    address: str | None = Field(None, description="Ray address; None starts or joins a local Ray.")
    max_failures: int = Field(0, ge=-1, description=(
        "Worker-group failures Ray Train recovers from inside the run (a worker killed, a node "
        "lost): it restarts the workers from the latest checkpoint, up to this many times (-1: no "
        "limit). 0, Ray's default: the run fails, and rerunning the same command resumes it at the "
        "same checkpoint."))


class CheckpointSection(_Section):
    every_steps: int = Field(50, ge=1, description="Checkpoint every N steps (and always at the end).")
    keep: int | None = Field(None, ge=1, description="Checkpoints kept in Ray's run storage; None keeps all.")


class TrajectoryConfig(_Section):
    enabled: bool = Field(True, description="Record per-sample learning trajectories.")
    every_steps: int | None = Field(None, ge=1, description=(
        "Evaluate every N steps; epoch ends (and subset boundaries in sequential order) always. "
        "None: the automatic schedule, at least min_evals_per_subset evaluations spread over each "
        "subset's steps (sequential order) or over each epoch (shuffled, one subset)."))
    min_evals_per_subset: int = Field(4, ge=1, description=(
        "For every_steps None: evaluations per subset per epoch in sequential order (per epoch "
        "otherwise), its last step included; a subset shorter than this is evaluated at every "
        "step. 4: cause IV needs a sample held at forgetting.held_evals (2) consecutive "
        "evaluations at or after its training step and lost at a later one, inside its own subset "
        "or after it; 4 leaves one more for the learning itself. Boundaries and epoch ends alone "
        "(1) give a one-epoch, two-subset run 2 evaluations: IV can never fire there."))
    max_items: int = Field(256, ge=1, description=(
        "Evaluate at most this many MC items (a seeded sample) to bound the cost of one evaluation."))
    k: int = Field(4, ge=2, description="Options per MC item.")
    calibration: Literal["prior", "none"] = Field("prior", description=(
        "'prior': p(correct) of the items MC conversion built with each option's question-free "
        "log-likelihood subtracted, as the audit's scoring.calibration 'auto' scores them, so a "
        "trajectory's last point and the audit agree (ready-made items stay plain); 'none': plain "
        "summed log-likelihoods for every item."))
    seed: int = Field(0, description="Seed of the MC answer positions and of the item sample.")
    embedder: Literal["minilm", "hashing"] = Field("minilm", description=(
        "Distractor search: MiniLM (as the audit), or a hashing bag-of-words for fast dry runs."))
    batch_size: int = Field(16, ge=1, description="MC items per scoring batch.")


class SftSection(_Section):
    format: Literal["auto", "chat", "plain"] = Field("auto", description=(
        "'chat': the tokenizer's chat template (user = prompt, assistant = response), scored by "
        "the audit's 'chat' format; 'plain': 'prompt\\nresponse<eos>'; 'auto': chat when the "
        "tokenizer has a template."))
    max_length: int = Field(512, ge=8, description=(
        "Tokens per example; longer prompts are left-truncated (counted), responses never are."))


class OrderConfig(_Section):
    sampler: str = Field("shuffled", description=(
        "Data-order sampler from the registry: 'shuffled' (global, reshuffled per epoch), "
        "'sequential' (subsets one after another: the left-side forgetting setting), or a custom one."))
    subset_order: list[str] | None = Field(None, description=(
        "Sequential order of subsets; None: the order in which subsets first appear in the file."))
    seed: int = Field(0, description="Seed of the shuffles.")
    options: dict = Field(default_factory=dict, description="Keyword arguments for a custom sampler.")


class _TrainBase(_Section):
    run_dir: str = Field("runs/train", description="Ray Train storage path; the run lives in run_dir/name.")
    name: str = Field("train", description="Run name: Ray Train's run folder and the MLflow run name.")
    model: ModelConfig = Field(..., description="Where the weights come from.")
    optim: OptimConfig = OptimConfig()
    engine: EngineConfig = EngineConfig()
    scaling: ScalingSection = ScalingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    tracking: TrackingConfig = TrackingConfig(experiment="ilp-train")
    log_every: int = Field(1, ge=1, description="Log loss, lr and tokens/s every N steps.")
    timing_skip_steps: int = Field(3, ge=0, description=(
        "Steps excluded from the steady-state tokens/s figure (warm-up, allocator growth)."))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip() or "/" in v:
            raise ValueError(f"must be a non-empty folder name, got {v!r}")
        return v


class SftTrainConfig(_TrainBase):
    data: str = Field(..., description=(
        "SFT dataset (JSONL, Parquet, CSV, a saved HF dataset or Parquet shards), read with "
        "ilp_ray.data.load_sft: the same file the audit reads."))
    data_format: DataFormat = Field("auto", description=DATA_FORMAT_HELP)
    data_exclude: list[str] = Field(default_factory=list, description=(
        "Sample ids left out of training (a mitigation's deletions); an id not in the data is an error."))
    sft: SftSection = SftSection()
    order: OrderConfig = OrderConfig()
    trajectory: TrajectoryConfig = TrajectoryConfig()


class MixtureConfig(_Section):
    knowledge: str = Field(..., description="Knowledge corpus D_k (JSONL with 'text', Parquet with 'text', or .txt).")
    general: str | None = Field(None, description="General corpus D_general; None trains on D_k alone.")
    ratio: float = Field(0.2, gt=0, le=1, description="λ: share of documents drawn from D_k (paper: 0.2).")
    documents: int | None = Field(None, ge=1, description=(
        "Documents drawn per epoch; None: enough for each D_k document once on average (|D_k| / λ)."))
    seed: int = Field(0, description="Seed of the mixture draws (re-drawn per epoch from (seed, epoch)).")

    @model_validator(mode="after")
    def _ratio(self):
        if self.general is None and self.ratio != 1.0:
            # Without a general corpus every draw is D_k; a ratio < 1 would silently mean nothing.
            raise ValueError(f"ratio {self.ratio} needs a 'general' corpus (or set ratio: 1.0)")
        return self


class CptTrainConfig(_TrainBase):
    mixture: MixtureConfig = Field(..., description="The corpora and their mixture.")
    block_size: int = Field(256, ge=8, description="Tokens per packed training block.")
