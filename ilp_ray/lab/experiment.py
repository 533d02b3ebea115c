"""The paper's Table 4 on the lab: do more SFT epochs fill a knowledge gap, or does CPT?

On the world's category I facts (the corpus never states them), three arms start from the same
pretrained base:

- ``sft_2_epochs``: the lab's SFT (same data, order and settings) for ``short_epochs`` (2);
- ``sft_10_epochs``: the same for ``long_epochs`` (10);
- ``cpt_then_sft``: continued pretraining on a knowledge corpus for the missing facts (the
  world's declarative statements of each I fact, never the SFT question/answer lines) mixed with
  the world's own corpus as general text at λ = ``cpt_ratio`` (0.2, the paper's), then the SFT of
  the first arm.

Each arm's final model is scored on the I items with the project's scoring engine: accuracy
(the top option is right), pass@10 (its expectation, the mean p(correct)) and the learn rate (the
share the lab's audit would call learned: p(correct) >= 0.5). The base model, and the base after
CPT before any SFT, are scored too, for reference. Whatever the outcome, it is reported as found.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilp_ray.lab.config import LabConfig
from ilp_ray.storage import write_json_atomic


@dataclass
class ExperimentResult:
    out: Path
    table: list[dict[str, Any]]  # one row per model: arm, accuracy, pass_at_10, learn_rate, …
    wall_s: float


def knowledge_documents(world, ids: set[str]) -> list[dict]:
    """Every statement template of each fact behind the SFT samples ``ids`` (one document each)."""
    docs, seen = [], set()
    for t in world.truth:
        key = (t["entity"], t["relation"])
        if t["id"] not in ids or key in seen:
            continue
        seen.add(key)
        for j, s in enumerate(world.relations[t["relation"]].statements):
            docs.append({"id": f"k-{len(seen)}-{j}", "text": s.format(e=key[0], v=t["value"])})
    return docs


def score_items(checkpoint: str, records) -> dict[str, float]:
    """Accuracy, expected pass@10 and learn rate of ``checkpoint`` on the MC ``records``."""
    import numpy as np

    from ilp_ray.metrics import option_probs, pad_ragged, pass_expected
    from ilp_ray.records import McItem
    from ilp_ray.scoring.hf import TransformersEngine

    items = [McItem(id=r.id, question=r.prompt, options=tuple(r.options), answer=int(r.answer), subset=r.subset)
             for r in records]
    scores = TransformersEngine(checkpoint, fmt="plain").score(items)
    probs = option_probs(pad_ragged([s.logprob_sum for s in scores], -np.inf))
    answers = np.array([it.answer for it in items])
    p = pass_expected(probs, answers)
    return {"items": len(items), "accuracy": float((probs.argmax(axis=1) == answers).mean()),
            "pass_at_10": float(p.mean()), "learn_rate": float((p >= 0.5).mean())}


def run_epochs_vs_cpt(cfg: LabConfig, progress: bool = True) -> ExperimentResult:
    """Run the three arms (reusing any finished stage under ``cfg.out``) and write ``table.json``."""
    import pandas as pd

    from ilp_ray.data import read_sft
    from ilp_ray.lab.run import _log, build_world, pretrain_config, sft_config, train_fresh
    from ilp_ray.train.config import CptTrainConfig, SftTrainConfig

    if cfg.base != "tiny":
        raise ValueError(f"epochs-vs-cpt runs on the tiny base, whose pretraining corpus it extends "
                         f"by CPT; got base={cfg.base!r}")
    x = cfg.experiment_epochs_vs_cpt
    out = Path(cfg.out).resolve()
    t0 = time.perf_counter()
    world, paths = build_world(cfg, out)
    truth = pd.read_json(paths["truth"], lines=True)
    gap_ids = set(truth.loc[truth.category == "I", "id"])
    gap = [r for r in read_sft(paths["sft"]) if r.id in gap_ids]
    _log(f"epochs vs CPT on {len(gap)} category I items (facts the corpus never states)", progress)

    _log("pretraining the base model on the corpus", progress)
    base = train_fresh(CptTrainConfig.model_validate(pretrain_config(cfg, paths["corpus"], out)), progress)

    def sft(name: str, start: str, epochs: int):
        _log(f"{name}: SFT for {epochs} epochs", progress)
        c = sft_config(cfg, start, paths["sft"], out / "experiment", len(world.sft))
        c.update(name=name, trajectory={"enabled": False})
        c["optim"]["epochs"] = epochs
        return train_fresh(SftTrainConfig.model_validate(c), progress)

    short = sft("sft_2_epochs", str(base.checkpoint), x.short_epochs)
    long_ = sft("sft_10_epochs", str(base.checkpoint), x.long_epochs)

    knowledge = out / "experiment" / "knowledge.jsonl"
    docs = knowledge_documents(world, gap_ids)
    text = "".join(json.dumps(d) + "\n" for d in docs)
    if not knowledge.is_file() or knowledge.read_text() != text:  # unchanged: keep its mtime
        knowledge.parent.mkdir(parents=True, exist_ok=True)
        knowledge.write_text(text)
    c = pretrain_config(cfg, paths["corpus"], out / "experiment")
    c.update(name="cpt", model={"spec": str(base.checkpoint)})
    c["mixture"] = {"knowledge": str(knowledge), "general": str(paths["corpus"]), "ratio": x.cpt_ratio,
                    "seed": cfg.seed_model}
    c["optim"].update(epochs=x.cpt_epochs, lr=x.cpt_lr, warmup_steps=min(c["optim"]["warmup_steps"], 10))
    _log(f"cpt: {len(docs)} knowledge documents mixed with the corpus at λ = {x.cpt_ratio}, "
         f"{x.cpt_epochs} epochs", progress)
    cpt = train_fresh(CptTrainConfig.model_validate(c), progress)
    after = sft("cpt_then_sft", str(cpt.checkpoint), x.short_epochs)

    rows = []
    for arm, ckpt, note in (("base", base.checkpoint, "pretrained base, no SFT"),
                            ("cpt_only", cpt.checkpoint, "base after CPT, no SFT"),
                            ("sft_2_epochs", short.checkpoint, f"SFT {x.short_epochs} epochs"),
                            ("sft_10_epochs", long_.checkpoint, f"SFT {x.long_epochs} epochs"),
                            ("cpt_then_sft", after.checkpoint, f"CPT (λ = {x.cpt_ratio}) then SFT "
                                                               f"{x.short_epochs} epochs")):
        rows.append({"arm": arm, "what": note, **score_items(str(ckpt), gap)})
    ref = next(r for r in rows if r["arm"] == "sft_2_epochs")
    for r in rows:
        r.update({f"delta_{k}": r[k] - ref[k] for k in ("accuracy", "pass_at_10", "learn_rate")})
    wall = time.perf_counter() - t0
    write_json_atomic({"seed": cfg.seed, "size": cfg.size, "settings": x.model_dump(), "rows": rows,
                       "wall_s": wall}, out / "experiment" / "table.json")
    return ExperimentResult(out / "experiment", rows, wall)
