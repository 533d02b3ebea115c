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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ilp_ray.evidence.judge import CORPUS_VERDICTS, JUDGES, Candidate
from ilp_ray.evidence.query import Fact, make_fact

JUDGE_CHUNK = 64  # items per judge call: the step of the judge's progress bar (llm: a request per item)


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


def judge_facts(facts: list[Fact], matched, judge, on_chunk=None) -> list[tuple[str, float]]:
    """Group the matched rows by item (best first) and run the judge over all items, in chunks of
    ``JUDGE_CHUNK`` items; ``on_chunk(n)`` is called after each (progress)."""
    by_id: dict[str, list[Candidate]] = {f.id: [] for f in facts}
    for row in matched.itertuples(index=False):
        by_id[str(row.id)].append(Candidate(row.passage_id, row.text, float(row.bm25), float(row.sim)))
    out: list[tuple[str, float]] = []
    for i in range(0, len(facts), JUDGE_CHUNK):
        part = facts[i:i + JUDGE_CHUNK]
        out += judge.judge(part, [by_id[f.id] for f in part])
        if on_chunk is not None:
            on_chunk(len(part))
    return out


class _Stages:
    """Times each stage; with ``progress``, a line on stderr as each one ends (and a bar while
    judging, in a terminal). Quiet otherwise."""

    def __init__(self, progress: bool):
        from rich.console import Console

        self.progress, self.seconds = progress, {}
        self.console = Console(stderr=True)

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        note: dict[str, str] = {}
        yield note
        dt = self.seconds[f"{name}_s"] = time.perf_counter() - t0
        if self.progress:
            self.console.print(f"[evidence] {name}: {note.get('what', '')} in {dt:.1f} s",
                               markup=False, highlight=False)

    def judge(self, facts: list[Fact], matched, judge) -> list[tuple[str, float]]:
        from rich.progress import Progress

        # a bar only where it can redraw in place; elsewhere (logs, CI) the stage line suffices
        with Progress(console=self.console, disable=not (self.progress and self.console.is_terminal),
                      transient=True) as bar:
            task = bar.add_task(f"judging ({judge.name or 'judge'})", total=len(facts))
            return judge_facts(facts, matched, judge, on_chunk=lambda n: bar.advance(task, n))


