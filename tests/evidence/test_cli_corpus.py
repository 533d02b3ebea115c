"""``ilp corpus`` commands: errors reach the user as one clear line with exit code 2."""

import json

from typer.testing import CliRunner

from ilp_ray.cli import app

runner = CliRunner()


def test_search_missing_index(tmp_path):
    r = runner.invoke(app, ["corpus", "search", "--index", str(tmp_path / "nope"), "capital of France"])
    assert r.exit_code == 2
    assert "no tantivy index" in r.output and "ilp corpus index" in r.output


def test_index_no_input_files(tmp_path):
    r = runner.invoke(app, ["corpus", "index", "--input", str(tmp_path / "*.jsonl"), "--index", str(tmp_path / "i")])
    assert r.exit_code == 2 and "no corpus files found" in r.output


def test_bad_override_names_the_field(tmp_path):
    r = runner.invoke(app, ["corpus", "index", "-i", "x.jsonl", "--set", "chunk.words=3"])
    assert r.exit_code == 2 and "chunk.words" in r.output


def test_index_then_search(ray_session, tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "fr", "text": "Paris is the capital of France."}) + "\n")
    idx = str(tmp_path / "idx")
    r = runner.invoke(app, ["corpus", "index", "-i", str(tmp_path / "c.jsonl"), "--index", idx, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["index_passages"] == 1
    r = runner.invoke(app, ["corpus", "search", "--index", idx, "-k", "1", "capital of France", "zzz"])
    assert r.exit_code == 0
    assert "Paris is the capital of France." in r.output and "(no hits)" in r.output
