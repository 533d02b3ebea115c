"""``run_diagnosis``: read an audit run, run the cause detectors, decide, write, report, track.

Outputs under ``run_dir/diagnosis/`` (each written atomically)::

    diagnosis.parquet         one row per sample: cause, signals, every detector's columns
    cause_table.json          share of diagnosed samples per cause, overall and per subset
    summary.json              every detector's summary and the run's figures
    conflict_groups.parquet   III's groups: id, group_id, group_size, members, judged_wrong
    conflict_pairs.parquet    III's pairs: a, b, similarity, why, judge
    report.html, figures/     the report (see report.py)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilp_ray.diagnosis.config import DiagnosisConfig

log = logging.getLogger(__name__)

REQUIRED = ("id", "subset", "position", "answer", "question", "options", "probs", "pred", "correct",
            "pass_at_n", "pass_expected", "confidence", "unlearned", "in_top_k")


@dataclass
class DiagnosisResult:
    run_dir: Path
    table: Any  # pandas.DataFrame: diagnosis.parquet
    cause_table: dict[str, Any]
    summaries: dict[str, Any]
    report: Path | None
    files: dict[str, Path] = field(default_factory=dict)


def load_inputs(run_dir: str | Path, cfg: DiagnosisConfig):
    """The audit's verdicts, the records, the trajectory and the corpus evidence, all checked.

    Raises:
        FileNotFoundError: no run directory or no verdicts in it.
        DataError: a verdict table without a required column, or a bad trajectory/evidence file.
    """
    from ilp_ray.errors import DataError
    from ilp_ray.pipeline.audit import load_verdicts

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such audit run directory")
    verdicts = load_verdicts(run_dir)
    missing = [c for c in REQUIRED if c not in verdicts.columns]
    if missing:
        raise DataError(f"the verdict table lacks columns {missing} (written by an older audit?)",
                        file=str(run_dir / "verdicts"), field=missing[0])
    records = None
    if cfg.data:
        from ilp_ray.data import read_sft

        records = {r.id: r for r in read_sft(cfg.data)}
    traj = None
    if cfg.trajectory:
        from ilp_ray.diagnosis.trajectories import load_trajectory

        traj = load_trajectory(cfg.trajectory)
    evidence = None
    if cfg.evidence:
        import pandas as pd

        from ilp_ray.diagnosis.base import check_evidence_table

        try:
            evidence = pd.read_parquet(cfg.evidence)
        except Exception as e:
            raise DataError(f"cannot read corpus evidence: {e}", file=cfg.evidence) from e
        evidence = check_evidence_table(evidence, cfg.evidence)
    return verdicts, records, traj, evidence


def make_embedder(cfg: DiagnosisConfig):
    from ilp_ray.data.embed import HashingEmbedder, get_embedder

    if cfg.embedder == "hashing":
        return HashingEmbedder()
    return get_embedder(batch_size=cfg.embed_batch_size, num_threads=diagnosis_threads(cfg),
                        backend=cfg.embed_backend)


def diagnosis_threads(cfg: DiagnosisConfig) -> int:
    """``cfg.threads``, or every core of this machine."""
    return cfg.threads or os.cpu_count() or 1


def diagnose(ctx) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run the configured detectors on a context and decide: (table, cause table, per-detector results)."""
    from ilp_ray.diagnosis.base import DETECTORS
    from ilp_ray.diagnosis.decide import ORDER, cause_table, decide

    results, timings = {}, {}
    for name in [c for c in ORDER if c in ctx.config.causes]:
        t = time.perf_counter()
        results[name] = DETECTORS.create(name).run(ctx)
        timings[name] = round(time.perf_counter() - t, 3)
        log.info("diagnosis: %s flagged %d samples in %.1fs", name, results[name].summary["n_flagged"], timings[name])
    table = decide(ctx.verdicts, results, ctx.config.scope, ctx.config.relapse_to_base)
    ct = cause_table(table, list(results))
    for name, t in timings.items():
        results[name].summary["seconds"] = t
    return table, ct, results