@contextmanager
def _ray_data_quiet(progress: bool):
    """Ray Data's progress bars and INFO lines only with ``progress``; the caller's settings after."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    # ray.data: execution plans and paths to its logs (INFO); .progress: its hint, once per
    # process, that progress bars are off (WARNING). Both are noise when quiet was asked for.
    loggers = {name: logging.getLogger(name) for name in ("ray.data", "ray.data._internal.progress")}
    before = ctx.enable_progress_bars, {name: lg.level for name, lg in loggers.items()}
    ctx.enable_progress_bars = progress
    if not progress:
        loggers["ray.data"].setLevel(logging.WARNING)
        loggers["ray.data._internal.progress"].setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.enable_progress_bars = before[0]
        for name, level in before[1].items():
            loggers[name].setLevel(level)


def run_evidence(cfg, progress: bool = True, records=None, tracker=None) -> dict[str, Any]:
    """The whole evidence stage for ``cfg`` (an ``EvidenceConfig``); returns the summary dict.

    Args:
        cfg: the ``EvidenceConfig``.
        progress: a line per stage (retrieve, match, judge) on stderr, a bar while judging, and
            Ray Data's and Spark's progress bars; False: quiet.
        records: the ``SftRecord``s to judge (the audit passes its unlearned ones); None: every
            record of ``cfg.data``.
        tracker: a started ``Tracker`` to log the rates and files into (the audit's run, files
            under ``evidence/``); None: a run of its own per ``cfg.tracking``.

    Raises:
        KeyError: an unknown judge; ValueError: a judge without its model or URL.
        EvidenceError: the index does not exist or cannot be reached.
    """
    import pandas as pd

    from ilp_ray.data.load import read_sft
    from ilp_ray.evidence.match import match_candidates
    from ilp_ray.evidence.retrieve import search_items
    from ilp_ray.storage import write_json_atomic, write_table_atomic

    out = Path(cfg.out)
    judge = JUDGES.create(cfg.judge.name, cfg.judge)  # fail on a bad judge before any work
    records = read_sft(cfg.data, cfg.data_format) if records is None else list(records)
    facts = facts_for(records, cfg.judge.name)
    stage = _Stages(progress)
    with _ray_data_quiet(progress), stage("retrieve") as note:
        hits = search_items([f.id for f in facts], [f.query for f in facts], cfg.index, cfg.retrieve)
        note["what"] = f"{len(facts)} items, {len(hits)} hits (top {cfg.retrieve.k})"
    with stage("match") as note:
        if cfg.match.enabled:
            items = pd.DataFrame({"id": [r.id for r in records],
                                  "query": [f"{r.prompt} {r.response}" for r in records]})
            matched = match_candidates(items, hits, cfg.match, progress=progress)
            note["what"] = f"{len(matched)} of {len(hits)} hits at cosine >= {cfg.match.theta}"
        else:
            best = hits.groupby("id")["bm25"].transform("max")
            matched = hits.assign(sim=(hits["bm25"] / best).fillna(0.0))
            note["what"] = "off (sim = BM25 / the item's best BM25)"
    with stage("judge") as note:
        verdicts = stage.judge(facts, matched, judge)
        note["what"] = f"{len(facts)} items ({cfg.judge.name})"
    t = stage.seconds

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
    write_table_atomic(_arrow(frame), out / "evidence.parquet")
    write_table_atomic(_arrow(frame[["id", "corpus_verdict", "corpus_score"]]), out / "corpus_evidence.parquet")
    summary = {"data": cfg.data, "dataset": Path(cfg.data).name, "overall": rates(frame),
               "by_subset": rates(frame, "subset"), "timings": {k: round(v, 3) for k, v in t.items()},
               "items_per_s": round(len(facts) / max(sum(t.values()), 1e-9), 2),
               "outputs": {"evidence": str(out / "evidence.parquet"),
                           "corpus_evidence": str(out / "corpus_evidence.parquet")}}
    write_json_atomic(summary, out / "summary.json")
    if tracker is not None:
        _log(tracker, summary, out, "evidence")
        return summary
    from ilp_ray.track import flatten, make_tracker

    with make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment, out) as tr:
        tr.start(run_name=out.name, tags={"stage": "evidence"})
        tr.log_params(flatten(cfg.model_dump()))
        _log(tr, summary, out, None)
    return summary


def metric_view(summary: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics: ``evidence.<count or rate>`` overall, ``evidence.<subset>.<rate>`` per subset."""
    metrics = {f"evidence.{k}": float(v) for k, v in summary["overall"].items()}
    for s, r in summary["by_subset"].items():
        metrics.update({f"evidence.{s}.{k}": float(v) for k, v in r.items() if k.endswith("rate")})
    return metrics


def _log(tracker, summary: dict[str, Any], out: Path, artifact_path: str | None) -> None:
    tracker.log_metrics(metric_view(summary))
    tracker.log_artifact(out / "summary.json", artifact_path)
    tracker.log_artifact(out / "corpus_evidence.parquet", artifact_path)


def _arrow(frame):
    """``frame`` as Arrow with the stage's schema, so that a run that judged no item (an audit
    without unlearned samples) still writes typed columns."""
    import pyarrow as pa

    schema = _frame_schema(frame.columns)
    if frame.empty:
        return schema.empty_table()
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def _frame_schema(columns):
    import pyarrow as pa

    passage = pa.struct([("passage_id", pa.string()), ("doc_id", pa.string()), ("text", pa.string()),
                         ("bm25", pa.float64()), ("sim", pa.float64())])
    fields = [("id", pa.string()), ("subset", pa.string()), ("query", pa.string()), ("subject", pa.string()),
              ("relation", pa.string()), ("object", pa.string()), ("corpus_verdict", pa.string()),
              ("corpus_score", pa.float64()), ("n_hits", pa.int64()), ("n_matched", pa.int64()),
              ("passages", pa.list_(passage))]
    return pa.schema([f for f in fields if f[0] in list(columns)])
