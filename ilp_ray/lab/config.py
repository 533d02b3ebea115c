"""``LabConfig``: one lab run, from world to metrics (pydantic only).

Every stage's settings are the project's own config sections, so a lab run is an ordinary
pretraining, SFT and audit run that happens to know the truth. ``--set`` reaches any field, e.g.
``--set sft.lr=5e-4`` or ``--set diagnose.conflict.theta=0.9``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ilp_ray.config_base import _Section
from ilp_ray.diagnosis.config import DiagnosisConfig
from ilp_ray.train.config import TinyModelConfig

#: SFT examples per step by world size, where ``sft.batch_size`` is not set.
SFT_BATCH = {"small": 3, "default": 8}


class PretrainSection(_Section):
    """Pretraining the tiny base model from scratch on the world's corpus (``--base tiny``)."""

    model: TinyModelConfig = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                                             vocab_size=1024, max_position_embeddings=256)
    epochs: int = Field(150, ge=1, description="Passes over the corpus (a tiny model memorises by repetition).")
    lr: float = Field(4e-3, gt=0, description="Peak learning rate (cosine decay after warm-up).")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps.")
    batch_size: int = Field(16, ge=1, description="Packed blocks per step.")
    block_size: int = Field(64, ge=8, description="Tokens per packed block.")
    strategy: Literal["deepspeed", "ddp"] = Field("deepspeed", description="Ray Train engine of the pretraining run.")


class SftSection(_Section):
    """The sequential SFT of the base model on the world's SFT data (subsets s1 → s2 → s3)."""

    lr: float = Field(5e-4, gt=0, description="Learning rate (constant after warm-up).")
    warmup_steps: int = Field(4, ge=0, description="Linear warm-up steps.")
    batch_size: int | None = Field(None, ge=1, description=(
        "Examples per step. None: the size's, 8 at 'default' and 3 at 'small'. The small world has a "
        "third of the samples; at 8 its subsets are 3-8 steps long, too short to learn the IV facts "
        "and then lose them (IV recall 0 on one seed in five; at 4, on one seed in ten)."))
    epochs: int = Field(1, ge=1, description="Passes over the whole sequence of subsets.")
    eval_every: int = Field(4, ge=1, description="Trajectory evaluation every N steps (and at subset ends).")


class Smollm2Section(_Section):
    """``--base smollm2``: the bundled SmolLM2-135M is the base (no pretraining; see ilp_ray.lab.real)."""

    model: str = Field("smollm2-135m", description="The base: a bundled name or a HF checkpoint directory.")
    known_p: float = Field(0.5, gt=0, le=1, description=(
        "A real fact is known to the base (a control or II candidate) at p(true value) >= this."))
    unknown_p: float = Field(0.3, gt=0, le=1, description=(
        "A real motto is unknown to the base (a V candidate) below this p, with a variant preferred."))
    sft: SftSection = Field(SftSection(lr=1e-4, warmup_steps=2, eval_every=2, batch_size=8), description=(
        "The sequential SFT of the pretrained 135M model: a far lower lr than the tiny model's, and "
        "a trajectory point every 2 steps (a subset is only 5-8 steps long)."))


#: The CPT arms' settings by base where they differ from the mitigation loop's defaults.
_BASE_CPT: dict[str, dict[str, float]] = {"tiny": {"epochs": 100, "lr": 1e-3}}


