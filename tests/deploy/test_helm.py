"""The Helm chart renders (Helm v4 SDK, no cluster), its core manifests validate against the
Kubernetes schemas, and the RayService's Serve config builds our application."""

from pathlib import Path

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "ilp-ray"
helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart")


def render(values):
    out = helm.Chart.load(str(CHART)).render(values, name="rel", namespace="ilp", is_install=True)
    return [d for text in out.values() for d in yaml.safe_load_all(text) if d]


def test_renders_and_validates():
    import kubernetes_validate

    docs = render({"apiToken": {"value": "s3cret"}})
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "PersistentVolumeClaim", "RayService", "Secret", "Service"]
    for d in docs:
        if d["kind"] != "RayService":  # a KubeRay CRD: no schema in kubernetes-validate
            kubernetes_validate.validate(d, "1.30", strict=True)
    lint = helm.lint(str(CHART), {"apiToken": {"value": "s3cret"}})
    assert lint["errors"] == []


def test_serve_config_builds_the_app():
    from ilp_ray.serve.app import build_app

    rs = next(d for d in render({"apiToken": {"existingSecret": "mine"}}) if d["kind"] == "RayService")
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "ilp_ray.serve.app:build_app" and app["args"]["auth"] == "token"
    assert build_app(app["args"]) is not None
    env = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "ILP_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "mine"


def test_existing_secret_is_not_recreated_and_gpus_are_requested():
    docs = render({"apiToken": {"existingSecret": "mine"}, "serve": {"workers": {"gpus": 1}}, "mlflow": {"enabled": False}})
    assert sorted(d["kind"] for d in docs) == ["RayService"]
    worker = docs[0]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
