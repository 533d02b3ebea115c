"""The Helm chart (helm/ilp-ray) rendered by the Helm v4 SDK under the value sets an operator uses,
with no cluster: core manifests validated by kubernetes-validate in strict mode, KubeRay and ECK
resources against their CRDs' own OpenAPI schemas (tests/deploy/crds, versions in its README),
the security settings asserted on every pod, and the RayJobs' configs read by our config classes."""

import gzip
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ilp-ray"
CRDS = Path(__file__).resolve().parent / "crds"
helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart")

TOKEN = "s3cret-token-value"
BASE = {"apiToken": {"value": TOKEN}, "mlflow": {"auth": {"adminSecret": "mlflow-admin"}}}
ALL_JOBS = {k: {"enabled": True} for k in ("audit", "evidence", "corpusIndex", "sft", "cpt", "mitigate")}
VALUE_SETS = {
    "default": BASE,
    "gpu": {**BASE, "serve": {"engine": "vllm", "workers": {"gpus": 1}},
            "cluster": {"gpuWorkers": {"enabled": True, "replicas": 1}},
            "gpuImage": {"digest": "sha256:" + "a" * 64}},
    "external-es": {**BASE, "elasticsearch": {"mode": "external", "external": {
        "url": "https://es.example.com:9200", "credentialsSecret": "es-creds", "caSecret": "es-ca"}},
        "jobs": ALL_JOBS},
    "eck": {**BASE, "elasticsearch": {"mode": "eck"}, "jobs": ALL_JOBS},
    "no-mlflow": {"apiToken": {"existingSecret": "mine"}, "mlflow": {"enabled": False}},
    "postgres-s3": {**BASE, "mlflow": {"auth": {"adminSecret": "mlflow-admin"},
                                       "backend": {"type": "postgresql", "uriSecret": "mlflow-db"},
                                       "artifacts": {"destination": "s3://bucket/mlflow", "envSecret": "s3"}}},
}


def merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render_text(values):
    out = helm.Chart.load(str(CHART)).render(values, name="rel", namespace="ilp", is_install=True)
    return {k: v for k, v in out.items() if k.endswith((".yaml", ".yml"))}


def render(values):
    return [d for text in render_text(values).values() for d in yaml.safe_load_all(text) if d]


