"""``DiagnosisConfig``: the thresholds of the five causes and how the diagnosis runs (pydantic only).

Inclusive/exclusive conventions, stated once (tests check each boundary):

- prompt similarity: a pair is a candidate at cosine ``>= theta`` (inclusive);
- responses disagree at cosine ``< theta_response`` (exclusive: equal counts as agreeing);
- II fires at base confidence in a wrong option ``>= tau_c``; JSD supports it at ``> 0.3`` (paper: ">");
- I fires at base pass@10 ``< 0.2`` and BoN-5 accuracy ``< 0.1`` (paper: "<");
- IV/V call a sample learned at an evaluation when ``p_correct >= tau``;
- V's trajectory is rising at slope ``> min_slope``; its loss is falling at slope ``< -min_loss_drop``;
- rare at density percentile ``<= rare_percentile``; long at length percentile ``>= long_percentile``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ilp_ray.config_base import TrackingConfig, _Section
from ilp_ray.diagnosis.registry import BUILTIN, DETECTORS


class ConflictConfig(_Section):
    """III: contradictions inside the SFT data."""

    theta: float = Field(0.85, gt=0, le=1, description=(
        "Prompt cosine (MiniLM) at or above which two samples ask the same thing. The paper leaves "
        "it unnamed; 0.85 keeps paraphrases (0.88-0.98 on MiniLM) and drops sibling questions such "
        "as 'capital of France' vs 'of Italy' (0.66). On templated data siblings pass it (0.86-0.95: "
        "'…code of Sollokaia?' vs '…of Solnuteia?'), which same_question then sorts out."))
    same_question: Literal["spans", "cosine"] = Field("spans", description=(
        "When a pair found at cosine >= theta asks the same thing. 'spans': also what varies between "
        "the two prompts must agree (their quoted spans, capitalised names, numbers, and words rare "
        "in the dataset's prompts): a template is most of a templated prompt, so cosine measures "
        "the template, while its slot is what a question is about. 'cosine': theta alone (the old "
        "rule)."))
    rare_df: int = Field(3, ge=1, description=(
        "For same_question=spans: a lower-case word found in at most this many prompts fills a slot "
        "(content, like a name); one in more is a template word. A template recurs with every item "
        "it serves; a slot filler appears only where its item is asked, a few times at most."))
    rare_min_prompts: int = Field(100, ge=2, description=(
        "For same_question=spans: below this many prompts every word is rare, so rarity says "
        "nothing and only the surface cues (quotes, capitals, digits) count."))
    unit_pairs: bool = Field(True, description=(
        "For same_question=spans: also pair prompts that share a content unit (a quote, a name, a "
        "rare word), whatever their cosine rank. In templated data a sample's k nearest prompts are "
        "its template's siblings, so a paraphrase about the same entity in another template "
        "(cosine 0.68-0.83 for 5 of the Debian world's 10 III pairs) is never searched."))
    unit_theta: float = Field(0.75, gt=0, le=1, description=(
        "For unit_pairs: the prompt cosine such a pair needs (the lower of this and theta). The "
        "shared unit says both prompts are about one item; the cosine must still say they ask one "
        "thing, since the same-question test cannot tell a relation from a phrasing when both are "
        "template words. MiniLM, measured: two questions about one entity on two relations (the "
        "lab's 'capital of X' / 'Who founded X?') 0.49-0.70 (5th-95th percentile, 481 pairs); two "
        "phrasings of one question in two templates (the Debian world's III pairs) 0.68-0.95, 9 "
        "of 10 above 0.75."))
    warn_group_size: int = Field(50, ge=2, description=(
        "A conflict group larger than this is reported as a warning: III assumes one right answer "
        "per question, and a group of more than 50 samples is no one fact but a prompt asked with "
        "many answers (an open-ended task) or a chain of near-duplicates (the synthetic 300k set's "
        "largest holds 20,329 samples; a lab or Debian-world III group 2-3)."))
    unit_max_group: int = Field(64, ge=2, description=(
        "For unit_pairs: a unit in more prompts than this names no one item and pairs nothing "
        "(and bounds the pairs at unit_max_group² per unit)."))
    theta_response: float = Field(0.8, gt=0, le=1, description=(
        "Free-form responses disagree below this cosine. 0.8: 'Eight' vs 'Six' is 0.77, 'Eight' vs "
        "'8' 0.93. Numbers that differ always disagree, and a response whose words all occur in the "
        "other always agrees, because embeddings are blind to both."))
    response_match: Literal["auto", "exact", "embedding"] = Field("auto", description=(
        "How responses are compared: 'exact' (normalised text), 'embedding' (the rules above), "
        "'auto': exact for pre-built MC items (no distractor ids), embedding otherwise."))
    k: int = Field(16, ge=1, description=(
        "Neighbours searched per sample. A pair is found from either side; the evidence flags a "
        "sample whose k-th neighbour still passes theta (more may exist)."))
    block_size: int | None = Field(None, ge=1, description=(
        "Tile side of the local search (a tile is block_size² scores; None: 2048), or queries per "
        "Spark task block."))
    backend: Literal["local", "spark"] = Field("local", description=(
        "'local': tiled torch search in this process (100k samples on one machine); 'spark': the "
        "same search over query blocks on Spark, for more."))
    spark_master: str = Field("local[*]", description="Spark master URL for backend=spark.")
    spark_partitions: int | None = Field(None, ge=1, description="Query-block partitions; None: 2 per core.")
    spark_driver_memory: str = Field("2g", description="spark.driver.memory (only before the JVM starts).")
    judge: str = Field("model", description=(
        "Who decides which side of a conflicting pair is right: 'none' (both stay conflicting), "
        "'model' (the side with the higher p(correct) is right), 'llm' (an OpenAI-compatible chat "
        "endpoint at judge_url), or any registered judge."))
    judge_source: Literal["sft", "base"] = Field("sft", description=(
        "For judge=model: whose p(correct) to compare, the fine-tuned model's or the base model's."))
    judge_margin: float = Field(0.1, ge=0, le=1, description=(
        "For judge=model: the two sides' p(correct) must differ by at least this, else undecided."))
    judge_url: str | None = Field(None, description="Base URL of the chat endpoint for judge=llm.")
    judge_model: str = Field("gpt-4o-mini", description="Model name sent to the chat endpoint.")
    judge_api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key, if any.")
    judge_timeout_s: float = Field(30.0, gt=0, description="Per-request timeout of the chat endpoint.")

    @model_validator(mode="after")
    def _llm_needs_url(self):
        if self.judge == "llm" and not self.judge_url:
            raise ValueError("judge 'llm' needs diagnose.conflict.judge_url (the endpoint's base URL)")
        return self


class BaseBeliefConfig(_Section):
    """When the base model's MC pick is a wrong belief about the question: shared by II (which
    fires on it) and I (which a belief excludes). Was part of base_conflict, whose old keys are still read."""

    tau_c: float = Field(0.5, gt=0, le=1, description=(
        "Base confidence in a wrong option at or above which it is a conflict (paper: T, unnamed). "
        "0.5: the wrong option outweighs all others together, whatever the option count."))
    js_threshold: float = Field(0.3, ge=0, le=1, description="JSD(base, SFT) above this supports II (paper: 0.3).")
    require_support: bool = Field(True, description=(
        "II needs more than a confident wrong pick: the pick must beat its own prior (pmi), or "
        "SFT must have moved the base's distribution (jsd), or the corpus must contradict the SFT "
        "label (corpus); the evidence's fired_by says which. A small base 'confidently' prefers "
        "the shortest or commonest option whatever the question: on mixed real data that read "
        "every long definition (cause V) and two controls as II. False: the paper's Eq. 6 alone."))
    pmi_margin: float = Field(0.693, ge=0, description=(
        "The pmi support: the question raises the base's wrong pick by at least this many nats "
        "over its question-free share among the options (ln 2: the question at least doubles it). "
        "A pick the question does not raise is the prior's, not a belief about this question."))


#: base_conflict keys that moved to base_belief (still read from base_conflict).
MOVED_TO_BASE_BELIEF = tuple(BaseBeliefConfig.model_fields)


class BaseConflictConfig(_Section):
    """II: the base model confidently believes a different answer (the belief: ``base_belief``)."""

    jsd_weight: float = Field(0.1, ge=0, le=1, description=(
        "Added to the score (the base's confidence in its wrong option) when the JSD supports "
        "it: SFT pushing against the belief makes the conflict surer. Small beside the confidence, "
        "so it reorders close cases only."))
    corpus_weight: float = Field(0.2, ge=0, le=1, description=(
        "Up to this times corpus_score is added when the pretraining corpus contradicts the SFT "
        "label: the corpus is independent evidence that the base learned the other value."))


class BeliefConfig(_Section):
    """What the base model answers when asked (``ilp_ray.diagnosis.beliefs``): II's belief and
    I's knowledge for the items the audit built from SFT data."""

    enabled: Literal["auto", "on", "off"] = Field("off", description=(
        "'auto': the base answers the prompt of every diagnosed sample whose MC item the audit built "
        "(its options are other records' responses, so the value the base believes is rarely among "
        "them); ready-made MC items keep the paper's confident-pick rule. 'on': every diagnosed "
        "sample. 'off' (the default): the MC rules alone. Off by default because it loads the base "
        "model in the diagnosis's process (a GPU when there is one) and generates, and on the one "
        "base measured (SmolLM2-135M, which produces 4% of what it recognises) its self-check keeps "
        "it out anyway. Needs a base model loadable here; without one the summary says why it did "
        "not run."))
    model: str | None = Field(None, description=(
        "The base model to ask (a checkpoint directory or bundled name). None: the audit's base_model."))
    format: Literal["chat", "plain", "lm-eval"] | None = Field(None, description=(
        "How the prompt is rendered. None: the audit's scoring.format."))
    n: int = Field(10, ge=1, le=100, description="Answers per sample (the paper's pass@10 of cause I).")
    shots: int = Field(3, ge=0, le=16, description=(
        "Other samples shown before the question, so the base answers in the data's form."))
    pool: int = Field(8, ge=1, le=64, description=(
        "The nearest prompts the shots are drawn from, afresh for every answer."))
    temperature: float = Field(0.8, ge=0, description=(
        "Sampling temperature; 0 = greedy (then n > 1 repeats one answer). 0.8 with top_p 0.95, "
        "the usual pass@k sampling: at 1.0 with no truncation SmolLM2-135M's answers were mostly noise."))
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = 0
    max_new_tokens: int = Field(64, ge=1, description=(
        "Cap on an answer's tokens; each sample gets 2 x its response's tokens + 8 under it."))
    short_words: int = Field(3, ge=1, description=(
        "An answer of at most this many words matches another that contains it word for word; "
        "longer answers match by MiniLM cosine."))
    same_cosine: float = Field(0.85, gt=0, le=1, description=(
        "Two longer answers are one at this cosine (the paper's theta for one question)."))
    min_share: float = Field(0.5, gt=0, le=1, description=(
        "The base holds an answer when at least this share of its answers are that one: half, "
        "more than any rival together."))
    knows_share: float = Field(0.2, gt=0, le=1, description=(
        "The base knows the SFT answer when at least this share of its answers are it (cause I's "
        "pass threshold, 0.2)."))
    check_samples: int = Field(32, ge=1, description=(
        "Samples the base recognises (MC p(correct) above detect.known_threshold) also asked, to "
        "check that it produces what it recognises."))
    min_recall: float = Field(0.5, ge=0, le=1, description=(
        "The base's answers decide II and I only when it produces at least this share of the "
        "answers it recognises (knows_share of its answers): a base that recognises facts it "
        "cannot produce (SmolLM2-135M: measured in docs/benchmarks.md) shows no belief by answering. "
        "Below it the probe's figures are reported and the MC rules decide."))
    batch_size: int = Field(16, ge=1, description="Prompts per generate call.")
    max_length: int = Field(2048, ge=16, description="Prompt tokens kept (left-truncated beyond).")
    threads: int | None = Field(None, ge=1, description="torch threads while generating; None: diagnose.threads.")


