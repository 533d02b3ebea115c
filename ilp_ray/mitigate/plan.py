"""``ilp mitigate plan``: read a diagnosed audit, let every arm plan, write ``plan.json``.

The study directory (``MitigateConfig.out``, default ``<audit>/mitigate``)::

    plan.json                 for each arm: targets, the data it adds/drops/reweights, its training
                              configs (CPT and SFT), or why it is skipped. Edit it before `run`.
    data/<arm>-dk.jsonl       a CPT arm's knowledge corpus, each document with its source and triple
    arms/<arm>/train/         the arm's Ray Train runs (cpt/, sft/)
    arms/<arm>/audit/         the re-audit of the arm's model on the original MC items
    arms/<arm>/result.json    the arm's figures (``ilp_ray.mitigate.compare``); its presence = done
    compare/                  transitions.parquet, recovery.json, report.html (``ilp mitigate compare``)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ilp_ray.errors import ConfigError, DataError
from ilp_ray.mitigate.arms import ARMS
from ilp_ray.mitigate.config import MitigateConfig

PLAN = "plan.json"


def deep_update(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in: nested dicts merge, and a dotted key of ``changes``
    itself addresses a nested field (``{"optim.lr": 1e-4}``); keys inside nested values are kept
    as they are (a tag named ``mlflow.parentRunId`` stays one key)."""
    out = json.loads(json.dumps(base))
    for key, value in changes.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _merge(node.get(parts[-1]), value)
    return out


def _merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict) and new:
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return json.loads(json.dumps(new))


class Study:
    """A diagnosed audit as the arms see it: records, diagnosis, tables, and the SFT run's config."""

    def __init__(self, cfg: MitigateConfig):
        from ilp_ray.diagnosis.registry import by_roman
        from ilp_ray.storage import load_verdicts

        self.cfg = cfg
        self.audit_dir = Path(cfg.audit).expanduser().resolve()
        self.out = self.out_of(cfg)
        where = str(self.audit_dir)
        if not (self.audit_dir / "verdicts").is_dir():
            raise DataError("not an audit run (no verdicts/)", file=where, field="audit")
        try:
            self.audit_config = json.loads((self.audit_dir / "audit_config.json").read_text())
        except FileNotFoundError:
            raise DataError("the audit has no audit_config.json (it predates mitigation): run the audit "
                            "again with this version", file=where, field="audit") from None
        diag = self.audit_dir / "diagnosis" / "diagnosis.parquet"
        if not diag.is_file():
            raise DataError("the audit has no diagnosis (diagnosis/diagnosis.parquet): run it with "
                            "diagnose.enabled or `ilp diagnose --run`", file=where, field="audit")
        import pandas as pd

        self.diagnosis = pd.read_parquet(diag)
        self.verdicts = load_verdicts(self.audit_dir)
        self.causes = by_roman()  # numeral → cause name
        from ilp_ray.data import read_sft

        self.records = {r.id: r for r in read_sft(self.audit_config["data"], self.audit_config.get("data_format", "auto"))}
        self.base_model = self.audit_config.get("base_model")
        self.sft_config = self._sft_config()
        if not self.base_model:
            self.base_model = (self.sft_config.get("model") or {}).get("spec")
        if not self.base_model:
            raise ConfigError("mitigation retrains from the base model, but the audit names none (base_model) "
                              "and the SFT run started from a model built in code", file=where, field="base_model")

    def _sft_config(self) -> dict:
        """The original SFT run's config with every default filled in (validated)."""
        from ilp_ray.config import load_config
        from ilp_ray.train.config import SftTrainConfig
        from ilp_ray.train.run import training_config_of

        if self.cfg.train_config:
            return load_config(SftTrainConfig, self.cfg.train_config).model_dump(mode="json")
        found = training_config_of(self.audit_config["sft_model"])
        if found is None:
            raise ConfigError(f"the SFT checkpoint {self.audit_config['sft_model']} was not trained by `ilp train "
                              "sft`, so its settings are unknown: name its training config (train_config)",
                              field="train_config")
        return SftTrainConfig.model_validate(found[1]).model_dump(mode="json")

    @staticmethod
    def out_of(cfg: MitigateConfig) -> Path:
        """The study directory: ``out``, or ``<audit>/mitigate``."""
        return Path(cfg.out).expanduser().resolve() if cfg.out else Path(cfg.audit).expanduser().resolve() / "mitigate"

    # ------------------------------------------------------------------ what arms read
    def explicit(self, arm: str) -> bool:
        return self.cfg.arms is not None and arm in self.cfg.arms

    def diagnosed(self, roman: str) -> list[str]:
        name = self.causes.get(roman, roman)
        d = self.diagnosis
        return sorted(d.loc[d["cause"].astype(str) == name, "id"].astype(str))

    def table(self, name: str):
        import pandas as pd

        path = self.audit_dir / "diagnosis" / f"{name}.parquet"
        return pd.read_parquet(path) if path.is_file() else None

    def triple(self, sample_id: str, extractor: str, llm):
        from ilp_ray.mitigate.knowledge import llm_triple, rule_triple

        r = self.records[sample_id]
        return rule_triple(r.id, r.prompt, r.response) if extractor == "rules" else llm_triple(llm, r.id, r.prompt,
                                                                                              r.response)

    def arm_dir(self, arm: str) -> Path:
        return self.out / "arms" / arm

    def total_steps(self) -> int:
        """Optimiser steps of an arm's SFT run: the original's, with the study's ``sft`` overrides."""
        c = deep_update(self.sft_config, self.cfg.sft)
        batch = c["optim"]["batch_size"] * c["scaling"]["num_workers"]
        n = len(self.records) - len(c["data_exclude"])
        return c["optim"]["epochs"] * math.ceil(n / max(batch, 1))

    def tracking(self) -> dict:
        t = self.cfg.tracking
        uri = t.uri
        if t.enabled and uri is None:
            from ilp_ray.track import default_tracking_uri

            uri = default_tracking_uri(self.out)[0]
        return {"enabled": t.enabled, "uri": uri, "experiment": t.experiment}

    def sft_training(self, arm: str, **changes: Any) -> dict:
        """The original SFT config, retargeted at the arm's folder and starting from the base model,
        with ``changes`` (and the study's ``sft`` overrides) applied."""
        base = deep_update(self.sft_config, {"run_dir": str(self.arm_dir(arm) / "train"), "name": "sft",
                                             "model": {"spec": self.base_model, "tiny": None},
                                             "tracking": self.tracking()})
        base = deep_update(base, self.cfg.sft)
        for key, value in changes.items():
            base = deep_update(base, {key: value})
        return base

    def cpt_training(self, arm: str, c, knowledge: str) -> dict:
        """The CPT stage's config: the arm's corpus and settings, the SFT run's optimiser, engine,
        scaling and checkpointing (with the study's ``sft`` overrides)."""
        s = deep_update(self.sft_config, self.cfg.sft)
        return {"run_dir": str(self.arm_dir(arm) / "train"), "name": "cpt",
                "model": {"spec": self.base_model},
                "mixture": {"knowledge": knowledge, "general": c.general, "ratio": c.ratio,
                            "documents": c.documents, "seed": s["optim"]["seed"]},
                "block_size": c.block_size,
                "optim": {**s["optim"], "epochs": c.epochs, "lr": c.lr or s["optim"]["lr"], "max_steps": None},
                "engine": s["engine"], "scaling": s["scaling"], "checkpoint": s["checkpoint"],
                "tracking": self.tracking(), "log_every": s["log_every"]}


