"""The Serve scoring service on 127.0.0.1, over real HTTP, with tiny checkpoints built in code."""

import concurrent.futures as cf
import json
import re
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.helpers import free_port, wait_http

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def service(ray_session, tiny_checkpoints, tmp_path_factory):
    from ray import serve

    from ilp_ray.serve.app import build_app

    root = tiny_checkpoints["sft"].parent  # ids: "sft", "base"
    data_root = tmp_path_factory.mktemp("serve-data")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"checkpoint_roots": [str(root)], "allow_bundled": False, "batch_size": 4,
                     "limits": {"max_items": 8, "max_n": 50, "max_item_chars": 400, "max_body_bytes": 65536,
                                "max_concurrent_audits": 1},
                     "audit_root": str(tmp_path_factory.mktemp("serve-audits")),
                     "data_roots": [str(data_root)],
                     "audit_defaults": {"ray": {"cpus_per_actor": 0.5, "shard_size": 6}}})
    serve.run(app, name="ilp", route_prefix="/", blocking=False)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    yield {"url": base, "root": root, "data_root": data_root}
    serve.shutdown()


def call(url, path, body=None, token=TOKEN, raw=None, method=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


ITEMS = [
    {"id": "a", "question": "What is the capital of France?", "options": ["Paris", "Rome", "Lima"], "answer": 0},
    {"id": "b", "question": "What do bees make?", "options": ["Honey", "Eight", "Mars", "Au"], "answer": 0},
    {"id": 3, "question": "What planet is red?", "options": ["Jupiter", "Mars"], "answer": 1},
]


def served_and_in_process(service, checkpoint) -> list[tuple[dict, dict]]:
    """ITEMS scored by the service's "sft" and by the transformers engine in this process, paired."""
    from ilp_ray.config import ScoringConfig
    from ilp_ray.detect import item_results
    from ilp_ray.records import McItem
    from ilp_ray.scoring.engines import make_engine

    status, out = call(service["url"], "/v1/score", {"checkpoint": "sft", "items": ITEMS, "n": 7, "seed": 3})
    assert status == 200, out
    items = [McItem(id=str(i["id"]), question=i["question"], options=tuple(i["options"]), answer=i["answer"])
             for i in ITEMS]
    scoring = ScoringConfig(batch_size=2)
    want = item_results(items, make_engine(scoring, str(checkpoint)).score(items), scoring, n=7, seed=3)
    assert [r["id"] for r in out["items"]] == ["a", "b", "3"]
    return list(zip(out["items"], want, strict=True))


def test_score_equals_in_process(service, tiny_checkpoints):
    for got, exp in served_and_in_process(service, tiny_checkpoints["sft"]):
        np.testing.assert_allclose(got["loglikelihoods"], exp["loglikelihoods"], atol=1e-5)
        np.testing.assert_allclose(got["probs"], exp["probs"], atol=1e-6)
        for k in ("pred", "pred_norm", "pass_at_n", "bon_correct", "correct"):
            assert got[k] == exp[k], k


def test_auth(service):
    body = {"checkpoint": "sft", "items": ITEMS[:1]}
    assert call(service["url"], "/v1/score", body, token=None)[0] == 401
    status, out = call(service["url"], "/v1/score", body, token="wrong")
    assert status == 401 and "token" in out["error"]
    assert call(service["url"], "/v1/checkpoints", token=None)[0] == 401
    assert call(service["url"], "/healthz", token=None)[0] == 200


def test_limits_name_the_limit(service):
    url = service["url"]
    status, out = call(url, "/v1/score", {"checkpoint": "sft", "items": ITEMS * 3})
    assert status == 413 and "max_items=8" in out["error"]
    status, out = call(url, "/v1/score", {"checkpoint": "sft", "items": ITEMS, "n": 51})
    assert status == 422 and "max_n=50" in out["error"]
    long = dict(ITEMS[0], question="x" * 500)
    status, out = call(url, "/v1/score", {"checkpoint": "sft", "items": [long]})
    assert status == 413 and "max_item_chars=400" in out["error"]
    status, out = call(url, "/v1/score", {"checkpoint": "sft", "items": [dict(ITEMS[0], answer=5)]})
    assert status == 422 and "out of range" in out["error"]


def test_bad_json_and_fields_without_traces(service):
    status, out = call(service["url"], "/v1/score", raw=b'{"checkpoint": "sft", "items": [')
    assert status == 422 and out["error"] == "invalid request"
    status, out = call(service["url"], "/v1/score", {"checkpoint": "sft", "items": [{"id": "x"}]})
    assert status == 422 and {"items.0.question", "items.0.options"} <= {d["field"] for d in out["detail"]}
    assert "Traceback" not in json.dumps(out)


@pytest.mark.parametrize("ckpt", ["../ckpt/sft", "/etc", "sft/../../etc", "..", "sft/..", "~root", "C:\\x"])
def test_path_traversal_is_refused(service, ckpt):
    status, out = call(service["url"], "/v1/score", {"checkpoint": ckpt, "items": ITEMS[:1]})
    assert status == 404, out
    assert "/tmp" not in out["error"] and "Traceback" not in out["error"]


def test_symlink_out_of_root_is_refused(service, tiny_checkpoints, tmp_path):
    import shutil

    shutil.copytree(tiny_checkpoints["sft"], tmp_path / "outside")  # a real checkpoint, outside the root
    link = service["root"] / "escape"
    link.symlink_to(tmp_path)  # root/escape/outside resolves out of the root
    try:
        assert call(service["url"], "/v1/score", {"checkpoint": "escape/outside", "items": ITEMS[:1]})[0] == 404
    finally:
        link.unlink()


def test_checkpoints_listing(service):
    status, out = call(service["url"], "/v1/checkpoints")
    assert status == 200 and {"sft", "base"} <= set(out["checkpoints"])


def test_openapi_docs_need_the_token(service):
    status, spec = call(service["url"], "/openapi.json")
    assert status == 200
    assert {"/v1/score", "/v1/audit", "/v1/audit/{job_id}", "/v1/checkpoints", "/healthz"} <= set(spec["paths"])
    assert call(service["url"], "/openapi.json", token=None)[0] == 401
    req = urllib.request.Request(service["url"] + "/docs")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


def test_auth_and_size_before_the_body_is_parsed(service):
    """Issue 20, finding 3: no token, no parsing (a 401, never field-by-field 422s); a body over
    max_body_bytes is refused from its Content-Length, or, chunked, by the running count."""
    import http.client
    from urllib.parse import urlparse

    url = service["url"]
    status, out = call(url, "/v1/score", {"checkpoint": "sft", "items": [{"id": "x"}]}, token=None)
    assert status == 401 and "detail" not in out
    status, out = call(url, "/v1/score", raw=b'{"checkpoint": ', token="wrong")
    assert status == 401
    big = json.dumps({"checkpoint": "sft", "items": ITEMS, "pad": "x" * 70_000}).encode()
    status, out = call(url, "/v1/score", raw=big)
    assert status == 413 and "max_body_bytes=65536" in out["error"]
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest("POST", "/v1/score")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for _ in range(10):
            chunk = b"x" * 10_000
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before the last chunk
    resp = conn.getresponse()
    assert resp.status == 413 and b"max_body_bytes" in resp.read()
    conn.close()
    # A long id is a field error, not a 500.
    status, out = call(url, "/v1/score", {"checkpoint": "sft", "items": [dict(ITEMS[0], id="i" * 300)]})
    assert status == 422 and out["detail"][0]["field"] == "items.0.id"


@pytest.mark.parametrize("field, value", [
    ("scoring", {"engine": "http", "url": "http://attacker.example/"}),
    ("scoring", {"vllm_args": {"trust_remote_code": True}}),
    ("evidence", {"judge": {"url": "http://attacker.example/", "api_key_env": "ILP_API_TOKEN"}}),
    ("evidence", {"index": {"elasticsearch": {"credentials_file": "/etc/shadow"}}}),
    ("tracking", {"uri": "sqlite:////tmp/elsewhere.db"}),
    ("diagnose", {"conflict": {"spark_master": "spark://attacker:7077"}}),
    ("diagnose", {"data": "/etc/passwd"}),
    ("diagnose", {"plugins": ["os:system"]}),
    ("ray", {"num_actors": 10_000}),
    ("run_dir", "/tmp/anywhere"),
])
def test_audit_config_fields_a_client_may_not_set(service, field, value):
    """Issue 20, finding 1: URLs, env-var names, credentials, tracking, Spark, paths and resources
    are the service's; a client naming one gets a 422 that names it, and nothing starts."""
    cfg = {"data": "facts.jsonl", "sft_model": "sft", field: value}
    status, out = call(service["url"], "/v1/audit", {"config": cfg})
    assert status == 422, out
    assert out["error"].startswith(f"config.{field}") and "not settable by a client" in out["error"]


@pytest.mark.parametrize("data", ["file:///etc/passwd", "s3://bucket/x.jsonl", "hdfs://nn/x", "../x.jsonl",
                                  "~/x.jsonl"])
def test_audit_data_outside_the_roots_is_refused(service, data):
    """Issue 20, finding 2: URI schemes are not confined by a root, so they are refused; a relative
    path is read under the first data root and may not climb out of it."""
    status, out = call(service["url"], "/v1/audit", {"config": {"data": data, "sft_model": "sft"}})
    assert status == 403, out
    assert "data root" in out["error"] and str(service["data_root"]) not in out["error"]


def test_outside_the_roots_the_answer_is_the_same_whether_or_not_the_file_exists(service):
    """Issue 20, finding 2: a path outside the data roots is refused before anything reads it, so
    an existing file and a missing one get the same status and the same words."""
    answers = {call(service["url"], "/v1/audit", {"config": {"data": d, "sft_model": "sft"}})[1]["error"]
               for d in ("/etc/passwd", "/no/such/file.jsonl", "../../../../etc/hostname", "../../no/such")}
    assert len(answers) == 1, answers


def test_the_lru_evicts_and_reloads_checkpoints(service, tiny_checkpoints):
    """Three checkpoints through a replica that holds two: each eviction frees one (LoadedModel's
    __del__, which Serve calls), and an evicted checkpoint loads again with the same scores."""
    import shutil

    third = service["root"] / "third"
    shutil.copytree(tiny_checkpoints["base"], third)
    try:
        body = {"items": ITEMS, "n": 3, "seed": 1}
        first = {c: call(service["url"], "/v1/score", dict(body, checkpoint=c)) for c in ("sft", "base", "third")}
        assert all(s == 200 for s, _ in first.values()), first
        assert first["third"][1]["items"] == first["base"][1]["items"]  # the same weights
        again = {c: call(service["url"], "/v1/score", dict(body, checkpoint=c)) for c in ("sft", "base")}
        for c, (status, out) in again.items():
            assert status == 200 and out["items"] == first[c][1]["items"], c
    finally:
        shutil.rmtree(third)


def test_32_concurrent_clients(service):
    body = {"checkpoint": "sft", "items": ITEMS}
    with cf.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: call(service["url"], "/v1/score", body), range(32)))
    assert [s for s, _ in results] == [200] * 32
    first = results[0][1]["items"]
    assert all(r[1]["items"] == first for r in results)