class CorpusRulesConfig(_Section):
    """How corpus evidence weighs in, shared by the causes that read it (I, II, IV)."""

    veto: bool = Field(False, description=(
        "Off by default, on in preset lab (ilp_ray/presets.py: a real index holds a sample of the "
        "pretraining data, so a fact it lacks may still have been read). "
        "With corpus evidence, the corpus decides which base-model cause a wrong base answer is: "
        "II needs a corpus that does not lack or support the SFT value (a confident answer to a "
        "fact the corpus lacks is a guess, cause I; small models guess confidently); I needs a "
        "corpus that does not support it (a fact the base read but did not learn is a rare "
        "pattern, cause V); IV does not count a right base answer to a fact the corpus lacks as "
        "knowledge. Items without evidence are judged on the model alone. Was "
        "base_conflict.corpus_veto, which is still read."))


class KnowledgeGapConfig(_Section):
    """I: the base model lacks the knowledge (blind knowledge)."""

    n: int = Field(10, ge=1, description="Draws for the base pass@N (paper: pass@10).")
    pass_threshold: float = Field(0.2, ge=0, le=1, description="Blind when base pass@N < this (paper: 0.2).")
    bon_n: int = Field(5, ge=1, description="Draws for the base BoN (paper: BoN-5).")
    bon_threshold: float = Field(0.1, ge=0, le=1, description="Blind when base BoN accuracy < this (paper: 0.1).")
    seeds: int = Field(10, ge=1, description="Seeds over which the BoN accuracy is averaged (one BoN is 0 or 1).")
    chance_corrected: bool = Field(True, description=(
        "Apply both thresholds to chance-corrected figures, (x - 1/k) / (1 - 1/k) for k options. "
        "The paper's pass@10 < 0.2 is for free generation, where a model that lacks a fact "
        "almost never produces it; among k = 4 options a blind base is right a quarter of the "
        "time, so an uncorrected pass@10 < 0.2 asks for a base below chance (it fired in the lab "
        "only because its tiny base is confidently wrong). Corrected, k = 4: pass@10 < 0.4 and "
        "BoN-5 accuracy < 0.325. False: the thresholds on the raw figures (preset lab)."))
    seed: int = Field(0, description="First seed of the base draws.")
    corpus_weight: float = Field(0.25, ge=0, le=1, description=(
        "The score (1 - base p(correct)) moves by up to this times corpus_score: up when the "
        "corpus lacks the fact, down when it supports it (the base read it yet did not learn it). "
        "A quarter: the corpus shifts the ranking without overturning the model's own figure."))


