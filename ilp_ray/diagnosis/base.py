"""The cause-detector contract, its registry, and the context every detector reads.

Modelled on cleanlab's ``IssueManager``: a class-level ``name`` checked in ``__init_subclass__``,
and a fixed output shape per cause: ``is_<name>`` (bool), ``<name>_score`` in [0, 1], and
``<name>_evidence`` (a JSON-serialisable dict per row: the numbers and ids behind the verdict),
plus a summary dict and free-form ``info`` (tables for the report and later stages).

Corpus evidence (a later issue's pretraining-corpus index) enters through one optional table on
the context, keyed by sample id: ``corpus_verdict`` in {supports, contradicts, absent} and
``corpus_score`` in [0, 1] (how sure the corpus judge is). Cause I reads ``absent`` as support
(the fact is not in the corpus, so the base model could not have learned it), cause II reads
``contradicts`` as support (the corpus teaches the base model's belief). Neither needs it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ilp_ray.diagnosis.registry import DETECTORS

CORPUS_VERDICTS = ("supports", "contradicts", "absent")
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_NAMES: dict[str, str] = {}  # detector name -> qualified class name, for uniqueness


def embeddings_dir(run_dir) -> Path:
    """Where a run's cached prompt embeddings live (``diagnose.embed_cache``)."""
    return Path(run_dir) / "embeddings"