def test_audit_over_http(service, facts_jsonl):
    import shutil

    data = service["data_root"] / "facts.jsonl"
    shutil.copy(facts_jsonl, data)
    cfg = {"data": "facts.jsonl", "sft_model": "sft", "base_model": "base", "mc": {"k": 3},
           "detect": {"stability_seeds": 2}}  # Ray resources: the service's audit_defaults
    status, out = call(service["url"], "/v1/audit", {"config": cfg})
    assert status == 202, out
    job = out["id"]
    assert out["run_dir"] == job  # by its name: the service's paths stay the service's
    # One audit at a time here (max_concurrent_audits=1): a second is told to come back later.
    status, busy = call(service["url"], "/v1/audit", {"config": cfg})
    assert status == 429 and "max_concurrent_audits=1" in busy["error"]
    deadline = time.time() + 240
    while out["state"] == "RUNNING":
        assert time.time() < deadline
        time.sleep(1)
        status, out = call(service["url"], f"/v1/audit/{job}")
    assert out["state"] == "SUCCEEDED", out
    assert out["mlflow_run_id"] and out["summary"]["n"] == 12
    # The registry dies and Ray restarts it: the finished job is still known, from its run directory.
    import ray

    from ilp_ray.serve.audits import NAMESPACE, REGISTRY_NAME

    ray.kill(ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE), no_restart=False)
    deadline = time.time() + 60
    status, again = call(service["url"], f"/v1/audit/{job}")
    while status == 503:  # restarting: the client is told to retry
        assert time.time() < deadline and "retry" in again["error"]
        time.sleep(1)
        status, again = call(service["url"], f"/v1/audit/{job}")
    assert status == 200 and again["state"] == "SUCCEEDED" and again["mlflow_run_id"] == out["mlflow_run_id"]
    # Settings a client may set, but not past their bounds.
    status, big = call(service["url"], "/v1/audit", {"config": dict(cfg, detect={"n": 101})})
    assert status == 422 and "config.detect.n: limit audit_max.detect.n=100 exceeded" in big["error"]
    # bad configs: a field error, a checkpoint outside the roots, data outside the data roots
    status, out = call(service["url"], "/v1/audit", {"config": dict(cfg, detect={"n": 0})})
    assert status == 422 and "config.detect.n" in out["error"]
    assert call(service["url"], "/v1/audit", {"config": dict(cfg, sft_model="../x")})[0] == 404
    assert call(service["url"], "/v1/audit", {"config": dict(cfg, data="/etc/passwd")})[0] == 403
    assert call(service["url"], "/v1/audit/nope")[0] == 404
    # A job that fails tells the client why, in the names the client used: no path of this machine.
    status, out = call(service["url"], "/v1/audit", {"config": dict(cfg, data="sub/missing.jsonl")})
    assert status == 202, out
    deadline = time.time() + 120
    while out["state"] == "RUNNING":
        assert time.time() < deadline
        time.sleep(1)
        status, out = call(service["url"], f"/v1/audit/{out['id']}")
    assert out["state"] == "FAILED" and "sub/missing.jsonl" in out["error"], out
    assert str(service["data_root"].resolve()) not in out["error"]
    assert not re.search(r"(^|[\s'\"(])/", out["error"]), out["error"]


