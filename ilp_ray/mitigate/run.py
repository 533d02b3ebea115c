"""``ilp mitigate run``: every planned arm trains, is re-audited on the same MC items, and is compared.

Per arm, in stages: ``cpt`` (the CPT arms: ``run_training`` on the D_k / D_general mixture),
``sft`` (``run_training`` with the arm's SFT config; from the CPT checkpoint where there is one),
``audit`` (``run_audit`` on the original audit's data and settings, its ``mc/`` items copied in, so
every sample is asked the very same question; the base model's scores are copied too), and
``general`` (the general MC set scored with the arm's model). Then ``compare_study``.

Resumable at every level: a finished arm (its ``result.json`` for this plan) is never rerun; a
killed arm resumes from its last training checkpoint and its scored audit shards.

MLflow: one parent run per study, a child run per arm (tags ``mlflow.parentRunId``, ``ilp.arm``,
``ilp.audit_dir``, ``ilp.checkpoint_id`` / ``ilp.checkpoint_path``, ``ilp.cpt_checkpoint``) with the
same metric names for every arm (``compare.ARM_METRICS``); the arm's training and re-audit runs nest
under its child run, and every run logs its data as MLflow dataset inputs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilp_ray.errors import ConfigError
from ilp_ray.mitigate.arms import CPT_CHECKPOINT
from ilp_ray.mitigate.plan import PLAN, deep_update, load_plan
from ilp_ray.storage import fingerprint, write_json_atomic

STUDY_RUN = "ilp_study.json"


@dataclass
class StudyResult:
    study: Path
    arms: dict[str, dict]        # arm → result.json
    compare: dict[str, Any] | None
    run_id: str | None


def _say(msg: str, progress: bool) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold magenta]mitigate[/] {msg}")


def _tracker(plan: dict, study: Path, marker: Path, name: str, tags: dict):
    """The MLflow run recorded in ``marker`` (a resumed study logs into it), or a new one."""
    from ilp_ray.track import make_tracker

    t = plan["tracking"]
    tracker = make_tracker(t["enabled"], t["uri"], t["experiment"], study)
    if not t["enabled"]:
        return tracker
    if marker.is_file():
        tracker.attach(json.loads(marker.read_text())["run_id"])
    else:
        tracker.start(name, tags=tags)
        write_json_atomic({"run_id": tracker.run_id}, marker)
    return tracker


def run_study(study_dir: str | Path, arms: list[str] | None = None, progress: bool = True) -> StudyResult:
    """Run the planned arms of the study at ``study_dir`` (all of them when ``arms`` is None).

    Raises:
        ConfigError: no or a bad plan, an arm not in it; checked for every arm before any training.
    """
    from ilp_ray.mitigate.compare import compare_study
    from ilp_ray.track import flatten

    study = Path(study_dir).expanduser().resolve()
    plan = load_plan(study / PLAN)
    names = list(arms) if arms else [a for a, p in plan["arms"].items() if not p.get("skipped")]
    missing = [a for a in names if a not in plan["arms"]]
    if missing:
        raise ConfigError(f"arms {missing} are not in the plan (planned: {list(plan['arms'])}); plan them first",
                          file=str(study / PLAN), field="arms")
    _check_general(plan)
    parent = _tracker(plan, study, study / STUDY_RUN, f"study-{Path(plan['audit']).name}",
                      {"ilp.kind": "mitigation-study", "ilp.audit_dir": plan["audit"], **_audit_run(plan)})
    if not (study / ".params").is_file():
        parent.log_params(flatten({"audit": plan["audit"], "arms": ",".join(names), "base_model": plan["base_model"],
                                   "sft_model": plan["sft_model"]}))
        from ilp_ray.data import read_sft
        from ilp_ray.records import records_frame

        ac = plan["audit_config"]
        parent.log_dataset(records_frame(read_sft(ac["data"], ac.get("data_format", "auto"))), ac["data"], "sft",
                           "evaluation")
        (study / ".params").write_text("logged\n")
    results: dict[str, dict] = {}
    general_before = _general(plan, plan["sft_model"], study / "general" / "original.jsonl")
    try:
        for k, name in enumerate(names, 1):
            arm = plan["arms"][name]
            if arm.get("skipped"):
                _say(f"[{k}/{len(names)}] {name}: skipped ({arm['skipped']})", progress)
                continue
            results[name] = run_arm(plan, study, name, parent, general_before, f"[{k}/{len(names)}]", progress)
        cmp = compare_study(study) if results or any((study / "arms" / a / "result.json").is_file()
                                                       for a in plan["arms"]) else None
        if cmp is not None:
            parent.log_artifact(study / "compare" / "recovery.json", "compare")
            parent.log_artifact(study / "compare" / "report.html", "compare")
            parent.log_artifact(study / "compare" / "figures", "compare/figures")
            for a, f in cmp["figures"].items():
                parent.log_metrics({f"{a}.recovered_share": f["recovered_share"], f"{a}.collateral": f["collateral"]})
    except BaseException:
        parent.end("FAILED")
        raise
    parent.end("FINISHED")
    return StudyResult(study, results, cmp, parent.run_id)


def _check_general(plan: dict) -> None:
    if plan.get("general_mc"):
        from ilp_ray.data.items import read_mc_items

        read_mc_items(Path(plan["general_mc"]))  # a bad file fails now, before any training


def _general(plan: dict, model: str, out: Path) -> float | None:
    """Accuracy of ``model`` on the general MC set (cached beside ``out``, keyed by the set's
    content and format), or None without one."""
    if not plan.get("general_mc"):
        return None
    import hashlib

    key = hashlib.sha256(Path(plan["general_mc"]).read_bytes() + plan.get("general_format", "").encode()).hexdigest()
    out = out.with_name(f"{out.stem}-{key[:12]}{out.suffix}")
    if not out.is_file():
        from ilp_ray.config import ScoringConfig
        from ilp_ray.score_cli import score_file

        score_file(model, Path(plan["general_mc"]), out, ScoringConfig(format=plan.get("general_format", "lm-eval")),
                   threads=1)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return sum(bool(r["correct"]) for r in rows) / len(rows) if rows else None


def run_arm(plan: dict, study: Path, name: str, parent, general_before: float | None, tag: str,
            progress: bool) -> dict:
    """Train, re-audit and score one arm; returns (and writes) its ``result.json``."""
    from ilp_ray.mitigate.compare import arm_figures, flat_metrics, transitions
    from ilp_ray.track import flatten
    from ilp_ray.train.config import CptTrainConfig, SftTrainConfig
    from ilp_ray.train.run import run_training

    arm = plan["arms"][name]
    d = study / "arms" / name
    fp = fingerprint([arm, plan["audit_config"]])
    res_path = d / "result.json"
    if res_path.is_file() and json.loads(res_path.read_text()).get("plan_fingerprint") == fp:
        _say(f"{tag} {name}: finished earlier; not rerun", progress)
        return json.loads(res_path.read_text())
    stamp = d / "arm_plan.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("plan_fingerprint") != fp:
        # The plan of this arm changed (edited or re-planned): its runs answer another question.
        _say(f"{tag} {name}: the plan changed since this arm started; starting it over", progress)
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"plan_fingerprint": fp, "arm": arm}, stamp)
    child = _tracker(plan, study, d / "ilp_arm_run.json", name,
                     {"mlflow.parentRunId": parent.run_id or "", "ilp.kind": "mitigation-arm", "ilp.arm": name,
                      "ilp.cause": str(arm.get("cause") or "-"), "ilp.audit_dir": plan["audit"], **_audit_run(plan)})
    sub_tags = {"mlflow.parentRunId": child.run_id or "", "ilp.arm": name}
    try:
        cpt_ckpt = None
        training = arm["training"]
        if training.get("cpt"):
            _say(f"{tag} {name}: cpt (Ray Train)", progress)
            cfg = CptTrainConfig.model_validate(_with_tags(training["cpt"], sub_tags))
            cpt = run_training(cfg)
            cpt_ckpt = str(cpt.checkpoint)
            child.set_tags({"ilp.cpt_checkpoint": cpt_ckpt, "ilp.cpt_checkpoint_id": cpt.checkpoint_id})
        sft_cfg = training["sft"]
        if (sft_cfg.get("model") or {}).get("spec") == CPT_CHECKPOINT:
            if cpt_ckpt is None:
                raise ConfigError(f"arm {name}'s SFT starts from {CPT_CHECKPOINT} but the arm has no CPT stage",
                                  field=f"arms.{name}.training.sft.model")
            sft_cfg = deep_update(sft_cfg, {"model": {"spec": cpt_ckpt}})
        _say(f"{tag} {name}: sft (Ray Train)", progress)
        scfg = SftTrainConfig.model_validate(_with_tags(sft_cfg, sub_tags))
        sft = run_training(scfg)
        child.set_tags({"ilp.checkpoint_id": sft.checkpoint_id, "ilp.checkpoint_path": str(sft.checkpoint)})
        _say(f"{tag} {name}: re-audit on the original MC items", progress)
        audit = reaudit(plan, d / "audit", str(sft.checkpoint), name, sub_tags)
        general = None
        if plan.get("general_mc"):
            _say(f"{tag} {name}: general MC set", progress)
            after = _general(plan, str(sft.checkpoint), d / "general.jsonl")
            general = {"before": general_before, "after": after}
        import pandas as pd

        from ilp_ray.storage import load_verdicts

        before = load_verdicts(Path(plan["audit"]))
        diagnosis = pd.read_parquet(Path(plan["audit"]) / "diagnosis" / "diagnosis.parquet")
        tr = transitions(before, diagnosis, audit.verdicts, set(arm.get("targets") or []))
        fig = arm_figures(tr, general)
        result = {"arm": name, "cause": arm.get("cause"), "plan_fingerprint": fp, "figures": fig,
                  "general": general, "sft_checkpoint": str(sft.checkpoint), "sft_checkpoint_id": sft.checkpoint_id,
                  "cpt_checkpoint": cpt_ckpt, "sft_metrics": sft.metrics, "audit_dir": str(audit.run_dir),
                  "audit_run_id": audit.run_id, "sft_run_id": sft.run_id}
        if not (d / ".params").is_file():
            child.log_params(flatten({"arm": name, "targets": len(arm.get("targets") or []),
                                      "data": json.dumps(arm.get("data"), default=str)[:5000],
                                      "sft": scfg.model_dump(mode="json")}))
            (d / ".params").write_text("logged\n")
        child.log_metrics(flat_metrics(fig), keep_nan=True)
        child.set_tags({"ilp.audit_run_id": audit.run_id or "", "ilp.sft_run_id": sft.run_id or ""})
        from ilp_ray.data import read_sft
        from ilp_ray.records import records_frame

        recs = read_sft(scfg.data, scfg.data_format)
        drop = set(scfg.data_exclude)
        child.log_dataset(records_frame([r for r in recs if r.id not in drop]), scfg.data, "sft", "training")
        write_json_atomic(result, res_path)
        child.log_artifact(res_path, "result")
    except BaseException:
        child.end("FAILED")
        raise
    child.end("FINISHED")
    _say(f"{tag} {name}: recovered {fig['recovered']}/{fig['unlearned_before']}, lost {fig['lost']}", progress)
    return result


def _audit_run(plan: dict) -> dict:
    """``ilp.source_audit_run_id``: the original audit's MLflow run (its ``ilp_run.json``), if any."""
    try:
        return {"ilp.source_audit_run_id": json.loads((Path(plan["audit"]) / "ilp_run.json").read_text())["mlflow_run_id"]}
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return {}


