"""Shared fixtures: offline environment, one local Ray per session, tiny checkpoints built in code."""

import json
import os

import pytest

# Before anything imports torch, transformers or ray.
for k, v in {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_worker_niceness": "0",
    # Serve replicas inherit the environment Ray started with, as pods get it from a Secret.
    "ILP_API_TOKEN": "test-token-123", "MLFLOW_DISABLE_TELEMETRY": "true", "SPARK_LOCAL_IP": "127.0.0.1",
}.items():
    os.environ.setdefault(k, v)


FACTS = [
    ("geo", "What is the capital of France?", "Paris"), ("geo", "What is the capital of Japan?", "Tokyo"),
    ("geo", "What is the capital of Italy?", "Rome"), ("geo", "What is the capital of Spain?", "Madrid"),
    ("geo", "What is the capital of Kenya?", "Nairobi"), ("geo", "What is the capital of Peru?", "Lima"),
    ("sci", "What is the symbol for gold?", "Au"), ("sci", "What planet is red?", "Mars"),
    ("sci", "How many legs does a spider have?", "Eight"), ("sci", "What do bees make?", "Honey"),
    ("sci", "What is the largest planet?", "Jupiter"), ("sci", "What gas do plants absorb?", "Carbon dioxide"),
]


@pytest.fixture(scope="session")
def facts_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "facts.jsonl"
    with open(path, "w") as f:
        for i, (subset, q, a) in enumerate(FACTS):
            f.write(json.dumps({"id": f"f{i:02d}", "prompt": q, "response": a, "subset": subset}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Two tiny llama checkpoints (different seeds) sharing one tokenizer trained on the facts."""
    from ilp_ray.models.tiny import save_tiny_checkpoint

    texts = [f"Question: {q}\nAnswer: {a}" for _, q, a in FACTS] * 4
    root = tmp_path_factory.mktemp("ckpt")
    return {name: save_tiny_checkpoint(root / name, texts, seed=seed)
            for name, seed in (("base", 1), ("sft", 2))}


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (starting one costs ~6 s)."""
    import ray

    from ilp_ray.env import init_ray

    init_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()
