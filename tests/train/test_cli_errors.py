"""``ilp train``: bad config and bad data are reported with file, line and field, before any Ray work."""

from typer.testing import CliRunner

from ilp_ray.cli import app

runner = CliRunner()


def test_bad_config_names_file_line_and_field(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("data: d.jsonl\nmodel:\n  tiny:\n    hidden_size: 64\noptim:\n  batch_size: 0\n")
    r = runner.invoke(app, ["train", "sft", "--config", str(cfg)])
    assert r.exit_code == 2 and f"{cfg}:6: field 'optim.batch_size'" in r.output
    cfg.write_text("data: d.jsonl\nmodel:\n  tiny: {}\nengine:\n  stratgy: ddp\n")
    r = runner.invoke(app, ["train", "sft", "--config", str(cfg)])
    assert r.exit_code == 2 and f"{cfg}:5: field 'engine.stratgy': unknown key; did you mean 'strategy'" in r.output
    r = runner.invoke(app, ["train", "sft", "--config", str(cfg), "--set", "engine={strategy: zero}"])
    assert r.exit_code == 2 and "field 'engine.strategy'" in r.output
    cfg.write_text("mixture:\n  knowledge: k.txt\n  ratio: 0.2\nmodel:\n  spec: smollm2-135m\n")
    r = runner.invoke(app, ["train", "cpt", "--config", str(cfg)])
    assert r.exit_code == 2 and "field 'mixture'" in r.output and "general" in r.output


def test_bad_data_names_file_line_and_field(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "prompt": "q", "response": "r"}\n{"id": "b", "prompt": "q"}\n')
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"data: {data}\nrun_dir: {tmp_path / 'runs'}\nmodel:\n  tiny: {{}}\n")
    r = runner.invoke(app, ["train", "sft", "--config", str(cfg)])
    assert r.exit_code == 2 and f"{data}:2: field 'response'" in r.output
    assert not (tmp_path / "runs").exists()  # nothing started


def test_bad_subset_order_fails_before_training(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "prompt": "q", "response": "r", "subset": "x"}\n'
                    '{"id": "b", "prompt": "q", "response": "s", "subset": "y"}\n')
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"data: {data}\nmodel:\n  tiny: {{}}\norder:\n  sampler: sequential\n  subset_order: [x, z]\n")
    r = runner.invoke(app, ["train", "sft", "--config", str(cfg), "--set", f"run_dir={tmp_path / 'runs'}"])
    assert r.exit_code == 2 and "subset_order" in r.output and "unknown: ['z']" in r.output