class EpochsVsCptSection(_Section):
    """The paper's Table 4 on the category I facts (``ilp lab experiment mitigations``, and
    ``epochs-vs-cpt`` alone), and the settings of the lab's CPT arms."""

    long_epochs: int = Field(10, ge=1, description="SFT epochs of the 'more epochs' arm (paper: 10).")
    cpt_ratio: float = Field(0.2, gt=0, le=1, description="λ: share of knowledge documents in the CPT mix (paper: 0.2).")
    cpt_epochs: int | None = Field(None, ge=1, description=(
        "CPT passes over the mix (each pass draws |knowledge| / λ documents). None: the base's own "
        "setting (``cpt_settings``): 100 for the tiny base, which learnt its facts from ~10 mentions "
        "× 150 epochs, so a handful of passes would teach it nothing; the mitigation loop's default "
        "(1) for smollm2, whose pretraining the lab did not run and has no such figure."))
    cpt_lr: float | None = Field(None, gt=0, description=(
        "CPT peak learning rate (cosine decay). None: 1e-3 for the tiny base (its pretraining used "
        "4e-3); the mitigation loop's default (the SFT run's lr) for smollm2."))

    def cpt_settings(self, base: str) -> dict[str, float]:
        """The CPT arms' ``epochs`` and ``lr`` for ``base``: what is set here, else the base's
        default (above); an absent key leaves the mitigation loop's default."""
        set_here = {k: v for k, v in (("epochs", self.cpt_epochs), ("lr", self.cpt_lr)) if v is not None}
        return {**_BASE_CPT.get(base, {}), **set_here}


class LabConfig(_Section):
    seed: int = Field(0, description="World seed: the same seed gives the same world, corpus and SFT data.")
    size: Literal["small", "default"] = Field("default", description=(
        "World size: 'small' (CI: ≤ 2 min), 'default' (the demo: ≤ 10 min on 2 cores)."))
    world: dict[str, int] = Field(default_factory=dict, description=(
        "Overrides of the size's LabSize fields, e.g. {forget_repeats: 4} (see ilp_ray.lab.world)."))
    base: Literal["tiny", "smollm2"] = Field("tiny", description=(
        "'tiny': a Llama pretrained from scratch on the world's corpus; 'smollm2': the bundled "
        "SmolLM2-135M, with real-world facts altered for II (a benchmark, CPU-heavy)."))
    out: str = Field("runs/lab", description="Output folder: world/, pretrain/, sft/, audit/, metrics.json, mlflow.db.")
    seed_model: int = Field(0, description="Seed of the weights' initialisation and the data order.")
    pretrain: PretrainSection = PretrainSection()
    sft: SftSection = SftSection()
    diagnose: DiagnosisConfig = Field(DiagnosisConfig(enabled=True, preset="lab"), description=(
        "The diagnosis, as in an audit, under preset lab (ilp_ray/presets.py); the lab fills in "
        "data and trajectory."))
    smollm2: Smollm2Section = Smollm2Section()
    experiment: str = Field("ilp-lab", description="MLflow experiment of every stage of the lab.")
    threads: int = Field(2, ge=1, description=(
        "torch threads of the pretraining and SFT worker. The lab runs one stage at a time and owns "
        "the machine, so 2 (every core here); set 1 when other work shares it."))
    experiment_epochs_vs_cpt: EpochsVsCptSection = EpochsVsCptSection()

    @model_validator(mode="before")
    @classmethod
    def _lab_preset(cls, data):
        # A partial diagnose section (--set diagnose.conflict.theta=0.9) keeps the lab's preset.
        if isinstance(data, dict) and isinstance(data.get("diagnose"), dict) and "preset" not in data["diagnose"]:
            data = {**data, "diagnose": {"enabled": True, **data["diagnose"], "preset": "lab"}}
        return data

    def sft_settings(self) -> SftSection:
        """The SFT section of this run's base, with the batch size resolved for the size."""
        s = self.smollm2.sft if self.base == "smollm2" else self.sft
        return s if s.batch_size else s.model_copy(update={"batch_size": SFT_BATCH[self.size]})

    @field_validator("world")
    @classmethod
    def _world_fields(cls, v: dict[str, int]) -> dict[str, int]:
        import dataclasses

        from ilp_ray.lab.world import LabSize

        known = [f.name for f in dataclasses.fields(LabSize)]
        for k, n in v.items():
            if k not in known:
                raise ValueError(f"unknown world field {k!r}; known: {', '.join(known)}")
            if n < (1 if k.endswith(("repeats", "mentions")) or k == "entities" else 0):
                raise ValueError(f"world.{k} must be positive, got {n}")
        return v
