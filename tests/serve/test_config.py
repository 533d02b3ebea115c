"""The Serve config and checkpoint resolution, without starting Serve."""

from pathlib import Path

import pytest
import yaml

from ilp_ray.serve.checkpoints import CheckpointNotFound, list_checkpoints, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_yaml_builds_an_application(monkeypatch):
    from ilp_ray.serve.app import build_app

    cfg = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    app_cfg = cfg["applications"][0]
    assert app_cfg["import_path"] == "ilp_ray.serve.app:build_app"
    assert build_app(app_cfg["args"]) is not None


def test_bad_serve_config_is_refused():
    from pydantic import ValidationError

    from ilp_ray.serve.app import build_app

    with pytest.raises(ValidationError, match="no checkpoints can be served"):
        build_app({"allow_bundled": False})
    with pytest.raises(ValidationError, match="auth"):
        build_app({"auth": "none"})
    with pytest.raises(ValidationError, match="max_itmes"):
        build_app({"limits": {"max_itmes": 3}})


def test_cli_style_args_split_on_commas(tmp_path):
    from ilp_ray.serve.app import build_app

    assert build_app({"checkpoint_roots": f"{tmp_path},{tmp_path}"}) is not None


def test_resolution(tmp_path):
    (tmp_path / "team" / "run1").mkdir(parents=True)
    (tmp_path / "team" / "run1" / "config.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    assert resolve_checkpoint("team/run1", [str(tmp_path)]) == str((tmp_path / "team" / "run1").resolve())
    assert resolve_checkpoint("smollm2-135m", [str(tmp_path)]) == "smollm2-135m"
    for bad in ("empty", "team/../team/run1", "/etc", "team\\run1", "s3://x", "", "team/run1/../../.."):
        with pytest.raises(CheckpointNotFound):
            resolve_checkpoint(bad, [str(tmp_path)])
    with pytest.raises(CheckpointNotFound):
        resolve_checkpoint("smollm2-135m", [str(tmp_path)], allow_bundled=False)
    assert list_checkpoints([str(tmp_path)], allow_bundled=False) == ["team/run1"]


def _serve_cfg(tmp_path, **kw):
    from ilp_ray.serve.config import ServeConfig

    (tmp_path / "ck" / "sft").mkdir(parents=True)
    (tmp_path / "ck" / "sft" / "config.json").write_text("{}")
    (tmp_path / "data").mkdir()
    return ServeConfig(checkpoint_roots=[str(tmp_path / "ck")], data_roots=[str(tmp_path / "data")],
                       allow_bundled=False, audit_root=str(tmp_path / "audits"), **kw)


def test_data_uris_only_under_a_configured_prefix(tmp_path):
    """Issue 20, finding 2: a team may let /v1/audit read s3://bucket/folder/... by naming the
    prefix; anything else with a scheme is still a 403, and no trick leaves the prefix."""
    from fastapi import HTTPException

    from ilp_ray.serve.validate import audit_config, data_uri_allowed

    prefixes = ["s3://team/sft/"]
    assert data_uri_allowed("s3://team/sft/run1/d.jsonl", prefixes)
    for uri in ("s3://team/sft/", "s3://team/sft2/d.jsonl", "s3://team/other/d.jsonl", "gs://team/sft/d.jsonl",
                "s3://team/sft/../hr/d.jsonl", "s3://team/sft/%2e%2e/hr/d.jsonl", "s3://team/sft/./d.jsonl",
                "s3://key:secret@team/sft/d.jsonl", "s3://team/sft/d.jsonl?versionId=1", "s3://team/sft/d#x",
                "s3://team/sft/a\\..\\b"):
        assert not data_uri_allowed(uri, prefixes), uri
    cfg = _serve_cfg(tmp_path, data_uri_prefixes=prefixes)
    out = audit_config({"data": "s3://team/sft/run1/d.jsonl", "sft_model": "sft"}, cfg, "job1")
    assert out["data"] == "s3://team/sft/run1/d.jsonl" and out["run_dir"].endswith("job1")
    for data in ("s3://team/other/d.jsonl", "file:///etc/passwd"):
        with pytest.raises(HTTPException) as e:
            audit_config({"data": data, "sft_model": "sft"}, cfg, "job2")
        assert e.value.status_code == 403 and "data URI prefix" in e.value.detail
    with pytest.raises(HTTPException) as e:  # without prefixes, every URI is refused as before
        audit_config({"data": "s3://team/sft/run1/d.jsonl", "sft_model": "sft"}, _serve_cfg(tmp_path / "b"), "j")
    assert e.value.status_code == 403


def test_a_bad_data_uri_prefix_is_refused(tmp_path):
    from pydantic import ValidationError

    for bad in ("s3://team/sft", "s3://key:secret@team/sft/", "/local/", "s3://team/sft/?x=1"):
        with pytest.raises(ValidationError, match="data URI prefix"):
            _serve_cfg(tmp_path / str(abs(hash(bad))), data_uri_prefixes=[bad])


def test_a_failed_jobs_error_carries_no_path_of_this_machine(tmp_path):
    """Paths under the roots become relative to them; any other absolute path is cut to its last
    part; URLs keep their form but lose their credentials."""
    from ilp_ray.serve.app import _public, public_error

    root = tmp_path / "data"
    msg = (f"DataError: {root.resolve()}/sub/x.jsonl, line 3, field 'response': missing; "
           "[Errno 2] No such file: '/opt/venv/lib/python3.11/site-packages/pkg/mod.py' "
           "via https://user:secret@host.example/a/b at 1/2")
    got = public_error(msg, [str(root)])
    assert got == ("DataError: sub/x.jsonl, line 3, field 'response': missing; [Errno 2] No such file: "
                   "'…/mod.py' via https://host.example/a/b at 1/2")
    nested = tmp_path / "data" / "inner"        # the longer root wins: relative to the innermost
    assert public_error(f"{nested.resolve()}/y.jsonl", [str(root), str(nested)]) == "y.jsonl"
    out = _public({"id": "j", "state": "FAILED", "run_dir": str(tmp_path / "audits" / "j"),
                   "error": f"OSError: {tmp_path}/audits/j/verdicts"}, [str(tmp_path / "audits")])
    assert out == {"id": "j", "state": "FAILED", "run_dir": "j", "error": "OSError: j/verdicts"}
