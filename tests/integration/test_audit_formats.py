"""`ilp audit` with SmolLM2 on each family of SFT layouts, written by `datasets`, without ids.

The same ten facts are written as conversations (TRL messages with a system turn, two exchanges a
conversation; and ShareGPT), as prompt-completion and as Alpaca. Each goes through the CLI the way
the README tells a user to, under `scoring.format: chat`; a second route (the engine in process,
on the same MC items and the same rendered turns) must give the audit's probabilities.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

pytestmark = pytest.mark.slow

SYSTEM = "Answer with the code only."
FACTS = [("What is the ISO 3166-1 alpha-2 code of Denmark?", "DK"), ("What is the ISO 3166-1 alpha-2 code of Spain?", "ES"),
         ("What is the ISO 3166-1 alpha-2 code of Japan?", "JP"), ("What is the ISO 3166-1 alpha-2 code of Peru?", "PE"),
         ("What is the ISO 3166-1 alpha-2 code of Kenya?", "KE"), ("What is the ISO 4217 code of the euro?", "EUR"),
         ("What is the ISO 4217 code of the yen?", "JPY"), ("What is the ISO 4217 code of the rupee of India?", "INR"),
         ("What is the ISO 4217 code of the Swiss franc?", "CHF"), ("What is the ISO 4217 code of the pound sterling?", "GBP")]


def _rows(layout):
    if layout == "messages":
        return [{"messages": [{"role": "system", "content": SYSTEM}]
                 + [t for q, a in FACTS[i:i + 2] for t in ({"role": "user", "content": q},
                                                           {"role": "assistant", "content": a})]}
                for i in range(0, len(FACTS), 2)]
    if layout == "sharegpt":
        return [{"conversations": [{"from": "system", "value": SYSTEM}]
                 + [t for q, a in FACTS[i:i + 2] for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]}
                for i in range(0, len(FACTS), 2)]
    if layout == "prompt-completion":
        return [{"prompt": q, "completion": a} for q, a in FACTS]
    return [{"instruction": "Give the code.", "input": q, "output": a} for q, a in FACTS]


@pytest.mark.parametrize("layout, writer", [("messages", "save_to_disk"), ("sharegpt", "json"),
                                            ("prompt-completion", "parquet"), ("alpaca", "json")])
def test_ilp_audit_reads_each_layout(tmp_path, layout, writer, ray_session):
    from typer.testing import CliRunner

    from ilp_ray.cli import app
    from ilp_ray.config import ScoringConfig
    from ilp_ray.data import read_sft
    from ilp_ray.records import McItem
    from ilp_ray.scoring.engines import make_engine
    from ilp_ray.storage import load_verdicts

    ds = datasets.Dataset.from_list(_rows(layout))
    path = tmp_path / {"save_to_disk": "saved", "json": "data.jsonl", "parquet": "data.parquet"}[writer]
    ds.save_to_disk(str(path)) if writer == "save_to_disk" else getattr(ds, f"to_{writer}")(str(path))
    run_dir = tmp_path / "audit"
    res = CliRunner().invoke(app, [
        "audit", "--data", str(path), "--sft-model", "smollm2-135m", "--run-dir", str(run_dir),
        "--set", "scoring.format=chat", "--set", "scoring.calibration=none", "--set", "tracking.enabled=false",
        "--set", "ray.num_actors=1", "--set", "ray.cpus_per_actor=1.0", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())  # rich wraps at the terminal's width
    assert f"data: 10 samples from {len(ds)} rows, layout {layout}" in out
    assert "ids generated from the content" in out and "conversation turns, scored under" not in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data_read"]["conversation_turns"] == (10 if layout in ("messages", "sharegpt") else 0)
    v = load_verdicts(run_dir).set_index("id")
    records = {r.id: r for r in read_sft(path)}
    assert set(v.index) == set(records)
    engine = make_engine(ScoringConfig(format="chat", batch_size=4), "smollm2-135m")
    items = [McItem(id=i, question=r.question, options=tuple(r.options), answer=r.answer, history=records[i].history)
             for i, r in v.iterrows()]
    for it, sc in zip(items, engine.score(items), strict=True):
        s = np.array(sc.logprob_sum)
        np.testing.assert_allclose(np.exp(s - s.max()) / np.exp(s - s.max()).sum(), v.loc[it.id, "probs"], atol=1e-5)
        assert len(records[it.id].history) == {"messages": 1, "sharegpt": 1}.get(layout, 0) + 2 * (records[it.id].turn or 0)