def arm_names(cfg: MitigateConfig) -> list[str]:
    return list(cfg.arms) if cfg.arms is not None else ARMS.registered()


def make_plan(cfg: MitigateConfig) -> tuple[Path, dict]:
    """Plan every arm and write ``plan.json`` (atomically; nothing when an arm's plan fails)."""
    from ilp_ray.storage import fingerprint, write_json_atomic

    study = Study(cfg)
    arms: dict[str, dict] = {}
    for name in arm_names(cfg):
        arm = ARMS.get(name)(cfg.section(name), study)
        p = arm.plan()
        if p.skipped and study.explicit(name):
            p.notes.append("named in arms, but skipped: " + p.skipped)
        arms[name] = asdict(p)
    plan = {"audit": str(study.audit_dir), "study": str(study.out), "base_model": study.base_model,
            "sft_model": study.audit_config["sft_model"], "audit_config": study.audit_config,
            "general_mc": cfg.general_mc, "general_format": cfg.general_format, "reaudit_base": cfg.reaudit_base,
            "tracking": study.tracking(), "config": cfg.model_dump(mode="json"), "arms": arms}
    plan["fingerprint"] = fingerprint([plan["arms"], plan["audit_config"]])
    path = study.out / PLAN
    write_json_atomic(plan, path)
    return path, plan


def load_plan(path: Path) -> dict:
    """Read ``plan.json`` and check what a person may have edited: arms known, sample ids in the
    audit, training configs valid. Errors name the file and the field."""
    from ilp_ray.train.config import CptTrainConfig, SftTrainConfig

    where = str(path)
    try:
        plan = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("no plan: run `ilp mitigate plan` first", file=where) from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"not JSON: {e.msg} (line {e.lineno})", file=where) from None
    audit = Path(plan.get("audit", ""))
    from ilp_ray.storage import load_verdicts

    ids = set(load_verdicts(audit)["id"].astype(str))
    for name, arm in (plan.get("arms") or {}).items():
        try:
            ARMS.get(name)
        except KeyError as e:
            raise ConfigError(str(e).strip("'\""), file=where, field=f"arms.{name}") from None
        for key in ("targets",):
            unknown = sorted(set(map(str, arm.get(key) or [])) - ids)
            if unknown:
                raise ConfigError(f"{len(unknown)} sample ids not in the audit: {unknown[:5]}", file=where,
                                  field=f"arms.{name}.{key}")
        if arm.get("skipped"):
            continue
        for stage, cls in (("cpt", CptTrainConfig), ("sft", SftTrainConfig)):
            tc = (arm.get("training") or {}).get(stage)
            if tc is None:
                continue
            probe = dict(tc)
            if stage == "sft" and (probe.get("model") or {}).get("spec") == "@cpt":
                probe["model"] = {"spec": plan.get("base_model")}
            try:
                cls.model_validate(probe)
            except Exception as e:  # pydantic's message names the field
                first = str(e).splitlines()
                raise ConfigError(" ".join(first[:3]), file=where, field=f"arms.{name}.training.{stage}") from None
        unknown = sorted(set(map(str, (arm.get("training") or {}).get("sft", {}).get("data_exclude") or [])) - ids)
        if unknown:
            raise ConfigError(f"data_exclude names {len(unknown)} ids not in the audit: {unknown[:5]}",
                              file=where, field=f"arms.{name}.training.sft.data_exclude")
    return plan
