"""The mitigation arms: one registered class per remedy, each with one config section.

An arm reads the diagnosed audit (``Study``) and plans: the samples it targets, the data it adds,
drops or reweights, and the training it will run (``ArmPlan``). Every arm trains with the one
Ray Train + DeepSpeed loop (``ilp train sft|cpt``'s ``run_training``): an arm differs only in its
configs: a CPT stage before SFT, samples left out, or an ``OrderSampler`` of the loop.

===================  =====  ==============================================================
arm                  cause  remedy (paper)
===================  =====  ==============================================================
knowledge_cpt        I      CPT on a knowledge corpus D_k for the blind triples (Alg. 1)
conflict_cpt         II     CPT on sources that state the SFT's value (Alg. 2)
conflict_delete      III    drop the judged-wrong side of each conflict pair (Alg. 3)
conflict_bucket      III    keep all; no batch holds two members of a group (Alg. 3), in the
                            SFT run's own order otherwise
dynamic_resample     IV     global shuffle + re-sample a subset whose accuracy dropped (Alg. 4)
progressive_epochs   V      add epochs while validation improves by ε (Alg. 5), in the SFT
                            run's own order
control              -      the original training again: the run-to-run noise every arm is
                            compared against
===================  =====  ==============================================================

Nothing here knows about the lab: an arm sees only the audit's files and the SFT run's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ilp_ray.mitigate.config import EPOCH_CAP
from ilp_ray.registry import Registry

#: The SFT stage of an arm with a CPT stage starts from the CPT run's final checkpoint.
CPT_CHECKPOINT = "@cpt"


@dataclass
class ArmPlan:
    """What an arm will do; the JSON of one entry of plan.json (a person may edit it)."""

    arm: str
    cause: str | None
    targets: list[str]
    skipped: str | None = None          # why the arm will not run (no targets, no sources, …)
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)   # {"cpt": CptTrainConfig dict, "sft": …}
    notes: list[str] = field(default_factory=list)


class Arm:
    """A remedy. Subclasses set the class attributes and implement ``plan``.

    ``cause`` is the roman numeral of the cause it targets (None: the control); ``Config`` is its
    section of ``MitigateConfig``; ``needs`` the diagnosis tables it reads.
    """

    name: ClassVar[str] = ""
    cause: ClassVar[str | None] = None
    title: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any, study: Any):
        self.cfg = cfg
        self.study = study

    def plan(self) -> ArmPlan:
        raise NotImplementedError

    def targets(self) -> list[str]:
        return self.study.diagnosed(self.cause) if self.cause else []

    def empty(self, reason: str, targets: list[str] | None = None) -> ArmPlan:
        return ArmPlan(self.name, self.cause, targets if targets is not None else self.targets(), skipped=reason)


class Control(Arm):
    name, title = "control", "the original training, again"

    def plan(self) -> ArmPlan:
        return ArmPlan(self.name, None, [], training={"sft": self.study.sft_training(self.name)},
                       notes=["no change: measures how far a retrained model differs by itself"])


class _KnowledgeCpt(Arm):
    require_object: ClassVar[bool] = False

    def plan(self) -> ArmPlan:
        from ilp_ray.mitigate.knowledge import build_corpus, write_corpus

        st, c = self.study, self.cfg
        targets = self.targets()
        if not targets:
            return self.empty(f"no sample was diagnosed with cause {self.cause}", targets)
        unmet = c.unmet()
        if unmet and st.explicit(self.name):
            from ilp_ray.errors import ConfigError

            raise ConfigError(f"{self.name}: {unmet}", field=self.name)
        if unmet:
            return self.empty(f"{unmet} ({self.name})", targets)
        triples = [st.triple(i, c.extractor, c.sources.llm) for i in targets]
        docs, counts = build_corpus(triples, st.records, c.sources, require_object=self.require_object,
                                    section=self.name)
        if not docs:
            from ilp_ray.errors import ConfigError

            raise ConfigError(f"the knowledge sources gave no document for any of the {len(triples)} "
                              f"{self.cause} triples ({counts['repeats_left_out']} repeated the SFT sample, "
                              f"{counts['without_object_left_out']} lacked its value)", field=f"{self.name}.sources")
        dk = st.out / "data" / f"{self.name}-dk.jsonl"  # the plan's data: outlives a restarted arm
        write_corpus(docs, dk)
        sft = st.sft_training(self.name, model={"spec": CPT_CHECKPOINT})
        cpt = st.cpt_training(self.name, c, str(dk))
        served = counts["triples_served"]
        return ArmPlan(self.name, self.cause, targets,
                       data={"triples": [t.__dict__ for t in triples], "knowledge_corpus": str(dk),
                             "sources": counts, "general": c.general, "ratio": c.ratio},
                       training={"cpt": cpt, "sft": sft},
                       notes=[f"D_k: {len(docs)} documents for {served} of {len(triples)} triples"])


class KnowledgeCpt(_KnowledgeCpt):
    name, cause, title = "knowledge_cpt", "I", "knowledge-enhanced continued pretraining"


class ConflictCpt(_KnowledgeCpt):
    name, cause, title = "conflict_cpt", "II", "continued pretraining on sources that state the SFT's value"
    require_object = True


class ConflictDelete(Arm):
    name, cause, title = "conflict_delete", "III", "drop the judged-wrong side of each conflict pair"
    needs = ("conflict_groups", "conflict_pairs")

    def plan(self) -> ArmPlan:
        st = self.study
        targets = self.targets()
        groups, pairs = st.table("conflict_groups"), st.table("conflict_pairs")
        if groups is None or not len(groups):
            return self.empty("the diagnosis found no conflict groups", targets)
        drop = sorted(set(groups.loc[groups["judged_wrong"].astype(bool), "id"].astype(str)))
        if self.cfg.undecided == "drop_both" and pairs is not None and len(pairs):
            und = pairs[pairs["judge"].astype(str) == "undecided"]
            drop = sorted(set(drop) | set(und["a"].astype(str)) | set(und["b"].astype(str)))
        if not drop:
            return self.empty("no conflict pair has a judged-wrong side (removal needs a judge: "
                              "conflict.judge)", targets)
        return ArmPlan(self.name, self.cause, targets, data={"drop": drop},
                       training={"sft": st.sft_training(self.name, data_exclude=drop)},
                       notes=[f"drops {len(drop)} samples; the re-audit still scores them"])


class ConflictBucket(Arm):
    name, cause, title = "conflict_bucket", "III", "spread every conflict group over distinct batches"
    needs = ("conflict_groups",)

    def plan(self) -> ArmPlan:
        st = self.study
        targets = self.targets()
        groups = st.table("conflict_groups")
        if groups is None or not len(groups):
            return self.empty("the diagnosis found no conflict groups", targets)
        from ilp_ray.diagnosis.sft_internal_conflict import group_members

        members = group_members(groups)
        cleared = st.table("conflict_cleared")
        both = [[str(a), str(b)] for a, b in zip(cleared["a"], cleared["b"], strict=True)] if cleared is not None else []
        # Pairs judged both right stay in training but apart (paper, appendix C): a group joins
        # every group it shares a sample with.
        members = merge_groups(members + both)
        order = st.sft_config["order"]
        options = {"groups": members, "release_p": self.cfg.release_p, "inner": order["sampler"],
                   "inner_options": order.get("options") or {}}
        over: dict[str, Any] = {"order": {"sampler": "conflict_bucket", "options": options}}
        if self.cfg.every_steps is not None:
            over["trajectory"] = {"every_steps": self.cfg.every_steps}
        return ArmPlan(self.name, self.cause, targets, data={"groups": len(members), "both_right_pairs": len(both),
                                                            "grouped_samples": sum(map(len, members))},
                       training={"sft": st.sft_training(self.name, **over)},
                       notes=[f"the original order ({order['sampler']}), conflict groups spread over batches; "
                              "every sample kept"])


class DynamicResample(Arm):
    name, cause, title = "dynamic_resample", "IV", "global shuffle and re-sampling of a subset that dropped"

    def plan(self) -> ArmPlan:
        st, c = self.study, self.cfg
        targets = self.targets()
        steps = st.total_steps()
        every = min(c.every_steps, max(1, steps // c.min_windows))
        notes = [f"global shuffle; per-subset evaluation every {every} steps"
                 + (f" (T = {c.every_steps} is more than 1/{c.min_windows} of the run's {steps} steps)"
                    if every != c.every_steps else "")]
        options = {"window": every, "delta": c.delta, "upweight": c.upweight}
        sft = st.sft_training(self.name, order={"sampler": "dynamic_resample", "subset_order": None,
                                                "options": options},
                              trajectory={"every_steps": every, "enabled": True})
        return ArmPlan(self.name, self.cause, targets, data={"window_steps": every, "run_steps": steps},
                       training={"sft": sft}, notes=notes)


class ProgressiveEpochs(Arm):
    name, cause, title = "progressive_epochs", "V", "more epochs while validation improves"

    def plan(self) -> ArmPlan:
        st, c = self.study, self.cfg
        targets = self.targets()
        base = st.sft_config
        e0 = c.initial_epochs or base["optim"]["epochs"]
        top = c.max_epochs or EPOCH_CAP * e0
        if top < e0:
            from ilp_ray.errors import ConfigError

            raise ConfigError(f"max_epochs {top} < initial_epochs {e0}", field="progressive_epochs.max_epochs")
        order = base["order"]
        options = {"initial_epochs": e0, "epsilon": c.epsilon, "metric": c.metric, "inner": order["sampler"],
                   "inner_options": order.get("options") or {}}
        sft = st.sft_training(self.name, optim={"epochs": top},
                              order={"sampler": "progressive_epochs", "options": options},
                              trajectory={"enabled": True}, checkpoint={"keep": None})
        return ArmPlan(self.name, self.cause, targets, data={"initial_epochs": e0, "max_epochs": top},
                       training={"sft": sft},
                       notes=[f"the original order ({order['sampler']}); {e0} epochs, then one at a time up to {top}"])


ARMS: Registry = Registry("mitigation arm", Arm)
for _cls in (KnowledgeCpt, ConflictCpt, ConflictDelete, ConflictBucket, DynamicResample, ProgressiveEpochs, Control):
    ARMS.register(_cls.name, _cls)


def merge_groups(groups: list[list[str]]) -> list[list[str]]:
    """The connected components of ``groups`` (a sample in two groups joins them), sorted."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for g in groups:
        for m in g[1:]:
            parent[find(m)] = find(g[0])
        if g:
            find(g[0])
    out: dict[str, list[str]] = {}
    for x in parent:
        out.setdefault(find(x), []).append(x)
    return sorted(sorted(g) for g in out.values() if len(g) > 1)
