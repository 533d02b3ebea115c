"""Serve scoring endpoint: throughput and latency at concurrency 1, 8, 32, and the HTTP overhead
against in-process scoring of the same items at batch 16, measured side by side in one run.

    .venv/bin/python bench/serve.py [--model smollm2-135m] [--requests 48]
    .venv-vllm/bin/python bench/serve.py --engine vllm   # transformers replicas, then vLLM replicas

The overhead rounds alternate an in-process call and an HTTP call on the same 16 items, each with
one torch thread, so machine noise hits both alike. The last line is one JSON object.
"""

import argparse
import concurrent.futures as cf
import json
import os
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for k, v in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
             "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0", "TOKENIZERS_PARALLELISM": "false",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
    os.environ.setdefault(k, v)

WORDS = ["river", "mountain", "capital", "engine", "protein", "market", "theory", "violin", "harbor", "planet", "museum", "treaty", "glacier", "algorithm", "festival", "pigment", "orbit", "canyon", "senate", "lantern"]


def make_items(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    items = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))) + "?"
        opts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(4)]
        items.append({"id": f"q{i}", "question": q, "options": opts, "answer": rng.randrange(4)})
    return items


def post(url: str, body: dict) -> float:
    t = time.perf_counter()
    req = urllib.request.Request(url + "/v1/score", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
    return time.perf_counter() - t


def measure(url: str, model: str, engine_name: str, args) -> dict:
    """The HTTP overhead against in-process scoring with the same engine, then the concurrency levels."""
    from ilp_ray.config import ScoringConfig
    from ilp_ray.detect import item_results
    from ilp_ray.records import McItem
    from ilp_ray.scoring.engines import make_engine

    batch16 = make_items(16, seed=1)
    body16 = {"checkpoint": model, "items": batch16}
    post(url, body16)  # loads the model in the replica
    scoring = ScoringConfig(engine=engine_name, batch_size=16)
    engine = make_engine(scoring, model)
    mc = [McItem(id=i["id"], question=i["question"], options=tuple(i["options"]), answer=i["answer"]) for i in batch16]
    item_results(mc, engine.score(mc), scoring)  # warm-up
    inproc, http = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        item_results(mc, engine.score(mc), scoring)
        inproc.append(time.perf_counter() - t)
        http.append(post(url, body16))
    engine.close()  # free an in-process vLLM before the load test
    del engine
    overhead = statistics.median(http) / statistics.median(inproc) - 1
    print(f"[{engine_name}] batch 16: in-process {statistics.median(inproc) * 1e3:.0f} ms, "
          f"HTTP {statistics.median(http) * 1e3:.0f} ms (median of {args.rounds}); overhead {overhead:+.1%}")
    levels = {}
    for conc in (1, 8, 32):
        bodies = [{"checkpoint": model, "items": make_items(args.items_per_request, seed=100 + i)}
                  for i in range(args.requests)]
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(conc) as pool:
            lat = sorted(pool.map(lambda b: post(url, b), bodies))
        wall = time.perf_counter() - t
        levels[conc] = {"requests_per_s": round(len(bodies) / wall, 3),
                        "items_per_s": round(len(bodies) * args.items_per_request / wall, 2),
                        "p50_ms": round(lat[len(lat) // 2] * 1e3, 1),
                        "p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1e3, 1)}
        print(f"[{engine_name}] concurrency {conc:>2}: {levels[conc]}")
    return {"http_overhead": round(overhead, 4), "inproc_ms_batch16": round(statistics.median(inproc) * 1e3, 1),
            "http_ms_batch16": round(statistics.median(http) * 1e3, 1), "concurrency": levels}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--engine", choices=["transformers", "vllm"], default="transformers",
                    help="vllm: measure the transformers replicas and then the vLLM replicas in one run "
                         "(run with .venv-vllm/bin/python)")
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    ap.add_argument("--items-per-request", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=6, help="alternating overhead rounds")
    args = ap.parse_args()

    import ray
    import torch
    from ray import serve

    from ilp_ray.serve.app import build_app

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    engines = ["transformers"] + (["vllm"] if args.engine == "vllm" else [])
    out = {"model": args.model}
    for name in engines:  # one app at a time, so the two never share the cores
        serve.run(build_app({"auth": "disabled", "batch_size": 16, "threads": 1, "engine": name,
                             "scorer": {"num_replicas": 1, "max_ongoing_requests": 64}}),
                  name="ilp", route_prefix="/", blocking=False)
        out[name] = measure(url, args.model, name, args)
        serve.delete("ilp")
    serve.shutdown()
    ray.shutdown()
    if args.engine == "vllm":
        out["vllm_over_transformers_items_per_s"] = {
            c: round(out["vllm"]["concurrency"][c]["items_per_s"] / out["transformers"]["concurrency"][c]["items_per_s"], 3)
            for c in out["vllm"]["concurrency"]}
    else:  # the single-engine figures at the top level, as before
        out.update(out.pop("transformers"))
    print(json.dumps(out))

if __name__ == "__main__":
    main()