def _strict(schema):
    """kubectl's strict field validation: an object that lists its properties allows no others."""
    if isinstance(schema, dict):
        if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema = {**schema, "additionalProperties": False}
        return {k: _strict(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_schemas():
    out = {}
    for f in CRDS.glob("*.json.gz"):
        d = json.loads(gzip.decompress(f.read_bytes()))
        out[(d["apiVersion"], d["kind"])] = _strict(d["schema"])
    return out


def pods(docs):
    """(owner, pod spec, pod metadata, probed) for every pod template in the manifests; probed: the
    chart owns the probes of its long-running containers."""
    for d in docs:
        k, s = d["kind"], d.get("spec", {})
        if k == "Deployment":
            yield d["metadata"]["name"], s["template"]["spec"], s["template"]["metadata"], True
        cluster = {"RayCluster": s, "RayService": s.get("rayClusterConfig")}.get(k)
        if cluster:
            for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
                yield d["metadata"]["name"], g["template"]["spec"], g["template"]["metadata"], True
        if k == "RayJob":
            t = s["submitterPodTemplate"]
            yield d["metadata"]["name"], t["spec"], t["metadata"], False
        if k == "Elasticsearch":
            for ns in s["nodeSets"]:
                # ECK sets Elasticsearch's readiness probe itself (and no liveness probe, by design:
                # a restart mid-recovery hurts); the chart leaves them to the operator.
                yield d["metadata"]["name"], ns["podTemplate"]["spec"], ns["podTemplate"]["metadata"], False


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_renders_and_validates(name):
    import jsonschema
    import kubernetes_validate

    docs = render(VALUE_SETS[name])
    schemas = crd_schemas()
    for d in docs:
        key = (d["apiVersion"], d["kind"])
        if key in schemas:
            jsonschema.validate(d, schemas[key])
        else:
            kubernetes_validate.validate(d, "1.30", strict=True)
    for owner, spec, meta, _ in pods(docs):  # pod templates inside CRDs, as core Pods
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": owner, **meta}, "spec": spec}
        kubernetes_validate.validate(pod, "1.30", strict=True)
    lint = helm.lint(str(CHART), VALUE_SETS[name])
    assert lint["errors"] == []


def test_strict_crd_validation_catches_a_wrong_field():
    import jsonschema

    schemas = crd_schemas()
    rj = next(d for d in render(merge(BASE, {"jobs": {"audit": {"enabled": True}}})) if d["kind"] == "RayJob")
    rj["spec"]["entrypointt"] = "typo"
    with pytest.raises(jsonschema.ValidationError, match="entrypointt"):
        jsonschema.validate(rj, schemas[("ray.io/v1", "RayJob")])


def test_the_whole_system_is_installed():
    kinds = sorted(d["kind"] for d in render(VALUE_SETS["eck"]))
    for kind in ("RayService", "RayCluster", "Elasticsearch", "Deployment", "NetworkPolicy", "ConfigMap"):
        assert kind in kinds
    assert kinds.count("RayJob") == 6
    gpu = next(d for d in render(VALUE_SETS["gpu"]) if d["kind"] == "RayCluster")
    groups = {g["groupName"]: g for g in gpu["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    c = groups["gpu"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["image"] == "registry.example.com/ilp-ray-gpu@sha256:" + "a" * 64


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_pod_is_locked_down(name):
    docs = render(VALUE_SETS[name])
    seen = 0
    for owner, spec, meta, probed in pods(docs):
        labels = meta["labels"]
        seen += 1
        assert spec["automountServiceAccountToken"] is False, owner
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", owner
        assert labels["app.kubernetes.io/instance"] == "rel", owner  # what the NetworkPolicies select
        mounts = {}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, (owner, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], (owner, c["name"])
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            assert "resources" in c and c["resources"]["limits"], (owner, c["name"])
            if probed:
                assert "readinessProbe" in c and "livenessProbe" in c, (owner, c["name"])
            mounts.update({m["mountPath"]: m for m in c.get("volumeMounts", [])})
            image = c.get("image")
            assert image is None or ("@sha256:" in image or not image.endswith((":latest", ":"))), image
        if not owner.endswith("-es"):  # ECK manages Elasticsearch's own writable dirs
            assert "/tmp" in mounts, owner
    assert seen >= 4
    # The autoscaler sidecar KubeRay adds gets the same container settings.
    for d in docs:
        cluster = {"RayCluster": d.get("spec"), "RayService": d.get("spec", {}).get("rayClusterConfig")}.get(d["kind"])
        if cluster:
            assert cluster["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is True
            assert cluster["authOptions"]["mode"] == "token"  # Ray's own token auth
            assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"  # dashboard not exposed


def test_the_api_token_reaches_only_the_scoring_pods_and_never_the_release_with_an_existing_secret():
    docs = render(merge(BASE, {"jobs": ALL_JOBS}))
    for owner, spec, _, _ in pods(docs):
        names = {e["name"] for c in spec["containers"] for e in c.get("env", [])}
        assert ("ILP_API_TOKEN" in names) == owner.endswith("-serve"), owner
    mine = {"apiToken": {"existingSecret": "mine"}, "mlflow": {"auth": {"adminSecret": "a"}}}
    text = "\n".join(render_text(mine).values())
    assert "kind: Secret" not in text and TOKEN not in text
    rs = next(d for d in render(mine) if d["kind"] == "RayService")
    env = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert next(e for e in env if e["name"] == "ILP_API_TOKEN")["valueFrom"]["secretKeyRef"]["name"] == "mine"


@pytest.mark.parametrize("values, message", [
    ({"mlflow": {"auth": {"adminSecret": "a"}}}, "apiToken"),
    ({"apiToken": {"value": "t"}}, "mlflow.auth.adminSecret"),
    (merge(BASE, {"elasticsearch": {"mode": "external"}}), "elasticsearch.external.credentialsSecret"),
    (merge(BASE, {"elasticsearch": {"mode": "external", "external": {"credentialsSecret": "c"}}}),
     "elasticsearch.external.url"),
    (merge(BASE, {"mlflow": {"backend": {"type": "postgresql"}}}), "mlflow.backend.uriSecret"),
    (merge(BASE, {"cluster": {"enabled": False}, "jobs": {"audit": {"enabled": True}}}), "cluster.enabled"),
    (merge(BASE, {"serve": {"engine": "vlm"}}), "/serve/engine"),
    (merge(BASE, {"image": {"tag": "latest"}}), "/image/tag"),
    (merge(BASE, {"image": {"digest": "sha256:abc"}}), "/image/digest"),
    (merge(BASE, {"security": {"runAsUser": 0}}), "/security/runAsUser"),
    (merge(BASE, {"serve": {"replcas": 2}}), "replcas"),
    (merge(BASE, {"jobs": {"runId": "Run_1"}}), "/jobs/runId"),
])
def test_bad_values_fail_at_install_naming_the_field(values, message):
    with pytest.raises(Exception, match=message.replace(".", r"\.")) as e:
        render(values)
    assert type(e.value).__name__.startswith("Helm")


def test_network_policies_deny_by_default_and_open_only_named_ports():
    docs = render(VALUE_SETS["eck"])
    nps = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = nps["rel-ilp-default-deny"]
    assert deny["podSelector"] == {"matchLabels": {"app.kubernetes.io/instance": "rel"}}
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    serve = nps["rel-ilp-ray-serve"]
    ports = sorted(p["port"] for rule in serve["ingress"] for p in rule.get("ports", []))
    assert ports == [8000, 8265]  # and the cluster's own pods, on every port
    open_rules = [r for r in serve["ingress"] if "ports" not in r]
    assert open_rules == [{"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/instance": "rel", "app.kubernetes.io/component": "serve"}}}]}]
    # No rule admits every source: each names its peers.
    for spec in nps.values():
        for rule in spec.get("ingress", []):
            assert rule.get("from"), spec
    assert [p["port"] for r in nps["rel-ilp-mlflow"]["ingress"] for p in r["ports"]] == [5000]
    assert sorted(p["port"] for r in nps["rel-ilp-elasticsearch"]["ingress"] for p in r["ports"]) == [9200, 9300]


def test_mlflow_recreates_with_its_rwo_volume_and_authenticates():
    docs = render(VALUE_SETS["postgres-s3"])
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    c = dep["spec"]["template"]["spec"]["containers"][0]
    cmd = c["command"]
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "$(MLFLOW_BACKEND_URI)"
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_URI"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "uri"}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-admin"
    assert c["envFrom"] == [{"secretRef": {"name": "s3"}}]
    ini = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-auth"))
    assert "admin_password" not in ini["data"]["basic_auth.ini"]
    # The Ray pods log in with the same admin credentials.
    rs = next(d for d in docs if d["kind"] == "RayService")
    head = {e["name"] for e in rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= head


def _job_configs(values):
    docs = render(values)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rel-ilp-jobs")
    jobs = {d["metadata"]["labels"]["ilp-ray/job"]: d for d in docs if d["kind"] == "RayJob"}
    return cm["data"], jobs


@pytest.mark.parametrize("name", ["eck", "external-es"])
def test_rayjobs_run_the_readme_commands_with_configs_our_classes_accept(name):
    from ilp_ray.config import AuditConfig, load_config
    from ilp_ray.evidence.config import CorpusConfig, EvidenceConfig
    from ilp_ray.mitigate.config import MitigateConfig
    from ilp_ray.train.config import CptTrainConfig, SftTrainConfig

    data, jobs = _job_configs(VALUE_SETS[name])
    assert {j["spec"]["entrypoint"].split(" --config")[0] for j in jobs.values()} == {
        "ilp audit", "ilp corpus evidence", "ilp corpus index", "ilp train sft", "ilp train cpt", "ilp mitigate run"}
    for j in jobs.values():
        assert j["spec"]["clusterSelector"] == {"ray.io/cluster": "rel-ilp-batch"}
        assert j["metadata"]["name"].endswith("-001")
    classes = {"audit": AuditConfig, "evidence": EvidenceConfig, "corpus-index": CorpusConfig,
               "sft": SftTrainConfig, "cpt": CptTrainConfig, "mitigate": MitigateConfig}
    for job, cls in classes.items():
        assert f"--config /etc/ilp/jobs/{job}.yaml" in jobs[job]["spec"]["entrypoint"]
        path = Path(f"/tmp/ilp-chart-{name}-{job}.yaml")
        path.write_text(data[f"{job}.yaml"])
        try:
            cfg = load_config(cls, path)
        finally:
            path.unlink()
        if job in ("evidence", "corpus-index"):
            es = cfg.index.elasticsearch
            assert cfg.index.backend == "elasticsearch" and es.url.startswith("https://") and es.ca_certs
            assert cfg.index.state_dir.startswith("/runs/")  # the manifest on the volume, not the read-only root


def test_a_jobs_own_config_wins_over_the_charts_defaults():
    data, _ = _job_configs(merge(VALUE_SETS["eck"], {"jobs": {"corpusIndex": {"config": {
        "index": {"location": "my-corpus"}, "chunk": {"words": 80}}}}}))
    cfg = yaml.safe_load(data["corpus-index.yaml"])
    assert cfg["index"]["location"] == "my-corpus" and cfg["index"]["backend"] == "elasticsearch"
    assert cfg["chunk"] == {"words": 80}


def test_serve_config_builds_the_app():
    from ilp_ray.serve.app import build_app

    rs = next(d for d in render(VALUE_SETS["no-mlflow"]) if d["kind"] == "RayService")
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "ilp_ray.serve.app:build_app" and app["args"]["auth"] == "token"
    assert build_app(app["args"]) is not None