def _with_tags(cfg: dict, tags: dict) -> dict:
    t = dict(cfg.get("tracking") or {})
    t["tags"] = {**(t.get("tags") or {}), **tags}
    return {**cfg, "tracking": t}


def reaudit(plan: dict, out: Path, sft_model: str, name: str, tags: dict):
    """The original audit's config on ``sft_model``, its MC items (and base scores) copied in first,
    without evidence and diagnosis: the arm's verdicts on the very same questions."""
    from ilp_ray.config import AuditConfig
    from ilp_ray.pipeline.audit import run_audit

    src = Path(plan["audit"])
    out.mkdir(parents=True, exist_ok=True)
    for item in sorted((src / "mc").glob("items-*.parquet")):
        if not (out / "mc" / item.name).is_file():
            (out / "mc").mkdir(exist_ok=True)
            shutil.copy2(item, out / "mc" / item.name)
    if plan.get("reaudit_base", True):
        for folder in sorted((src / "scores").glob("base-*")):
            if folder.is_dir() and not (out / "scores" / folder.name).exists():
                shutil.copytree(folder, out / "scores" / folder.name)
    t = plan["tracking"]
    cfg = deep_update(plan["audit_config"], {
        "run_dir": str(out), "sft_model": sft_model, "name": f"{name}-reaudit",
        "evidence": {"enabled": False}, "diagnose": {"enabled": False},
        "tracking": {"enabled": t["enabled"], "uri": t["uri"], "experiment": t["experiment"], "tags": tags}})
    result = run_audit(AuditConfig.model_validate(cfg), progress=False)
    if not result.summary.get("mc_reused"):
        raise ConfigError(f"the re-audit built new MC items instead of reusing the audit's ({src / 'mc'}): "
                          "the audit's data or MC settings changed since it ran", file=str(out))
    return result
