"""Serve's vLLM replicas (`engine: vllm`) on this CPU, over real HTTP: the transformers replicas'
own tests (tests/serve/test_serve.py, imported below and run against this module's `service`),
the scores against the in-process transformers engine, and the LRU's eviction freeing an LLM."""

import time

import numpy as np
import pytest

from tests.helpers import free_port, wait_http

# The transformers replicas' tests, run here against a vLLM service: pytest collects the imported
# functions, and their fixtures resolve here: `service` to this module's, `tiny_checkpoints` to
# tests/vllm/conftest.py's.
from tests.serve.test_serve import (  # noqa: F401
    ITEMS,
    call,
    served_and_in_process,
    test_32_concurrent_clients,
    test_a_corrupt_checkpoint_is_500_without_a_trace_not_retry,
    test_auth,
    test_bad_json_and_fields_without_traces,
    test_checkpoints_listing,
    test_infinite_temperature_and_duplicate_ids_are_422,
    test_limits_name_the_limit,
    test_path_traversal_is_refused,
    test_request_bounds_are_422_not_503,
)

# Not imported: tests/serve's test_replica_killed_mid_load_recovers. Replacing a killed replica is
# Serve's, the same for either engine, and tests/serve runs it; here it cost 40 s of the suite's
# 20-minute budget.

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(ray_session, tiny_checkpoints, tmp_path_factory):
    from ray import serve

    from ilp_ray.serve.app import build_app

    root = tiny_checkpoints["sft"].parent
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"engine": "vllm", "checkpoint_roots": [str(root)], "allow_bundled": False, "batch_size": 4,
                     "max_models_per_replica": 2, "vllm_args": {"enforce_eager": True},
                     "limits": {"max_items": 8, "max_n": 50, "max_item_chars": 400, "max_body_bytes": 65536,
                                "max_concurrent_audits": 1},
                     "audit_root": str(tmp_path_factory.mktemp("serve-audits")),
                     "data_roots": [str(tmp_path_factory.mktemp("serve-data"))]})
    serve.run(app, name="ilp", route_prefix="/", blocking=False)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", timeout=300)
    yield {"url": base, "root": root}
    cores = _engine_cores(_scorer_pid())
    serve.shutdown()
    # No engine core outlives the replica's stop, re-parented with its model (Scorer.__del__ frees
    # the loaded checkpoints; Ray also reaps a gracefully stopped worker's children, so this check
    # passed on a one-test run without the destructor too: it guards, it did not find the leak).
    deadline = time.time() + 60
    while left := [p for p in cores if _alive(p)]:
        assert time.time() < deadline, (cores, left, _process_listing())
        time.sleep(0.5)


def test_vllm_replica_scores_as_the_transformers_engine(service, tiny_checkpoints):
    for got, exp in served_and_in_process(service, tiny_checkpoints["sft"]):
        np.testing.assert_allclose(got["loglikelihoods"], exp["loglikelihoods"], atol=1e-3)
        assert got["pred"] == exp["pred"] and got["correct"] == exp["correct"]


def _alive(pid: int) -> bool:
    """The process runs (a zombie has exited; it only waits for its parent to reap it)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _engine_cores(replica_pid: int) -> list[int]:
    """PIDs of the vLLM engine-core processes of a replica: one per loaded LLM. They are found by
    what they are, the replica's own child processes (all but multiprocessing's resource tracker),
    not by the title vLLM gives them, so a title that did not take cannot hide them."""
    import psutil

    kids = psutil.Process(replica_pid).children(recursive=False)
    return sorted(p.pid for p in kids if _alive(p.pid) and "resource_tracker" not in " ".join(p.cmdline()))


def _scorer_pid() -> int:
    """The scorer replica's PID, by the process title Ray gives it (no dashboard for the state API)."""
    import psutil

    pids = [p.pid for p in psutil.process_iter(["cmdline"])
            if "ServeReplica:ilp:Scorer" in " ".join(p.info["cmdline"] or [])]
    assert len(pids) == 1, pids
    return pids[0]


def _process_listing() -> list[str]:
    """'pid<ppid title' of every Ray worker and every process under one: what a failure reports
    (titles with their padding squeezed out, so that pytest's repr does not cut them away)."""
    import psutil

    procs = {p.pid: p for p in psutil.process_iter(["pid", "ppid", "name", "cmdline"])}
    ray_pids = {pid for pid, p in procs.items() if "ray::" in " ".join(p.info["cmdline"] or [])}
    def under_ray(pid: int, depth: int = 3) -> bool:
        return pid in ray_pids or (depth > 0 and pid in procs and under_ray(procs[pid].info["ppid"], depth - 1))

    out = []
    for pid, p in sorted(procs.items()):
        if under_ray(pid):
            title = " ".join((p.info["name"] + " " + " ".join(p.info["cmdline"] or [])).split())
            out.append(f"{pid}<{p.info['ppid']} {title[:70]}")
    return out


def test_each_checkpoint_its_own_llm_and_the_lru_frees_the_evicted_one(service):
    """max_models_per_replica=2: a third checkpoint evicts the least recently used one, and that
    LLM's engine-core process (its weights and KV cache) is gone, not waiting for the collector."""

    url = service["url"]
    # Both loaded (one may be loaded already by an earlier test). Should Serve have replaced the
    # replica meanwhile, the loads are asked again until one replica holds both, and a failure
    # says which processes there were.
    deadline = time.time() + 240
    while True:
        for ckpt in ("sft", "base"):
            assert call(url, "/v1/score", {"checkpoint": ckpt, "items": ITEMS[:1]})[0] == 200
        pid = _scorer_pid()
        if len(before := _engine_cores(pid)) == 2:
            break
        assert time.time() < deadline, (pid, before, _process_listing())
        time.sleep(1.0)
    status, sft = call(url, "/v1/score", {"checkpoint": "sft", "items": ITEMS})  # sft most recent: base goes
    assert status == 200
    assert call(url, "/v1/score", {"checkpoint": "third", "items": ITEMS[:1]})[0] == 200
    deadline = time.time() + 60
    while len(after := _engine_cores(pid)) != 2 or set(after) >= set(before):
        assert time.time() < deadline, (before, after, _process_listing())
        time.sleep(0.5)
    gone = set(before) - set(after)
    assert len(gone) == 1 and not any(_alive(p) for p in gone)
    # The kept checkpoint was not reloaded, and scores as before (reloading an evicted one is
    # tests/serve's LRU test, with the transformers engine).
    assert call(url, "/v1/score", {"checkpoint": "sft", "items": ITEMS})[1]["items"] == sft["items"]
    assert _engine_cores(pid) == after