def test_replica_killed_mid_load_recovers(service):
    """Kill the scorer replica while clients are sending; retrying clients all succeed."""
    import ray

    body = {"checkpoint": "sft", "items": ITEMS}

    def client(_):
        for attempt in range(60):
            status, out = call(service["url"], "/v1/score", body)
            if status == 200:
                return attempt
            assert status == 503, (status, out)  # the only failure a client may see
            time.sleep(1)
        raise AssertionError("never recovered")

    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, i) for i in range(16)]
        time.sleep(0.3)
        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["namespace"] == "serve" and "Scorer" in a["name"]]
        assert replicas, "no scorer replica found"
        ray.kill(ray.get_actor(replicas[0]["name"], namespace="serve"), no_restart=False)
        attempts = [f.result() for f in futures]
    assert call(service["url"], "/v1/score", body)[0] == 200
    assert len(attempts) == 16


def test_audit_core_scores_through_the_endpoint(service, facts_jsonl, tiny_checkpoints, tmp_path):
    """scoring.engine = the service's URL: the same verdicts as scoring in the job's own actors."""
    from ilp_ray.config import AuditConfig
    from ilp_ray.pipeline.audit import run_audit

    common = {"data": str(facts_jsonl), "mc": {"k": 3}, "detect": {"stability_seeds": 2},
              "ray": {"cpus_per_actor": 0.5, "shard_size": 6}, "tracking": {"enabled": False}}
    remote = run_audit(AuditConfig(**common, sft_model="sft", base_model="base", run_dir=str(tmp_path / "remote"),
                                   scoring={"engine": service["url"], "batch_size": 5}), progress=False)
    local = run_audit(AuditConfig(**common, sft_model=str(tiny_checkpoints["sft"]),
                                  base_model=str(tiny_checkpoints["base"]), run_dir=str(tmp_path / "local")),
                      progress=False)
    np.testing.assert_allclose(np.stack(remote.verdicts["probs"]), np.stack(local.verdicts["probs"]), atol=1e-5)
    np.testing.assert_allclose(remote.verdicts["js_base_sft"], local.verdicts["js_base_sft"], atol=1e-5)
    assert remote.verdicts["unlearned"].tolist() == local.verdicts["unlearned"].tolist()