def run_diagnosis(run_dir: str | Path, cfg: DiagnosisConfig, tracker=None) -> DiagnosisResult:
    """Diagnose every unlearned sample of a finished audit run.

    Args:
        run_dir: the audit run directory (``verdicts/``, ``summary.json``).
        cfg: the diagnosis config.
        tracker: a started ``Tracker`` to log into (the audit's run); None: a new MLflow run per
            ``cfg.tracking`` (or nothing when tracking is disabled).

    Returns:
        A ``DiagnosisResult``; the files are under ``run_dir/diagnosis``.
    """
    import pyarrow as pa

    from ilp_ray.diagnosis.base import DiagnosisContext
    from ilp_ray.env import apply_defaults
    from ilp_ray.pipeline import shards as S

    apply_defaults(local_ray=False)
    t0 = time.perf_counter()
    run_dir = Path(run_dir).expanduser().resolve()
    verdicts, records, traj, evidence = load_inputs(run_dir, cfg)
    ctx = DiagnosisContext(verdicts=verdicts, config=cfg, records=records, trajectories=traj,
                           embedder=make_embedder(cfg), evidence=evidence, run_dir=run_dir)
    from ilp_ray.data.embed import torch_threads

    with torch_threads(diagnosis_threads(cfg)):  # the neighbour search runs on torch
        table, ct, results = diagnose(ctx)
    out = run_dir / "diagnosis"
    files = {"diagnosis": out / "diagnosis.parquet", "cause_table": out / "cause_table.json",
             "summary": out / "summary.json"}
    S.write_table_atomic(pa.Table.from_pandas(table, preserve_index=False), files["diagnosis"])
    S.write_json_atomic(ct, files["cause_table"])
    if "sft_internal_conflict" in results:
        info = results["sft_internal_conflict"].info
        files["conflict_groups"] = out / "conflict_groups.parquet"
        files["conflict_pairs"] = out / "conflict_pairs.parquet"
        S.write_table_atomic(pa.Table.from_pandas(info["groups"], preserve_index=False), files["conflict_groups"])
        S.write_table_atomic(pa.Table.from_pandas(info["pairs"], preserve_index=False), files["conflict_pairs"])
    summaries = {name: r.summary for name, r in results.items()}
    summaries["run"] = {"n": len(table), "unlearned": int(table["unlearned"].sum()),
                        "diagnosed": int(table["in_scope"].sum()), "scope": cfg.scope,
                        "trajectory": cfg.trajectory, "embedder": cfg.embedder,
                        "base_model": bool(ctx.has_base), "corpus_evidence": evidence is not None}
    from ilp_ray.diagnosis.report import write_report

    files["report"] = write_report(out, ctx, table, ct, results)
    summaries["run"]["wall_s"] = round(time.perf_counter() - t0, 3)
    S.write_json_atomic(summaries, files["summary"])
    _track(tracker, cfg, run_dir, out, ct)
    return DiagnosisResult(run_dir, table, ct, summaries, files["report"], files)


def metric_view(ct: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics: diagnosed count and the share and count per cause, overall and per subset."""
    m = {"diagnosis.n_diagnosed": float(ct["n_diagnosed"])}
    for cause, share in ct["shares"].items():
        m[f"diagnosis.share.{cause}"] = share
        m[f"diagnosis.count.{cause}"] = float(ct["counts"][cause])
    for subset, block in ct["per_subset"].items():
        for cause, share in block["shares"].items():
            m[f"diagnosis.subset.{subset}.share.{cause}"] = share
    return m


def _track(tracker, cfg: DiagnosisConfig, run_dir: Path, out: Path, ct: dict[str, Any]) -> None:
    from ilp_ray.track import flatten, make_tracker

    def log(t) -> None:
        t.log_metrics(metric_view(ct))
        t.log_artifact(out, "diagnosis")

    if tracker is not None:
        log(tracker)
        return
    t = make_tracker(cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment, run_dir.parent)
    with t.start(f"{run_dir.name}-diagnosis", tags={"ilp.kind": "diagnosis", "ilp.run_dir": str(run_dir)}):
        t.log_params({f"diagnose.{k}": v for k, v in flatten(cfg.model_dump()).items()})
        log(t)


def print_result(result: DiagnosisResult) -> None:
    """The cause table in the terminal, and where the files are."""
    from rich.console import Console
    from rich.table import Table

    from ilp_ray.diagnosis.report import LABELS

    ct = result.cause_table
    t = Table(title=f"Diagnosis: {ct['n_diagnosed']} of {ct['n_unlearned']} unlearned samples "
                    f"({ct['n_samples']} in all)")
    t.add_column("cause")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    for s in ct["per_subset"]:
        t.add_column(s, justify="right")
    for cause, share in ct["shares"].items():
        t.add_row(LABELS.get(cause, cause), str(ct["counts"][cause]), f"{share:.1%}",
                  *[f"{b['shares'][cause]:.0%}" for b in ct["per_subset"].values()])
    console = Console()
    console.print(t)
    console.print(f"table:  {result.files['diagnosis']}\nreport: {result.report}")
