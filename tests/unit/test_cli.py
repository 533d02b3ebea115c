"""The ilp command: instant help, and clear errors for bad input."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from ilp_ray.cli import app

runner = CliRunner()


def test_help_imports_nothing_heavy():
    code = ("import sys; import ilp_ray.cli; "
            "print([m for m in ('torch','ray','transformers','mlflow','pandas','pyarrow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "audit" in r.output and "score" in r.output


def test_audit_bad_config_names_field(tmp_path):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("data: x.jsonl\nsft_model: m\ndetect:\n  n: 0\n")
    r = runner.invoke(app, ["audit", "--config", str(cfg)])
    assert r.exit_code == 2
    assert f"{cfg}:4: field 'detect.n'" in r.output


def test_audit_bad_data_names_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "prompt": "q", "response": "r"}\n{"id": "a", "prompt": "q", "response": "s"}\n')
    r = runner.invoke(app, ["audit", "--data", str(data), "--sft-model", "m", "--run-dir", str(tmp_path / "r")])
    assert r.exit_code == 2 and f"{data}:2: field 'id': duplicate id" in r.output
    assert not (tmp_path / "r" / "mc").exists()  # nothing written before validation passes


def test_score_bad_items(tmp_path):
    items = tmp_path / "items.jsonl"
    rows = [{"id": 1, "question": "q", "options": ["a", "b"], "answer": 0},
            {"id": 2, "question": "q", "options": ["a", "b"], "answer": 2}]
    items.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "scores.jsonl"
    r = runner.invoke(app, ["score", "--model", "m", "--items", str(items), "--out", str(out)])
    assert r.exit_code == 2 and f"{items}:2: field 'answer': index 2 is out of range" in r.output
    assert not out.exists()
    r = runner.invoke(app, ["score", "--model", "m", "--items", str(items), "--out", str(out), "--format", "xml"])
    assert r.exit_code == 2 and "format" in r.output
    for bad in ("[1, 2]", "{enforce_eager: [", "7"):
        r = runner.invoke(app, ["score", "--model", "m", "--items", str(items), "--out", str(out), "--engine", "vllm",
                                "--vllm-args", bad])
        assert r.exit_code == 2 and "--vllm-args" in r.output, (bad, r.output)
        assert not out.exists()


def test_score_writes_rows_equal_to_the_engine(tmp_path, tiny_checkpoints):
    import numpy as np

    from ilp_ray.config import ScoringConfig
    from ilp_ray.data.items import read_mc_items
    from ilp_ray.scoring.engines import make_engine

    items = tmp_path / "items.jsonl"
    rows = [{"id": "a", "question": "What is the capital of France?", "options": ["Paris", "Rome", "Lima"], "answer": 0},
            {"id": 7, "question": "What do bees make?", "options": ["Honey", "Eight"], "answer": 1}]
    items.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "scores.jsonl"
    ckpt = str(tiny_checkpoints["sft"])
    r = runner.invoke(app, ["score", "--model", ckpt, "--items", str(items), "--out", str(out), "--format", "plain"])
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in got] == ["a", "7"]
    want = make_engine(ScoringConfig(format="plain"), ckpt).score(read_mc_items(items))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["loglikelihoods"], w.logprob_sum, atol=1e-6)
        assert g["pred"] == int(np.argmax(w.logprob_sum))
        assert g["pred_norm"] == int(np.argmax(np.array(w.logprob_sum) / np.array(w.n_chars)))
        assert abs(sum(g["probs"]) - 1) < 1e-9
