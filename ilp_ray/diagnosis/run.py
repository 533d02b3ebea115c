"""``run_diagnosis``: read an audit run, run the cause detectors, decide, write, report, track.

Outputs under ``run_dir/diagnosis/`` (each written atomically)::

    diagnosis.parquet         one row per sample: cause, signals, every detector's columns
    cause_table.json          share of diagnosed samples per cause, overall and per subset
    summary.json              every detector's summary, the run's figures and ``coverage``: what
                              this run could and could not show (see ``coverage``)
    conflict_groups.parquet   III's groups, one row per grouped sample: id, group_id, group_size, judged_wrong
    conflict_pairs.parquet    III's pairs: a, b, similarity, why, judge
    conflict_cleared.parquet  similar pairs the judge found both right (no conflict; kept apart by
                              the conflict_bucket mitigation, as the paper does)
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
from ilp_ray.diagnosis.registry import named

log = logging.getLogger(__name__)

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
    from ilp_ray.storage import load_verdicts

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such audit run directory")
    verdicts = load_verdicts(run_dir)  # checked against storage.VERDICT_COLUMNS
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


def make_embedder(cfg: DiagnosisConfig, threads: int | None = None):
    """The diagnosis's embedder, on ``threads`` CPU threads (None: ``diagnosis_threads``)."""
    from ilp_ray.data.embed import HashingEmbedder, get_embedder

    if cfg.embedder == "hashing":
        return HashingEmbedder()
    return get_embedder(batch_size=cfg.embed_batch_size, num_threads=threads or diagnosis_threads(cfg),
                        backend=cfg.embed_backend)


def prefetch_prompt_embeddings(prompts, cfg: DiagnosisConfig, run_dir: Path):
    """Start embedding ``prompts`` into the run's embedding cache on one thread, in the background
    (``embed_cache.Prefetch``), with the embedder the diagnosis will use; None when
    ``cfg.embed_cache`` is off. The caller stops it; the diagnosis embeds whatever it left."""
    if not cfg.embed_cache:
        return None
    from ilp_ray.data.embed_cache import EmbeddingCache, Prefetch
    from ilp_ray.diagnosis.base import embeddings_dir

    return Prefetch(EmbeddingCache(embeddings_dir(run_dir), make_embedder(cfg, threads=1), chunk=2048), prompts)


def diagnosis_threads(cfg: DiagnosisConfig) -> int:
    """``cfg.threads``, or every core of this machine."""
    return cfg.threads or os.cpu_count() or 1