class ForgettingConfig(_Section):
    """IV: learned at some evaluation, lost by the end."""

    tau: float = Field(0.5, gt=0, le=1, description=(
        "A sample is learned at an evaluation when p(correct) >= tau. 0.5: the answer then is the "
        "model's top option whatever the option count."))
    min_drop: float = Field(0.1, ge=0, le=1, description=(
        "The peak must exceed the final p(correct) by at least this, so a sample hovering at tau "
        "is not called forgotten."))
    held_evals: int = Field(1, ge=1, description=(
        "Learned means p(correct) >= tau at this many consecutive evaluations (from the sample's "
        "first training step on). 1, the paper's 'learned, then forgotten'. 2 in preset lab, where "
        "a fact stated once flickers right for one evaluation; on the Debian world (seed 0) it "
        "left 3 of 14 forgotten samples, each taught six times, unattributed."))
    scope: Literal["subset", "sample"] = Field("subset", description=(
        "'subset': left-side forgetting as the paper has it, the earlier data of a sequential run "
        "overwritten by later data. Where the subsets trained one after another, a sample of the "
        "last subset (the right side, the recent data) is not IV (evidence last_subset); samples "
        "of earlier subsets are judged by the held-then-lost rule. Where the order is not "
        "sequential (one subset, a shuffled run, no trained_step column) this is 'sample'. "
        "'sample': held and lost anywhere from its first training step on, in any subset."))
    deciles: int = Field(10, ge=2, description="Position bins for the position effect (paper: the first 10%).")
    exclude_base_known: bool = Field(False, description=(
        "Off by default, on in preset lab: on the Debian world (seed 0) it left 2 of 14 forgotten "
        "samples unattributed, facts the base answered but the run visibly learned and lost. "
        "Not IV when the base model already answered the sample (base p(correct) >= tau): SFT then "
        "eroded pretrained knowledge rather than forgetting what it taught, which no cause names, so "
        "the sample stays unattributed (evidence base_known). With corpus evidence (corpus.veto), a "
        "right base answer about a fact the corpus lacks is a guess and does not count as known."))