@dataclass
class DiagnosisContext:
    """Everything a detector may read. Built once by ``run_diagnosis``.

    Attributes:
        verdicts: the audit's per-sample table (``load_verdicts``), one row per sample.
        config: the ``DiagnosisConfig``.
        records: SFT records by id, or None (the MC answer text is then the response).
        trajectories: the training trajectory table (step, epoch, reason, id, subset, p_correct,
            correct, loss), or None when the SFT run recorded none.
        embedder: a ``TextEmbedder`` (MiniLM or the hashing twin).
        evidence: corpus evidence by id (see the module docstring), or None.
        run_dir: the audit run directory (outputs go under ``run_dir/diagnosis``), or None.
        beliefs: what the base model answered when asked (``beliefs.probe``), one row per probed
            sample, or None; ``belief_status`` says what was probed, or why nothing was.
    """

    verdicts: pd.DataFrame
    config: Any
    records: dict | None = None
    trajectories: pd.DataFrame | None = None
    embedder: Any = None
    evidence: pd.DataFrame | None = None
    run_dir: Any = None
    beliefs: pd.DataFrame | None = None
    belief_status: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def ids(self) -> list[str]:
        return self.verdicts["id"].astype(str).tolist()

    @property
    def has_base(self) -> bool:
        return "base_probs" in self.verdicts.columns and self.verdicts["base_probs"].notna().all()

    def prompts(self) -> list[str]:
        if self.records:
            return [self.records[i].prompt if i in self.records else q
                    for i, q in zip(self.ids, self.verdicts["question"], strict=False)]
        return self.verdicts["question"].astype(str).tolist()

    def responses(self) -> list[str]:
        """The trained response of each sample: the record's, else the MC answer option."""
        mc = [str(opts[int(a)]) for opts, a in zip(self.verdicts["options"], self.verdicts["answer"], strict=False)]
        if self.records:
            return [self.records[i].response if i in self.records else r for i, r in zip(self.ids, mc, strict=False)]
        return mc

    def prompt_embeddings(self) -> np.ndarray:
        """Prompt embeddings (unit rows, float32), computed once and shared by III and V."""
        if "prompt_emb" not in self._cache:
            if self.run_dir is not None and getattr(self.config, "embed_cache", False):
                from ilp_ray.data.embed_cache import EmbeddingCache

                emb = EmbeddingCache(embeddings_dir(self.run_dir), self.embedder).encode(self.prompts())
            else:
                emb = self.embedder.encode(self.prompts())
            self._cache["prompt_emb"] = np.ascontiguousarray(emb, np.float32)
        return self._cache["prompt_emb"]

    def release_embeddings(self) -> None:
        """Let the prompt embeddings and their neighbour search go (a later call recomputes them)."""
        self._cache.pop("prompt_emb", None)
        self._cache.pop("prompt_topk", None)

    def prompt_neighbours(self, m: int, block_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``m`` prompt neighbours of every sample (self included), cached; a later call
        for fewer neighbours slices the cached search instead of searching again."""
        from ilp_ray.neighbours import self_topk_neighbours

        hit = self._cache.get("prompt_topk")
        if hit is None or hit[0].shape[1] < min(m, len(self.verdicts)):
            e = self.prompt_embeddings()
            hit = self_topk_neighbours(e, m, block_size=block_size)
            self._cache["prompt_topk"] = hit
        return hit[0][:, :m], hit[1][:, :m]

    def base_beliefs(self) -> dict[str, np.ndarray]:
        """What the base model believes of each row, computed once for causes I and II from the
        verdicts' ``base_*`` columns under the shared ``base_belief`` section.

        Keys: ``pred`` and ``confidence`` (its top option and that option's probability),
        ``wrong`` (the top option is not the answer), ``confident`` (wrong at confidence
        ``>= base_belief.tau_c``), ``pmi_gain`` (how much the question raised the top option
        over its question-free share, nats; NaN without option priors), ``pmi``, ``jsd`` and
        ``corpus`` (the three supports of ``base_belief.require_support``), ``supported`` (any of
        them) and ``belief`` (confident, and supported where support is required): a wrong answer
        the base holds about this question. Requires a base model (``has_base``).

        ``pmi_implied`` marks rows whose base probabilities the audit calibrated by the option
        priors (the verdicts' ``calibrated``: built items under ``scoring.calibration: auto``) and
        whose pick is the item's most raised option (without a length normalisation always): its
        PMI gain is the item's largest, never negative, so the test then asks only that the
        question raise it 2× over its prior share. Reported, still counted as support: not counting
        it was measured on held-out seeds and did not help (docs/diagnosis.md).
        """
        if "beliefs" in self._cache:
            return self._cache["beliefs"]
        cfg = self.config.base_belief
        v = self.verdicts
        answer = v["answer"].to_numpy(dtype=np.int64)
        # the audit's own figures of the base (storage.BASE_VERDICT_COLUMNS), not recomputed here
        pred = v["base_pred"].to_numpy(dtype=np.int64)
        conf = v["base_confidence"].to_numpy(dtype=float)
        wrong = pred != answer
        js = v["js_base_sft"].to_numpy(dtype=float) if "js_base_sft" in v else np.full(len(v), np.nan)
        pmi_rows = list(v["base_pmi"]) if "base_pmi" in v else [None] * len(v)
        tested = np.array([p is not None and not (np.isscalar(p) and pd.isna(p)) for p in pmi_rows], dtype=bool)
        gain = np.array([float(np.asarray(p, dtype=float)[k]) if t else np.nan
                         for p, k, t in zip(pmi_rows, pred, tested, strict=True)])
        calibrated = (v["calibrated"].fillna(False).to_numpy(dtype=bool) if "calibrated" in v
                      else np.zeros(len(v), dtype=bool))
        top = np.array([int(np.nanargmax(np.asarray(p, dtype=float))) if t else -1
                        for p, t in zip(pmi_rows, tested, strict=True)])
        implied = tested & calibrated & (top == pred)  # the pick is the item's most raised option
        out = {"pred": pred, "confidence": conf, "wrong": wrong, "confident": wrong & (conf >= cfg.tau_c),
               "pmi_gain": gain, "pmi": gain >= cfg.pmi_margin, "js": js, "jsd": js > cfg.js_threshold,
               "corpus": self.corpus_verdicts() == "contradicts", "pmi_tested": tested,
               "pmi_implied": implied}
        out["supported"] = out["pmi"] | out["jsd"] | out["corpus"]
        out["belief"] = out["confident"] & (out["supported"] if cfg.require_support else True)
        # Where the base was asked (beliefs.probe), its own answers decide: it holds another
        # answer (II), or it produces the SFT answer (so it is no gap for I). The MC pick stays
        # in the evidence; the corpus still supports II when the pick is confident.
        asked = (self.beliefs if self.beliefs is not None else pd.DataFrame(columns=["id", "holds", "knows"]))
        asked = asked.assign(id=asked["id"].astype(str)).set_index("id").reindex(self.ids)
        probed = asked["holds"].notna().to_numpy()
        holds = asked["holds"].fillna(False).to_numpy(dtype=bool)
        knows = asked["knows"].fillna(False).to_numpy(dtype=bool)
        out.update(probed=probed, holds=holds, knows=knows)
        out["belief"] = np.where(probed, holds | (out["confident"] & out["corpus"]), out["belief"])
        self._cache["beliefs"] = out
        return out

    def generated(self) -> dict[str, dict]:
        """The probe's row of each probed sample, by id (empty without a probe)."""
        if self.beliefs is None:
            return {}
        return {str(r["id"]): r for r in self.beliefs.to_dict("records")}

    def corpus_verdicts(self) -> np.ndarray:
        """Each row's corpus verdict, in row order; "" where the evidence has none."""
        corpus = self.corpus()
        return np.array([corpus.get(i, ("",))[0] for i in self.ids], dtype=object)

    def corpus(self) -> dict[str, tuple[str, float]]:
        """Corpus evidence as {id: (verdict, score)}; empty without it."""
        if self.evidence is None:
            return {}
        return {str(i): (str(v), float(s)) for i, v, s in
                zip(self.evidence["id"], self.evidence["corpus_verdict"], self.evidence["corpus_score"], strict=False)}


def check_evidence_table(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a corpus evidence table; raises ``DataError`` naming the file and column."""
    from ilp_ray.errors import DataError

    for col in ("id", "corpus_verdict", "corpus_score"):
        if col not in df.columns:
            raise DataError(f"missing column (has {list(df.columns)})", file=source, field=col)
    bad = ~df["corpus_verdict"].isin(CORPUS_VERDICTS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"must be one of {CORPUS_VERDICTS}, got {df['corpus_verdict'].iloc[row]!r}",
                        file=source, line=row + 1, field="corpus_verdict")
    s = pd.to_numeric(df["corpus_score"], errors="coerce")
    bad = s.isna() | (s < 0) | (s > 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError("must be a number in [0, 1]", file=source, line=row + 1, field="corpus_score")
    out = df.assign(id=df["id"].astype(str), corpus_score=s.astype(float))
    return out.drop_duplicates("id", keep="last")


@dataclass
class CoverageFacts:
    """What a diagnosis had to test with, worked out once (``run.coverage``) for every detector's
    ``coverage``. Arrays are per verdict row.

    Attributes:
        n: rows. diagnosed: rows the diagnosis attributes. pool: the rows "testable" is judged on
            (the diagnosed, or all when none is). has_base: a base model was scored.
        has_trajectory, n_evals, n_after: each row has a trajectory, its evaluations, and those at
            or after its training step. schedule: ``trajectories.schedule_coverage`` (None without
            a trajectory).
    """

    n: int
    diagnosed: np.ndarray
    pool: np.ndarray
    has_base: bool
    has_trajectory: np.ndarray
    n_evals: np.ndarray
    n_after: np.ndarray
    schedule: dict | None = None


@dataclass
class CauseCoverage:
    """What one cause could show on this run (``CauseDetector.coverage``).

    Attributes:
        rows: rows it had the inputs to test. fire: rows it can fire on (``rows`` unless a rule
            rules some out). why: why it cannot fire, a sentence for when it is not testable.
        extra: counts for the coverage block (``last_subset``...). warnings: sentences of its own
            for the reader. without_trajectory / partial_trajectory: its clause in the shared
            sentence about a missing or partial trajectory (``{rest}``: rows without one), or None.
    """

    rows: np.ndarray
    why: str
    fire: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    without_trajectory: str | None = None
    partial_trajectory: str | None = None


@dataclass
class CauseResult:
    """One detector's output: the per-row frame, a summary, and extra tables (``info``)."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


class CauseDetector(ABC):
    """One cause of incomplete learning.

    Subclasses set ``name`` (snake_case, unique), ``roman`` (the paper's numeral), ``title``,
    ``short`` (the report's label), ``order`` (where the decision tests it: lower first), ``section``
    (its config section, a ``DiagnosisConfig`` field, or for a detector registered from outside a
    key of ``diagnose.sections`` validated by its ``Config``) and ``color``, and implement
    ``detect``. Call ``run``, which checks the output shape. ``settings(ctx)`` is its section.
    ``needs_base``: it cannot fire without a base model; ``data_only``: it tests the SFT data alone
    (no model output), so a sample only it could test counts as untested. ``coverage`` says which
    samples it had the inputs to test on a run; override it when it needs more than the verdicts.
    """

    name: ClassVar[str] = ""
    roman: ClassVar[str] = ""
    title: ClassVar[str] = ""
    short: ClassVar[str] = ""
    order: ClassVar[int] = 100
    section: ClassVar[str | None] = None
    color: ClassVar[str] = "#444444"
    Config: ClassVar[type | None] = None
    needs_base: ClassVar[bool] = False
    data_only: ClassVar[bool] = False

    def coverage(self, ctx: DiagnosisContext, facts: CoverageFacts) -> CauseCoverage:
        """The rows this cause had the inputs to test, and why not (the coverage block).

        The default: every row, or none without a base model when ``needs_base``.
        """
        if self.needs_base and not facts.has_base:
            return CauseCoverage(np.zeros(facts.n, bool), "no base model was scored")
        return CauseCoverage(np.ones(facts.n, bool), "no sample to test")

    def settings(self, ctx: DiagnosisContext):
        """This detector's config section: ``ctx.config.<section>``, or for a detector from
        outside ``Config`` validated from ``diagnose.sections[<section>]``."""
        if self.section is None:
            return None
        if self.section in type(ctx.config).model_fields:
            return getattr(ctx.config, self.section)
        raw = ctx.config.sections.get(self.section, {})
        return self.Config.model_validate(raw) if self.Config is not None else raw

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "__abstractmethods__", None) and not cls.__dict__.get("name"):
            return  # an intermediate abstract class
        name = cls.__dict__.get("name", "")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} must set a non-empty class attribute 'name'")
        if not _SNAKE.match(name):
            raise TypeError(f"{cls.__qualname__}.name must be snake_case, got {name!r}")
        qual = f"{cls.__module__}:{cls.__qualname__}"
        # A registered name belongs to its registered class, imported or not yet.
        entry = DETECTORS._entries.get(name) if "DETECTORS" in globals() else None
        owner = entry if isinstance(entry, str) else (
            f"{entry.__module__}:{entry.__qualname__}" if entry is not None else _NAMES.get(name, qual))
        if owner != qual:
            raise TypeError(f"cause detector name {name!r} is already used by {owner}")
        _NAMES[name] = qual

    @classmethod
    def named(cls) -> str:
        """How a sentence names this cause: 'IV (left-side forgetting)'."""
        return f"{cls.roman} ({cls.short})" if cls.roman else cls.short or cls.name

    @classmethod
    def columns(cls) -> tuple[str, str, str]:
        return f"is_{cls.name}", f"{cls.name}_score", f"{cls.name}_evidence"

    @abstractmethod
    def detect(self, ctx: DiagnosisContext) -> CauseResult:
        """Test every sample of ``ctx.verdicts`` for this cause.

        Args:
            ctx: the diagnosis context.

        Returns:
            A ``CauseResult`` whose frame has one row per verdict row, in the same order, with
            the three columns of ``columns()``. A detector that cannot run (no base model, no
            trajectory) stays silent: False, score 0, and evidence saying what is missing.
        """

    def run(self, ctx: DiagnosisContext) -> CauseResult:
        """``detect``, then check the fixed output shape."""
        res = self.detect(ctx)
        is_col, score_col, ev_col = self.columns()
        f = res.frame
        if list(f.columns[:3]) != [is_col, score_col, ev_col] or len(f) != len(ctx.verdicts):
            raise RuntimeError(f"{type(self).__name__} returned columns {list(f.columns)} for {len(f)} rows; "
                               f"expected {[is_col, score_col, ev_col]} for {len(ctx.verdicts)}")
        s = f[score_col].to_numpy(dtype=float)
        if np.isnan(s).any() or (s < 0).any() or (s > 1).any():
            raise RuntimeError(f"{type(self).__name__}: {score_col} must lie in [0, 1]")
        f[is_col] = f[is_col].astype(bool)
        res.summary.setdefault("n_flagged", int(f[is_col].sum()))
        res.summary.setdefault("n_flagged_unlearned", int((f[is_col] & ctx.verdicts["unlearned"].to_numpy()).sum()))
        return res

    def frame(self, is_: Any, score: Any, evidence: list[dict]) -> pd.DataFrame:
        """The fixed-shape frame from arrays (scores are clipped into [0, 1])."""
        is_col, score_col, ev_col = self.columns()
        return pd.DataFrame({is_col: np.asarray(is_, dtype=bool),
                             score_col: np.clip(np.asarray(score, dtype=float), 0.0, 1.0),
                             ev_col: evidence})

    def silent(self, n: int, why: dict) -> pd.DataFrame:
        return self.frame(np.zeros(n, bool), np.zeros(n), [dict(why) for _ in range(n)])


def r3(x: float | None) -> float | None:
    """A float rounded for evidence (JSON-friendly, readable)."""
    return None if x is None or np.isnan(x) else round(float(x), 4)