def diagnose(ctx) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run the configured detectors on a context and decide: (table, cause table, per-detector
    results). The results' frames come back without their evidence column, which the table holds
    (as JSON, where it is kept), and the context without its prompt embeddings."""
    from ilp_ray.diagnosis.decide import cause_table, decide
    from ilp_ray.diagnosis.registry import DETECTORS, decision_order

    results, timings = {}, {}
    for name in decision_order(ctx.config.causes):
        t = time.perf_counter()
        results[name] = DETECTORS.create(name).run(ctx)
        timings[name] = round(time.perf_counter() - t, 3)
        log.info("diagnosis: %s flagged %d samples in %.1fs", name, results[name].summary["n_flagged"], timings[name])
    ctx.release_embeddings()  # the detectors are done with them (460 MB at 300k prompts)
    table = decide(ctx.verdicts, results, ctx.config.scope, ctx.config.relapse_to_base)
    for name, r in results.items():  # the table holds what is kept of the evidence, as JSON
        r.frame = r.frame.drop(columns=[f"{name}_evidence"])
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

    from ilp_ray import storage as S
    from ilp_ray.diagnosis.base import DiagnosisContext
    from ilp_ray.env import apply_defaults

    apply_defaults(local_ray=False)
    t0 = time.perf_counter()
    run_dir = Path(run_dir).expanduser().resolve()
    verdicts, records, traj, evidence = load_inputs(run_dir, cfg)
    ctx = DiagnosisContext(verdicts=verdicts, config=cfg, records=records, trajectories=traj,
                           embedder=make_embedder(cfg), evidence=evidence, run_dir=run_dir)
    from ilp_ray.data.embed import torch_threads
    from ilp_ray.diagnosis.beliefs import ask

    with torch_threads(diagnosis_threads(cfg)):  # the neighbour search runs on torch
        t = time.perf_counter()
        ctx.beliefs, ctx.belief_status = ask(ctx, cfg, run_dir)
        ctx.belief_status["seconds"] = round(time.perf_counter() - t, 3)
        table, ct, results = diagnose(ctx)
    out = run_dir / "diagnosis"
    files = {"diagnosis": out / "diagnosis.parquet", "cause_table": out / "cause_table.json",
             "summary": out / "summary.json"}
    S.write_frame_atomic(table, files["diagnosis"])  # by chunks: the evidence JSON is most of the driver's memory
    S.write_json_atomic(ct, files["cause_table"])
    if "sft_internal_conflict" in results:
        info = results["sft_internal_conflict"].info
        files["conflict_groups"] = out / "conflict_groups.parquet"
        files["conflict_pairs"] = out / "conflict_pairs.parquet"
        S.write_table_atomic(pa.Table.from_pandas(info["groups"], preserve_index=False), files["conflict_groups"])
        S.write_table_atomic(pa.Table.from_pandas(info["pairs"], preserve_index=False), files["conflict_pairs"])
        if info.get("cleared_pairs") is not None:
            files["conflict_cleared"] = out / "conflict_cleared.parquet"
            S.write_table_atomic(pa.Table.from_pandas(info["cleared_pairs"], preserve_index=False),
                                 files["conflict_cleared"])
    summaries = {name: r.summary for name, r in results.items()}
    summaries["run"] = {"n": len(table), "unlearned": int(table["unlearned"].sum()),
                        "diagnosed": int(table["in_scope"].sum()), "scope": cfg.scope,
                        "trajectory": cfg.trajectory, "embedder": cfg.embedder,
                        "base_model": bool(ctx.has_base), "corpus_evidence": evidence is not None}
    schedule = None
    if cfg.trajectory:
        from ilp_ray.diagnosis.trajectories import read_schedule

        schedule = read_schedule(cfg.trajectory)
    cov = coverage(ctx, table, schedule)
    for r in results.values():  # a detector's own warnings about what it found
        cov["warnings"].extend(r.summary.get("warnings", []))
    summaries["coverage"] = cov
    for w in cov["warnings"]:
        log.info("diagnosis: %s", w)
    from ilp_ray.diagnosis.report import write_report

    files["report"] = write_report(out, ctx, table, ct, results, cov)
    summaries["run"]["wall_s"] = round(time.perf_counter() - t0, 3)
    S.write_json_atomic(summaries, files["summary"])
    _track(tracker, cfg, run_dir, out, ct, cov)
    return DiagnosisResult(run_dir, table, ct, summaries, files["report"], files)




def coverage(ctx, table, schedule: dict | None = None) -> dict[str, Any]:
    """What this run could and could not show: per cause, whether it can be tested and why not,
    the trajectory's coverage, and the warnings a reader must see.

    Per cause (every registered cause, in decision order): ``testable`` (it can fire for at least one
    diagnosed sample; for any sample when none is diagnosed), ``why`` (None when testable, else a
    sentence), ``samples`` / ``of`` (diagnosed samples it had the inputs to test), and the counts its
    detector adds. Each detector says which rows it had the inputs to test
    (``CauseDetector.coverage``): I and II none without a base model; IV those with
    ``forgetting.held_evals + 1`` evaluations at or after their training step, counting
    ``last_subset`` (diagnosed samples of the last subset of a sequential run, which it tests but
    never calls IV under ``forgetting.scope: subset``); V those with a trajectory of two or more
    evaluations, or all with ``insufficient.min_population`` samples (``trajectory``,
    ``pattern_only``: which rule judged them); a detector registered from outside, every row unless
    it says otherwise.

    ``trajectory``: ``given``; samples with a trajectory among all (``samples``, ``of``,
    ``share``), the unlearned (``unlearned``, ``unlearned_of``, ``unlearned_share``) and the
    diagnosed (``diagnosed``, ``diagnosed_of``); ``evaluations``, ``needed_for_iv`` and
    ``per_subset`` (``trajectories.schedule_coverage``); ``schedule``, the SFT job's resolved
    schedule when the trajectory file carries it. ``untested``: diagnosed samples that no cause
    but those testing the data alone (III) had the inputs to test. ``warnings``: plain sentences.
    """
    import numpy as np

    from ilp_ray.diagnosis.base import CoverageFacts
    from ilp_ray.diagnosis.registry import DETECTORS, decision_order

    cfg = ctx.config
    v, ids = ctx.verdicts, ctx.ids
    n = len(v)
    diag = table["in_scope"].to_numpy(dtype=bool)
    unl = v["unlearned"].to_numpy(dtype=bool)
    pool = diag if diag.any() else np.ones(n, bool)  # the samples "testable" is judged on
    n_diag = int(diag.sum())
    traj, held = ctx.trajectories, cfg.forgetting.held_evals
    out: dict[str, Any] = {}

    # The trajectory: who has one, how many evaluations from their training on, per subset.
    tc: dict[str, Any] = {"given": traj is not None}
    has, n_evals, n_after, sched = np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, np.int64), None
    if traj is not None:
        from ilp_ray.diagnosis.trajectories import evals_after_training, schedule_coverage

        ea = evals_after_training(traj).reindex(ids)
        has = ea["n_evals"].notna().to_numpy()
        n_evals = ea["n_evals"].fillna(0).to_numpy(dtype=np.int64)
        n_after = ea["n_after"].fillna(0).to_numpy(dtype=np.int64)
        sched = schedule_coverage(traj, held, cfg.forgetting.scope, ids)
        tc.update(samples=int(has.sum()), of=n, share=_share(has.sum(), n),
                  unlearned=int((has & unl).sum()), unlearned_of=int(unl.sum()),
                  unlearned_share=_share((has & unl).sum(), unl.sum()),
                  diagnosed=int((has & diag).sum()), diagnosed_of=n_diag,
                  evaluations=sched["evaluations"], needed_for_iv=sched["needed"],
                  sequential=sched["sequential"], last_subset=sched["last_subset"],
                  per_subset=sched["per_subset"])
    if schedule is not None:
        tc["schedule"] = {k: schedule.get(k) for k in ("mode", "every_steps", "min_evals_per_subset")}
    out["trajectory"] = tc

    # Per cause: the rows it had the inputs to test, the rows it can fire on, and why not.
    facts = CoverageFacts(n=n, diagnosed=diag, pool=pool, has_base=bool(ctx.has_base), has_trajectory=has,
                          n_evals=n_evals, n_after=n_after, schedule=sched)
    covs, can, data_only = {}, {}, []
    for name in decision_order():
        if name not in cfg.causes:
            out[name] = {"testable": False, "why": "not tested: not in diagnose.causes", "samples": 0, "of": n_diag}
            can[name] = np.zeros(n, bool)
            continue
        det = DETECTORS.create(name)
        c = covs[name] = det.coverage(ctx, facts)
        fire = c.rows if c.fire is None else c.fire
        testable = bool((fire & pool).any())
        out[name] = {"testable": testable, "why": None if testable else c.why,
                     "samples": int((c.rows & diag).sum()), "of": n_diag, **c.extra}
        can[name] = c.rows
        if det.data_only:
            data_only.append(name)

    tested = [can[c] for c in can if c not in data_only]
    none = diag & ~np.any(tested, axis=0) if tested else diag.copy()
    only = " and ".join(DETECTORS.get(c).roman or c for c in data_only)
    out["untested"] = {"n": int(none.sum()), "of": n_diag, "ids": [ids[i] for i in np.flatnonzero(none)[:20]],
                       "why": (f"no cause but {only} (a test of the data alone) had the inputs to test them"
                               if only else "no cause had the inputs to test them")}
    out["warnings"] = _coverage_warnings(cfg, ctx.has_base, out, covs, sched, has, pool, diag, data_only)
    return out


def _coverage_warnings(cfg, has_base: bool, cov: dict, covs: dict, sched: dict | None, has, pool, diag,
                       data_only: list[str]) -> list[str]:
    """The coverage block's warnings: plain sentences, the most general first, then each cause's own."""
    from ilp_ray.diagnosis.registry import DETECTORS, by_roman

    w: list[str] = []
    numbered = list(by_roman(list(covs)).values())  # I before II
    base_off = [named(c) for c in numbered + [c for c in covs if c not in numbered]
                if DETECTORS.get(c).needs_base and not has_base]
    if base_off:
        w.append(f"No base model was scored: {' and '.join(base_off)} cannot fire on this run.")
    if sched is None:
        clauses = [c.without_trajectory for c in covs.values() if c.without_trajectory]
        if clauses:
            w.append(f"No training trajectory was given: {', and '.join(clauses)}.")
    else:
        k, m = int((has & pool).sum()), int(pool.sum())
        clauses = [c.partial_trajectory.format(rest=m - k) for c in covs.values() if c.partial_trajectory]
        if k < m and clauses:
            who = "diagnosed samples" if diag.any() else "samples"
            w.append(f"Only {k} of {m} {who} ({_share(k, m):.0%}) have a trajectory (trajectory.max_items "
                     f"samples the training set): {', and '.join(clauses)}.")
    for c in covs.values():
        w.extend(c.warnings)
    u = cov["untested"]
    if u["n"]:
        only = [DETECTORS.get(c).roman or c for c in data_only]
        but, outcome = (f" but {' and '.join(only)}", f"{' or '.join(only)} or ") if only else ("", "")
        w.append(f"{u['n']} of {u['of']} diagnosed sample(s) could not be tested for any cause{but} for lack "
                 f"of inputs: they can only come out {outcome}unattributed.")
    return w


def _share(k, m) -> float:
    return float(k) / float(m) if m else 0.0


def coverage_metrics(cov: dict[str, Any]) -> dict[str, float]:
    """The numeric part of ``coverage`` as MLflow metrics (``diagnosis.coverage.*``)."""
    from ilp_ray.diagnosis.registry import decision_order

    t = cov.get("trajectory", {})
    m = {"diagnosis.coverage.warnings": float(len(cov.get("warnings", []))),
         "diagnosis.coverage.untested": float(cov.get("untested", {}).get("n", 0)),
         "diagnosis.coverage.trajectory_share": float(t.get("share", 0.0)),
         "diagnosis.coverage.trajectory_share_unlearned": float(t.get("unlearned_share", 0.0))}
    if "evaluations" in t:
        m["diagnosis.coverage.evaluations"] = float(t["evaluations"])
    for name in decision_order():
        if name in cov:
            m[f"diagnosis.coverage.{name}.testable"] = float(cov[name]["testable"])
            m[f"diagnosis.coverage.{name}.samples"] = float(cov[name]["samples"])
    return m


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


def _track(tracker, cfg: DiagnosisConfig, run_dir: Path, out: Path, ct: dict[str, Any],
           cov: dict[str, Any] | None = None) -> None:
    from ilp_ray.track import flatten, make_tracker

    def log(t) -> None:
        t.log_metrics({**metric_view(ct), **(coverage_metrics(cov) if cov else {})})
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
    from rich.markup import escape
    from rich.table import Table

    from ilp_ray.diagnosis.registry import label

    ct = result.cause_table
    t = Table(title=f"Diagnosis: {ct['n_diagnosed']} of {ct['n_unlearned']} unlearned samples "
                    f"({ct['n_samples']} in all)")
    t.add_column("cause")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    for s in ct["per_subset"]:
        t.add_column(s, justify="right")
    for cause, share in ct["shares"].items():
        t.add_row(label(cause), str(ct["counts"][cause]), f"{share:.1%}",
                  *[f"{b['shares'][cause]:.0%}" for b in ct["per_subset"].values()])
    console = Console()
    console.print(t)
    for w in (result.summaries.get("coverage") or {}).get("warnings", []):
        console.print(f"[yellow]warning: {escape(w)}[/]")
    console.print(f"table:  {result.files['diagnosis']}\nreport: {result.report}")