def test_http_engine_reports_errors(service):
    from ilp_ray.records import McItem
    from ilp_ray.scoring.http import HttpEngine

    item = McItem(id="a", question="q?", options=("x", "y"), answer=0)
    with pytest.raises(RuntimeError, match="answered 404: unknown checkpoint"):
        HttpEngine("nope", url=service["url"]).score([item])
    with pytest.raises(RuntimeError, match="answered 401"):
        HttpEngine("sft", url=service["url"], token="bad").score([item])


@pytest.mark.parametrize("change, field", [
    ({"seed": -1}, "seed"), ({"seed": 2**40}, "seed"),
    ({"temperature": 1e-320}, "temperature"), ({"temperature": 0}, "temperature"),
])
def test_request_bounds_are_422_not_503(service, change, field):
    """Issue 20, finding 4: the client's own errors are 4xx, never 'retry' (503)."""
    status, out = call(service["url"], "/v1/score", {"checkpoint": "sft", "items": ITEMS[:1], **change})
    assert status == 422 and out["detail"][0]["field"] == field, out


def test_infinite_temperature_and_duplicate_ids_are_422(service):
    raw = json.dumps({"checkpoint": "sft", "items": ITEMS[:1]})[:-1] + ', "temperature": Infinity}'
    status, out = call(service["url"], "/v1/score", raw=raw.encode())
    assert status == 422, out
    dup = [dict(ITEMS[2], id=3), dict(ITEMS[2], id="3")]
    status, out = call(service["url"], "/v1/score", {"checkpoint": "sft", "items": dup})
    assert status == 422 and "duplicate id" in out["error"]


