"""Corpus evidence for an SFT dataset: retrieve → match → judge → tables, rates and MLflow.

Outputs in ``out``:

- ``evidence.parquet``: one row per item: id, subset, query, subject, relation, object,
  corpus_verdict, corpus_score, n_hits (BM25), n_matched (after the cosine filter), and
  ``passages`` (the matched passages: passage_id, doc_id, text, bm25, sim; best first).
- ``corpus_evidence.parquet``: id, corpus_verdict, corpus_score: the table
  ``DiagnosisContext.evidence`` consumes (``diagnose.evidence`` points at it).
- ``summary.json``: the non-existence rate (share ``absent``) and the conflict rate (share
  ``contradicts``) for the dataset and per subset, with counts and timings.

Without matching (``match.enabled: false``) a hit's ``sim`` is its BM25 score over the item's
best BM25 score, so the judges still see a [0, 1] closeness.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ilp_ray.evidence.judge import CORPUS_VERDICTS, JUDGES, Candidate
from ilp_ray.evidence.query import Fact, make_fact


def rates(frame, by: str | None = None) -> dict[str, Any]:
    """Non-existence and conflict rates (and counts) overall or per value of ``by``."""
    def one(df) -> dict[str, Any]:
        n = len(df)
        counts = {v: int((df["corpus_verdict"] == v).sum()) for v in CORPUS_VERDICTS}
        return {"n": n, **counts, "non_existence_rate": counts["absent"] / n if n else 0.0,
                "conflict_rate": counts["contradicts"] / n if n else 0.0}
    if by is None:
        return one(frame)
    return {str(k): one(g) for k, g in frame.groupby(by, sort=True)}


def facts_for(records, judge: str) -> list[Fact]:
    """Facts of the records, with MC options (answer first): the record's own options when the
    data is multiple-choice (every judge uses them), else built ones for the model judge only."""
    options: dict[str, tuple[str, ...]] = {}
    for r in records:
        if r.options is not None and r.answer is not None:
            options[r.id] = (r.options[r.answer], *(o for j, o in enumerate(r.options) if j != r.answer))
    if judge == "model" and len(options) < len(records):
        from ilp_ray.data.mc import build_mc_items

        for it in build_mc_items(records):
            options.setdefault(it.id, (it.options[it.answer],
                                       *(o for j, o in enumerate(it.options) if j != it.answer)))
    return [make_fact(r.id, r.prompt, r.response, r.subset, options.get(r.id)) for r in records]


def judge_facts(facts: list[Fact], matched, judge) -> list[tuple[str, float]]:
    """Group the matched rows by item (best first) and run the judge over all items."""
    by_id: dict[str, list[Candidate]] = {f.id: [] for f in facts}
    for row in matched.itertuples(index=False):
        by_id[str(row.id)].append(Candidate(row.passage_id, row.text, float(row.bm25), float(row.sim)))
    return judge.judge(facts, [by_id[f.id] for f in facts])


def run_evidence(cfg, progress: bool = True) -> dict[str, Any]:
    """The whole evidence stage for ``cfg`` (an ``EvidenceConfig``); returns the summary dict."""
    import pandas as pd

    from ilp_ray.data.load import read_sft
    from ilp_ray.evidence.match import match_candidates
    from ilp_ray.evidence.retrieve import search_items
    from ilp_ray.pipeline.shards import write_json_atomic, write_table_atomic
    from ilp_ray.track import flatten, make_tracker

    out = Path(cfg.out)
    judge = JUDGES.create(cfg.judge.name, cfg.judge)  # fail on a bad judge before any work
    records = read_sft(cfg.data)
    facts = facts_for(records, cfg.judge.name)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    hits = search_items([f.id for f in facts], [f.query for f in facts], cfg.index, cfg.retrieve)
    t["retrieve_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if cfg.match.enabled:
        items = pd.DataFrame({"id": [r.id for r in records],
                              "query": [f"{r.prompt} {r.response}" for r in records]})
        matched = match_candidates(items, hits, cfg.match)
    else:
        best = hits.groupby("id")["bm25"].transform("max")
        matched = hits.assign(sim=(hits["bm25"] / best).fillna(0.0))
    t["match_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    verdicts = judge_facts(facts, matched, judge)
    t["judge_s"] = time.perf_counter() - t0

    n_hits = hits.groupby("id").size().to_dict() if len(hits) else {}
    groups = {k: g for k, g in matched.groupby("id", sort=False)} if len(matched) else {}
    cols = ["passage_id", "doc_id", "text", "bm25", "sim"]
    frame = pd.DataFrame({
        "id": [f.id for f in facts], "subset": [f.subset for f in facts], "query": [f.query for f in facts],
        "subject": [f.subject for f in facts], "relation": [f.relation for f in facts],
        "object": [f.object for f in facts],
        "corpus_verdict": [v for v, _ in verdicts], "corpus_score": [float(s) for _, s in verdicts],
        "n_hits": [int(n_hits.get(f.id, 0)) for f in facts],
        "n_matched": [len(groups[f.id]) if f.id in groups else 0 for f in facts],
        "passages": [groups[f.id][cols].to_dict("records") if f.id in groups else [] for f in facts],
    })
    import pyarrow as pa

    write_table_atomic(pa.Table.from_pandas(frame, preserve_index=False), out / "evidence.parquet")
    write_table_atomic(pa.Table.from_pandas(frame[["id", "corpus_verdict", "corpus_score"]], preserve_index=False),
                       out / "corpus_evidence.parquet")
    summary = {"data": cfg.data, "dataset": Path(cfg.data).name, "overall": rates(frame),
               "by_subset": rates(frame, "subset"), "timings": {k: round(v, 3) for k, v in t.items()},
               "items_per_s": round(len(facts) / max(sum(t.values()), 1e-9), 2),
               "outputs": {"evidence": str(out / "evidence.parquet"),
                           "corpus_evidence": str(out / "corpus_evidence.parquet")}}
    write_json_atomic(summary, out / "summary.json")
    with make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment, out) as tr:
        tr.start(run_name=out.name, tags={"stage": "evidence"})
        tr.log_params(flatten(cfg.model_dump()))
        metrics = {f"evidence.{k}": v for k, v in summary["overall"].items()}
        for s, r in summary["by_subset"].items():
            metrics.update({f"evidence.{s}.{k}": v for k, v in r.items() if k.endswith("rate")})
        tr.log_metrics(metrics)
        tr.log_artifact(out / "summary.json")
        tr.log_artifact(out / "corpus_evidence.parquet")
    return summary