class InsufficientConfig(_Section):
    """V: never learned but still improving, or a rare/complex pattern."""

    tau: float = Field(0.5, gt=0, le=1, description="Never learned: p(correct) stayed < tau at every evaluation.")
    last_m: int = Field(3, ge=2, description="Evaluations at the end over which the least-squares slope is fitted.")
    min_slope: float = Field(0.01, ge=0, description=(
        "Rising: p(correct) slope per evaluation > this; a point per evaluation is above the noise "
        "of a converged run."))
    min_loss_drop: float = Field(0.01, ge=0, description="Loss falling: slope per evaluation < -this (nats).")
    density_k: int = Field(10, ge=1, description="Neighbours for the prompt density (mean cosine to the k nearest).")
    rare_percentile: float = Field(0.1, ge=0, le=1, description="Rare when its density percentile <= this (bottom 10%).")
    long_percentile: float = Field(0.9, ge=0, le=1, description="Long when its answer-length percentile >= this (top 10%).")
    min_population: int = Field(20, ge=1, description=(
        "Rare/long are percentiles, meaningless in a handful of samples: below this many samples "
        "neither flag is raised."))
    no_trajectory_weight: float = Field(0.5, ge=0, le=1, description=(
        "Without a trajectory, V may fire on rarity/length alone, its score multiplied by this."))
    pattern_weight: float = Field(0.4, ge=0, le=1, description=(
        "With a firing trajectory the score is 1 - pattern_weight + pattern_weight x pattern "
        "strength: a still-rising trajectory alone scores 0.6, a rare or long one up to 1 (the "
        "paper's typical case), always above a pattern without a trajectory (no_trajectory_weight)."))


