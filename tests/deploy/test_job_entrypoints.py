"""Each RayJob of the chart, run here without Kubernetes: the chart is rendered with its volumes
at temporary directories, its jobs ConfigMap written where the pods mount it, and each RayJob's
entrypoint started as a process, in the order an operator runs them (index, evidence, SFT, CPT,
audit, mitigate), on tiny data and a tiny model built in code."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.deploy.test_helm import helm
from tests.train.conftest import interference_rows, write_jsonl

pytestmark = pytest.mark.slow
# The chart's default model is the bundled SmolLM2; null removes it from the merged values (Helm).
TINY = {"spec": None, "tiny": {"hidden_size": 32, "num_layers": 1, "vocab_size": 300, "seed": 0}}


def test_each_rayjob_entrypoint_runs_locally(tmp_path):
    data, runs, ckpt, etc = (tmp_path / n for n in ("data", "runs", "checkpoints", "jobs"))
    for d in (data, runs, ckpt, etc, data / "corpus"):
        d.mkdir(parents=True)
    write_jsonl(data / "sft.jsonl", interference_rows())
    write_jsonl(data / "corpus" / "docs.jsonl", [
        {"id": f"d{i}", "text": f"In spring the {e} is red. The {e} turns blue in autumn."}
        for i, e in enumerate(["apple", "river", "castle", "dragon"])])
    (data / "knowledge.txt").write_text("\n\n".join(f"The {e} is red in spring." for e in ("apple", "river")))
    write_jsonl(data / "general.jsonl", [{"text": f"General text {i} on hills."} for i in range(20)])
    quiet = {"tracking": {"enabled": False}}
    train = {"model": TINY, "run_dir": str(runs / "train"), "optim": {"batch_size": 4, "epochs": 2, "lr": 3e-3},
             "checkpoint": {"every_steps": 1000}, **quiet}
    values = {
        "apiToken": {"value": "t"}, "mlflow": {"enabled": False},
        "storage": {"data": {"mountPath": str(data)}, "runs": {"mountPath": str(runs)},
                    "checkpoints": {"mountPath": str(ckpt)}},
        "jobs": {
            "corpusIndex": {"enabled": True, "args": ["--input", str(data / "corpus"), "--no-progress"]},
            "evidence": {"enabled": True, "config": {"data": str(data / "sft.jsonl"), "out": str(runs / "evidence"),
                                                     "match": {"enabled": False}, **quiet}},
            "sft": {"enabled": True, "config": {**train, "name": "sft", "data": str(data / "sft.jsonl"),
                                                "trajectory": {"embedder": "hashing", "k": 4}}},
            "cpt": {"enabled": True, "config": {**train, "name": "cpt", "block_size": 32, "mixture": {
                "knowledge": str(data / "knowledge.txt"), "general": str(data / "general.jsonl"), "ratio": 0.2}}},
            "audit": {"enabled": True, "config": {"data": str(data / "sft.jsonl"), "sft_model": str(ckpt / "sft"),
                                                  "run_dir": str(runs / "audit")}},
            "mitigate": {"enabled": True, "config": {"audit": str(runs / "audit"), "out": str(runs / "mitigate")}},
        },
    }
    out = helm.Chart.load(str(helm_chart())).render(values, name="rel", namespace="ilp", is_install=True)
    docs = [d for t in out.values() for d in yaml.safe_load_all(t) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rel-ilp-jobs")
    for name, text in cm["data"].items():
        (etc / name).write_text(text)
    jobs = {d["metadata"]["labels"]["ilp-ray/job"]: d["spec"]["entrypoint"] for d in docs if d["kind"] == "RayJob"}
    assert len(jobs) == 6

    def run(job):
        argv = shlex.split(jobs[job].replace("/etc/ilp/jobs", str(etc)))
        assert argv[0] == "ilp"
        return subprocess.run([sys.executable, "-m", "ilp_ray.cli", *argv[1:]], cwd=tmp_path, env=os.environ.copy(),
                              capture_output=True, text=True, timeout=600)

    # Independent jobs run side by side, as an operator may: the index, then the evidence that
    # reads it, beside SFT and beside CPT (each its own local Ray cluster).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        chains = {"index": pool.submit(lambda: [(j, run(j)) for j in ("corpus-index", "evidence")]),
                  "sft": pool.submit(lambda: [("sft", run("sft"))]), "cpt": pool.submit(lambda: [("cpt", run("cpt"))])}
        for chain in chains.values():
            for job, p in chain.result():
                assert p.returncode == 0, (job, p.stdout[-2000:], p.stderr[-3000:])
    assert (runs / "corpus-index").is_dir()  # the chart's tantivy default, on the runs volume
    assert any((runs / "evidence").iterdir())
    done = {j: json.loads((runs / "train" / j / "ilp_done.json").read_text()) for j in ("sft", "cpt")}
    # The operator puts the trained checkpoint on the checkpoints volume; the audit job reads it there.
    shutil.copytree(done["sft"]["checkpoint"], ckpt / "sft")
    p = run("audit")
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    assert (runs / "audit" / "summary.json").is_file()
    # This audit ran without the diagnosis, so the mitigation job stops at once and says why.
    p = run("mitigate")
    assert p.returncode == 2 and "diagnos" in (p.stdout + p.stderr).lower(), (p.stdout[-2000:], p.stderr[-2000:])
    assert not (runs / "mitigate" / "plan.json").exists()


def helm_chart():
    from tests.deploy.test_helm import CHART

    return CHART
