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


def test_a_resumed_run_logs_each_step_of_a_metric_once(tmp_path):
    """A training resumed from step 3's checkpoint replays steps 4-5, which the run logged before
    its kill: MLflow keeps the first figures of those steps and logs only what is new."""
    from mlflow import MlflowClient

    from ilp_ray.track import make_tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = make_tracker(True, uri, "resume", tmp_path).start("r")
    first.log_metrics({"data.truncated_prompts": 0}, step=0)
    for s in range(1, 6):
        first.log_metrics({"loss": 1.0 / s}, step=s)
    again = make_tracker(True, uri, "resume", tmp_path).attach(first.run_id)
    assert again.resume() == 2
    again.log_metrics({"data.truncated_prompts": 0}, step=0)
    for s in range(4, 9):
        again.log_metrics({"loss": 100.0 + s, "eval.p": 0.5}, step=s)
    client = MlflowClient(tracking_uri=uri)
    loss = sorted((m.step, m.value) for m in client.get_metric_history(first.run_id, "loss"))
    assert loss == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25), (5, 0.2), (6, 106.0), (7, 107.0), (8, 108.0)]
    assert [m.step for m in client.get_metric_history(first.run_id, "data.truncated_prompts")] == [0]
    assert sorted(m.step for m in client.get_metric_history(first.run_id, "eval.p")) == [4, 5, 6, 7, 8]
    # without resume() an attached tracker logs every step it is given, as before
    plain = make_tracker(True, uri, "resume", tmp_path).attach(first.run_id)
    plain.log_metrics({"loss": 9.0}, step=2)
    assert len(client.get_metric_history(first.run_id, "loss")) == 9
