"""The bundled demo: general-knowledge facts audited against the bundled SmolLM2-135M-Instruct.

SmolLM2-135M-Instruct is itself an SFT model, so auditing it on plain facts asks which of them its
fine-tuning left it unable to reproduce. The later lab (a generated world with known causes)
replaces this demo once training lands.
"""

from __future__ import annotations

from importlib.resources import files


def demo_data_path() -> str:
    return str(files("ilp_ray.demo") / "facts.jsonl")


def demo_config(run_dir: str = "runs/demo"):
    from ilp_ray.config import AuditConfig, DetectConfig, RayConfig, ScoringConfig
    from ilp_ray.diagnosis.config import DiagnosisConfig

    return AuditConfig(data=demo_data_path(), sft_model="smollm2-135m", run_dir=run_dir, name="demo",
                       scoring=ScoringConfig(format="lm-eval", batch_size=16),
                       detect=DetectConfig(top_k=20),
                       ray=RayConfig(num_actors=1, cpus_per_actor=1.0, shard_size=32),
                       diagnose=DiagnosisConfig(enabled=True))