class DiagnosisConfig(_Section):
    preset: Literal["none", "lab"] | None = Field(None, description=(
        "Named settings calibrated on a benchmark (ilp_ray/presets.py), filled in under this "
        "config's own values: 'lab' is what the ILP lab was scored with. None: the defaults."))
    enabled: bool = Field(False, description="Run the diagnosis as the audit's last stage.")
    plugins: list[str] = Field([], description=(
        "Modules imported before the causes are checked: a module that registers its own detector "
        "(ilp_ray.diagnosis.DETECTORS.register('name', 'pkg.mod:Class')) makes it selectable in causes."))
    causes: list[str] = Field(list(BUILTIN), description=(
        "Causes to test, by registered detector name; the decision tests them in each detector's "
        "declared order (CauseDetector.order), whatever the order here."))
    sections: dict[str, dict[str, Any]] = Field({}, description=(
        "Config sections of detectors registered from outside, by their declared section name; "
        "each is validated by the detector's Config class when the diagnosis runs."))
    scope: Literal["unlearned", "top_k"] = Field("unlearned", description=(
        "Which samples get a cause: every unlearned sample, or only the top-K most severe (paper)."))
    relapse_to_base: bool = Field(False, description=(
        "Off by default, on in preset lab (fitted on the real-model lab's II read as IV; on the "
        "Debian world, seed 0, it moved one forgotten sample to II). "
        "A forgotten sample (IV) whose final answer is the base model's own confident, "
        "corpus-backed wrong answer (II fires too) is II: it was learned, then fell back to what "
        "pretraining taught, so the conflict is the cause and the forgetting its mechanism. "
        "False: the plain order, IV before II."))
    embedder: Literal["minilm", "hashing"] = Field("minilm", description=(
        "Prompt/response embedder: all-MiniLM-L6-v2, or the hashing twin (tests, dry runs)."))
    embed_batch_size: int = Field(32, ge=1, description=(
        "Texts per MiniLM forward pass. 32: on 2 CPU cores short prompts embed ~10-25% faster than at 256."))
    embed_backend: Literal["auto", "torch", "onnx"] = Field("auto", description=(
        "MiniLM on ONNX Runtime (~1.3x faster on CPU, same embeddings to 1e-6) or eager torch; "
        "'auto': ONNX when onnxruntime is installed."))
    threads: int | None = Field(None, ge=1, description=(
        "CPU threads for the embedding and the neighbour search. None: every core, since the "
        "diagnosis runs alone after scoring; set 1 when other work shares the machine."))
    embed_cache: bool = Field(True, description=(
        "Keep the prompt embeddings under the audit's run directory (embeddings/, float32, "
        "~1.5 KB a distinct prompt: 460 MB at 300k), so that a diagnosis run again embeds nothing "
        "and a killed one resumes, and let the audit embed them on the core its scoring actor "
        "leaves free. False: embed in memory each run."))
    data: str | None = Field(None, description="The SFT data file, for free-form responses; None: the MC answer text.")
    trajectory: str | None = Field(None, description="trajectory.parquet of the SFT run; None: IV and V without trajectories.")
    evidence: str | None = Field(None, description=(
        "Corpus evidence table (Parquet: id, corpus_verdict in supports/contradicts/absent, "
        "corpus_score in [0, 1]); None: none."))
    report_worst: int = Field(10, ge=1, description="Samples per cause in the report's tables.")
    conflict: ConflictConfig = ConflictConfig()
    base_belief: BaseBeliefConfig = BaseBeliefConfig()
    base_conflict: BaseConflictConfig = BaseConflictConfig()
    beliefs: BeliefConfig = BeliefConfig()
    corpus: CorpusRulesConfig = CorpusRulesConfig()
    knowledge_gap: KnowledgeGapConfig = KnowledgeGapConfig()
    forgetting: ForgettingConfig = ForgettingConfig()
    insufficient: InsufficientConfig = InsufficientConfig()
    tracking: TrackingConfig = Field(TrackingConfig(), description=(
        "MLflow for `ilp diagnose`; inside `ilp audit` the audit's own run is used."))

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data):
        from ilp_ray.presets import DIAGNOSIS_PRESETS, apply_preset

        if isinstance(data, dict) and isinstance(data.get("base_conflict"), dict):
            # Keys' old places: base_conflict.corpus_veto is corpus.veto, and the belief's
            # thresholds are base_belief's. A value at the new place wins.
            bc = dict(data["base_conflict"])
            data = dict(data, base_conflict=bc)
            if "corpus_veto" in bc:
                data["corpus"] = {"veto": bc.pop("corpus_veto"), **(data.get("corpus") or {})}
            moved = {k: bc.pop(k) for k in MOVED_TO_BASE_BELIEF if k in bc}
            if moved:
                data["base_belief"] = {**moved, **(data.get("base_belief") or {})}
        return apply_preset(data, DIAGNOSIS_PRESETS)

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, v: list[str]) -> list[str]:
        import importlib

        for module in v:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ValueError(f"cannot import plugin module {module!r}: {e}") from e
        return v

    @field_validator("causes")
    @classmethod
    def _known_causes(cls, v: list[str]) -> list[str]:
        import difflib

        known = DETECTORS.registered()
        for name in v:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
                raise ValueError(f"unknown cause {name!r}{hint}")
        if len(set(v)) != len(v):
            raise ValueError("causes must not repeat")
        return v