def test_a_corrupt_checkpoint_is_500_without_a_trace_not_retry(service, tiny_checkpoints):
    import shutil

    bad = service["root"] / "corrupt"
    shutil.copytree(tiny_checkpoints["sft"], bad)
    try:
        for f in bad.glob("*.safetensors"):
            f.write_bytes(b"not a safetensors file")
        status, out = call(service["url"], "/v1/score", {"checkpoint": "corrupt", "items": ITEMS[:1]})
        assert status == 500 and "retrying will not help" in out["error"], out
        assert "Traceback" not in json.dumps(out) and "/tmp" not in json.dumps(out)
    finally:
        shutil.rmtree(bad)


def test_schemathesis_finds_no_5xx_and_no_trace(service):
    """Issue 20's API fuzzing: schemathesis generates requests from the service's own OpenAPI
    schema, authenticated, for every operation; none may answer 5xx or carry a trace. 40 cases
    per operation here (docs/reliability.md has a longer run)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    status, spec = call(service["url"], "/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(spec)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    counts = {}
    def fuzz(op):
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(op.as_strategy())
        def check(case):
            resp = case.call(base_url=service["url"], headers=auth, timeout=60)
            counts[op.label] = counts.get(op.label, 0) + 1
            assert resp.status_code < 500, (op.label, resp.status_code, resp.text[:500])
            assert "Traceback" not in resp.text and 'File "/' not in resp.text

        check()

    for result in schema.get_all_operations():
        fuzz(result.ok())
    assert {"POST /v1/score", "POST /v1/audit", "GET /v1/audit/{job_id}", "GET /v1/checkpoints"} <= set(counts)
    print("schemathesis cases:", counts)
