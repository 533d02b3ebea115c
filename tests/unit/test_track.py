"""No credentials in what the tool prints or tracks: URL userinfo is removed."""

from __future__ import annotations

from typer.testing import CliRunner

from ilp_ray.errors import redact


def test_redact_removes_every_urls_userinfo_and_nothing_else():
    text = ("es at https://elastic:pa$$@es.local:9200/idx, mlflow http://u@h:5000 and "
            "s3://KEY:SECRET@bucket/x; mail a@b.c stays, so does sqlite:////tmp/a@b/mlflow.db")
    assert redact(text) == ("es at https://es.local:9200/idx, mlflow http://h:5000 and "
                            "s3://bucket/x; mail a@b.c stays, so does sqlite:////tmp/a@b/mlflow.db")
    assert redact("no url here") == "no url here"


def test_cli_errors_carry_no_credentials(tmp_path):
    from ilp_ray.cli import app

    r = CliRunner().invoke(app, ["audit", "--data", "https://alice:s3cret@127.0.0.1:9/d.jsonl",
                                 "--sft-model", "m", "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "127.0.0.1:9/d.jsonl" in r.output and "s3cret" not in r.output and "alice" not in r.output


def test_mlflow_params_carry_no_credentials(tmp_path):
    from mlflow import MlflowClient

    from ilp_ray.track import make_tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = make_tracker(True, uri, "redact", tmp_path).start("r")
    t.log_params({"evidence.elasticsearch.url": "https://elastic:hunter2@es:9200", "lr": 1e-4})
    t.end()
    params = MlflowClient(tracking_uri=uri).get_run(t.run_id).data.params
    assert params == {"evidence.elasticsearch.url": "https://es:9200", "lr": "0.0001"}
