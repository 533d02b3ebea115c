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
