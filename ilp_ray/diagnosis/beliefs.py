"""What the base model answers when asked: its own sampled answers, the belief behind causes I and II.

Why generation. The paper's II (Eq. 6) reads a confident wrong pick off a multiple-choice item.
On its benchmarks the options are the question's own alternatives, so the value a model believes
is among them. An item the audit *builds* from SFT data has the SFT response and other records'
responses as options: the value the base believes ("rus" for Russian, when the data says "fin")
is almost never one of them, and a confident pick among values it does not hold is a forced
choice, whatever the calibration. On the Debian world (real facts, SmolLM2) that made fictional
facts, controls and definitions II as often as the contradicted facts. The paper's I is already
about generation ("if the model repeatedly fails to *produce* correct answers under multiple
sampling attempts"). So for built items the base is asked the sample's own prompt and answers
freely, ``n`` times:

- each answer follows ``shots`` turns of other samples of the data (drawn afresh per answer from
  the sample's ``pool`` nearest prompts, never the sample itself or one with its response), so the
  base answers in the data's own form (a code for a code, a definition for a definition), as
  lm-eval's generative tasks prompt few-shot; a fresh draw each time means an answer copied from
  a shot does not repeat as a belief would;
- sampled at ``temperature`` 0.8 with nucleus ``top_p`` 0.95, cut at the first line break;
- two answers are the same when equal after normalising case, whitespace, quotes and end
  punctuation; when the shorter has at most ``short_words`` words and occurs, word for word,
  inside the other ("DK" in "The code is DK"); or when both are longer than that and their
  MiniLM cosine is at least ``same_cosine`` (0.85, the paper's θ for "the same question").

Per sample: ``label_share`` (answers that are the SFT response), ``modal`` / ``modal_share``
(the commonest answer, clustered by that sameness, and its share), ``holds`` (``modal_share >=
min_share`` and the modal answer is not the SFT response: the base holds another answer, II) and
``knows`` (``label_share >= knows_share``: the base produces the SFT answer, so it is no gap).

The self-check. Recognising a fact among options and producing it are two abilities: asked this
way, SmolLM2-135M produced 4% of the facts it recognises at MC p(correct) > 0.8 (54 samples of
the Debian world, seed 2; docs/benchmarks.md). A base that cannot say what it knows shows no
belief by answering. So ``ask`` first asks up to ``check_samples`` samples the base recognises;
only when it produces at least ``min_recall`` of them are the diagnosed samples asked and its
answers used. Otherwise the summary says so, with the figure, and the MC rules decide.

Results are cached in ``diagnosis/beliefs.parquet`` keyed by the settings, the model and each
sample's prompt and response: a rerun of the diagnosis generates only what is new.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

COLUMNS = ("id", "key", "answers", "label_share", "modal", "modal_share", "holds", "knows")
_TRIM = " \t\n\r.,;:!?\"'`“”‘’*()[]"


def normalise(text: str) -> str:
    """An answer compared as text: one line, collapsed whitespace, case-folded, trimmed of quotes
    and end punctuation."""
    return re.sub(r"\s+", " ", str(text)).strip(_TRIM).casefold()


def _contains(short: str, long: str) -> bool:
    return bool(short) and re.search(rf"(?<!\w){re.escape(short)}(?!\w)", long) is not None


@dataclass(frozen=True)
class Sameness:
    """When two normalised answers are one answer (see the module docstring)."""

    short_words: int
    same_cosine: float

    def __call__(self, a: str, b: str, ea: np.ndarray | None, eb: np.ndarray | None) -> bool:
        if a == b:
            return True
        if not a or not b:
            return False
        wa, wb = len(a.split()), len(b.split())
        short, long = (a, b) if wa <= wb else (b, a)
        if min(wa, wb) <= self.short_words:
            return _contains(short, long)
        return ea is not None and eb is not None and float(ea @ eb) >= self.same_cosine


def summarise(answers: Sequence[str], label: str, same: Sameness, emb: dict[str, np.ndarray],
              min_share: float, knows_share: float) -> dict[str, Any]:
    """One sample's figures from its sampled answers (normalised) and its SFT response."""
    n = len(answers)
    lab = normalise(label)
    is_label = [same(a, lab, emb.get(a), emb.get(lab)) for a in answers]
    clusters: list[list[int]] = []  # greedy: each answer joins the first cluster whose head it matches
    for i, a in enumerate(answers):
        for c in clusters:
            if same(answers[c[0]], a, emb.get(answers[c[0]]), emb.get(a)):
                c.append(i)
                break
        else:
            clusters.append([i])
    top = max(clusters, key=len) if clusters else []
    modal = answers[top[0]] if top else ""
    modal_share = len(top) / n if n else 0.0
    modal_is_label = bool(top) and sum(is_label[i] for i in top) * 2 > len(top)
    label_share = sum(is_label) / n if n else 0.0
    return {"answers": list(answers), "label_share": label_share, "modal": modal, "modal_share": modal_share,
            "holds": bool(modal_share >= min_share and not modal_is_label and modal != ""),
            "knows": bool(label_share >= knows_share)}


def shot_pool(neighbours: np.ndarray, prompts: Sequence[str], responses: Sequence[str], row: int,
              pool: int) -> list[int]:
    """Up to ``pool`` nearest other samples to use as shots: not the sample, not its prompt or its
    response (no shot may state the answer being asked for)."""
    own_p, own_r = normalise(prompts[row]), normalise(responses[row])
    out = []
    for j in neighbours[row]:
        j = int(j)
        if j == row or j < 0 or normalise(prompts[j]) == own_p or normalise(responses[j]) == own_r:
            continue
        out.append(j)
        if len(out) == pool:
            break
    return out


def render_prompt(question: str, shots: Sequence[tuple[str, str]], fmt: str, tokenizer) -> str:
    """The text the base continues: the shots as earlier turns, then the question, in ``fmt``."""
    if fmt == "chat":
        msgs = []
        for q, a in shots:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if fmt == "lm-eval":
        return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots) + f"Question: {question}\nAnswer:"
    return "".join(f"{q}\n{a}\n\n" for q, a in shots) + f"{question}\n"


def cache_key(settings: dict[str, Any], prompt: str, response: str) -> str:
    from ilp_ray.storage import fingerprint

    return fingerprint([settings, prompt, response])


def shot_rng(seed: int, item_id: str) -> np.random.Generator:
    """The shots' draws of one sample: seeded by (seed, its id), the same in every run."""
    from ilp_ray.storage import fingerprint

    return np.random.default_rng([seed, int(fingerprint(str(item_id)), 16)])


class Generator:
    """Samples answers from one causal LM (transformers ``generate``), batched, left-padded."""

    def __init__(self, spec: str, batch_size: int, max_length: int):
        import torch

        from ilp_ray.models import load_model

        self.model, self.tok = load_model(spec)
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.tok.padding_side = "left"
        self.tok.truncation_side = "left"  # a prompt past max_length loses its oldest shots, never the question
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.batch_size, self.max_length = batch_size, max_length

    def sample(self, texts: Sequence[str], budgets: Sequence[int], temperature: float, seed: int,
               top_p: float = 1.0) -> list[str]:
        """One sampled continuation per text, at most ``budgets[i]`` new tokens, cut at the first
        line break. Texts are batched by budget; the seed fixes the draws."""
        import torch

        out = [""] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: (budgets[i], len(texts[i])))
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start:start + self.batch_size]
            enc = self.tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_length, add_special_tokens=False).to(self.model.device)
            torch.manual_seed(seed + b)
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc, do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                    top_p=top_p if temperature > 0 else None, max_new_tokens=max(budgets[i] for i in idx),
                    pad_token_id=self.tok.pad_token_id, stop_strings=["\n"], tokenizer=self.tok)
            new = gen[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new, strict=True):
                text = self.tok.decode(row, skip_special_tokens=True)
                out[i] = text.strip().split("\n", 1)[0]
        return out


def probe(ctx, rows: np.ndarray, cfg, model: str, fmt: str, out_dir: Path | None) -> pd.DataFrame:
    """Ask the base model every sample of ``rows`` (indices into ``ctx.verdicts``) ``cfg.n`` times.

    Returns one row per probed sample: ``COLUMNS``. Reads and extends ``out_dir/beliefs.parquet``.
    """
    from ilp_ray.storage import write_table_atomic

    prompts, responses, ids = ctx.prompts(), ctx.responses(), ctx.ids
    settings = {k: getattr(cfg, k) for k in ("n", "shots", "pool", "temperature", "top_p", "seed", "max_new_tokens")}
    settings.update(model=str(model), format=fmt)
    keys = {int(r): cache_key(settings, prompts[r], responses[r]) for r in rows}
    cache_file = out_dir / "beliefs.parquet" if out_dir is not None else None
    cached: dict[str, list[str]] = {}
    if cache_file is not None and cache_file.is_file():
        old = pd.read_parquet(cache_file, columns=["key", "answers"])
        cached = {str(k): [str(a) for a in v] for k, v in zip(old["key"], old["answers"], strict=True)}
    todo = [r for r in keys if keys[r] not in cached]
    raw: dict[int, list[str]] = {r: cached[keys[r]] for r in keys if keys[r] in cached}
    if todo:
        raw.update(_generate(ctx, todo, cfg, model, fmt, prompts, responses))
    same = Sameness(cfg.short_words, cfg.same_cosine)
    norm = {r: [normalise(a) for a in raw[r]] for r in keys}
    longs = sorted({a for r in keys for a in [*norm[r], normalise(responses[r])] if len(a.split()) > cfg.short_words})
    emb = dict(zip(longs, ctx.embedder.encode(longs), strict=True)) if longs and ctx.embedder is not None else {}
    recs = []
    for r in keys:
        s = summarise(norm[r], responses[r], same, emb, cfg.min_share, cfg.knows_share)
        recs.append({"id": ids[r], "key": keys[r], **s, "answers": raw[r]})
    table = pd.DataFrame(recs, columns=list(COLUMNS))
    if cache_file is not None and todo:
        import pyarrow as pa

        keep = pd.DataFrame({"key": list(cached) + [keys[r] for r in todo],
                             "answers": list(cached.values()) + [raw[r] for r in todo]})
        write_table_atomic(pa.Table.from_pandas(keep, preserve_index=False), cache_file)
    log.info("diagnosis: the base answered %d samples x %d (%d from the cache)", len(keys), cfg.n, len(keys) - len(todo))
    return table


def _generate(ctx, rows: list[int], cfg, model: str, fmt: str, prompts, responses) -> dict[int, list[str]]:
    from ilp_ray.data.embed import torch_threads

    _, nb = ctx.prompt_neighbours(min(len(prompts), cfg.pool * 2 + 2))
    key = ("belief_generator", model, cfg.batch_size, cfg.max_length)
    gen = ctx._cache.get(key) or ctx._cache.setdefault(key, Generator(model, cfg.batch_size, cfg.max_length))
    texts, budgets, owner = [], [], []
    for r in rows:
        pool = shot_pool(nb, prompts, responses, r, cfg.pool)
        rng = shot_rng(cfg.seed, ctx.ids[r])
        n_tok = len(gen.tok(responses[r], add_special_tokens=False)["input_ids"])
        budget = int(min(cfg.max_new_tokens, 2 * n_tok + 8))
        for _ in range(cfg.n):
            pick = rng.choice(len(pool), size=min(cfg.shots, len(pool)), replace=False) if pool else []
            shots = [(prompts[pool[k]], responses[pool[k]]) for k in pick]
            texts.append(render_prompt(prompts[r], shots, fmt, gen.tok))
            budgets.append(budget)
            owner.append(r)
    with torch_threads(cfg.threads or 1):
        answers = gen.sample(texts, budgets, cfg.temperature, cfg.seed, cfg.top_p)
    out: dict[int, list[str]] = {r: [] for r in rows}
    for r, a in zip(owner, answers, strict=True):
        out[r].append(a)
    return out


def ask(ctx, cfg, run_dir: Path | None) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The probe as the diagnosis runs it: which samples to ask, with which model, and why not.

    Asks the diagnosed samples (unlearned; ``scope: top_k``: the audit's top K) whose MC item the
    audit built (``enabled: auto``) or all of them (``on``). The model and format are the
    audit's (its ``audit_config.json``) unless ``beliefs.model`` / ``beliefs.format`` say.

    Returns:
        ``(table or None, status)``; status has ``asked`` (samples) and ``model``, or ``skipped``
        with the reason, which the summary and the report show.
    """
    bc = cfg.beliefs
    if bc.enabled == "off":
        return None, {"skipped": "diagnose.beliefs.enabled is off: II and I read the MC items alone"}
    v = ctx.verdicts
    if not ctx.has_base:
        return None, {"skipped": "no base model was scored"}
    scope = v["unlearned"].to_numpy(dtype=bool)
    if cfg.scope == "top_k":
        scope &= v["in_top_k"].to_numpy(dtype=bool)
    if bc.enabled == "auto":
        from ilp_ray.detect import built_items

        scope &= built_items(v)
    rows = np.flatnonzero(scope)
    if not len(rows):
        return None, {"skipped": "no diagnosed sample has an MC item the audit built" if bc.enabled == "auto"
                      else "no sample is diagnosed"}
    audit = _audit_settings(run_dir)
    model = bc.model or audit.get("base_model")
    fmt = bc.format or audit.get("format") or "lm-eval"
    if not model:
        return None, {"skipped": "no base model to ask: set diagnose.beliefs.model (the audit's base_model "
                                 "is not in its audit_config.json)"}
    from ilp_ray.errors import DataError
    from ilp_ray.models import resolve_model

    try:
        resolve_model(model)
    except DataError as e:
        return None, {"skipped": f"the base model {model!r} cannot be loaded here ({e}); set "
                                 "diagnose.beliefs.model to a local checkpoint"}
    bc = bc.model_copy(update={"threads": bc.threads or cfg.threads or os.cpu_count() or 1})
    # The self-check first: samples the base recognises (MC p(correct) above detect's known
    # threshold), asked the same way. A base that does not produce what it recognises cannot show
    # a belief by answering; then its answers decide nothing and the diagnosed samples are not asked.
    known = np.flatnonzero(v["known_by_base"].fillna(False).to_numpy(dtype=bool)) if "known_by_base" in v \
        else np.array([], dtype=np.int64)
    if len(known) > bc.check_samples:
        known = np.sort(np.random.default_rng(bc.seed).choice(known, bc.check_samples, replace=False))
    out_dir = Path(run_dir) / "diagnosis" if run_dir is not None else None
    status: dict[str, Any] = {"asked": 0, "model": str(model), "format": fmt, "n": bc.n, "shots": bc.shots,
                              "temperature": bc.temperature,
                              "recall_check": {"samples": len(known), "recall": None, "min_recall": bc.min_recall}}
    if not len(known):
        return None, {**status, "skipped": "no sample the base recognises to check its answers against: "
                                           "II and I read the MC items"}
    check = probe(ctx, known, bc, str(model), fmt, out_dir)
    recall = float(check["knows"].mean())
    status["recall_check"]["recall"] = round(recall, 4)
    if recall < bc.min_recall:
        return None, {**status, "skipped": (
            f"asked, the base produced {recall:.0%} of the {len(known)} answers it recognises (MC p(correct) "
            f"above detect.known_threshold), under beliefs.min_recall {bc.min_recall:.0%}: its answers cannot "
            "show what it believes, so II and I read the MC items")}
    diagnosed = probe(ctx, rows, bc, str(model), fmt, out_dir)
    status.update(asked=len(rows), holds=int(diagnosed["holds"].sum()), knows=int(diagnosed["knows"].sum()))
    return diagnosed, status


def _audit_settings(run_dir: Path | None) -> dict[str, Any]:
    """The audit's base model and scoring format, from its run directory (empty when absent)."""
    if run_dir is None:
        return {}
    f = Path(run_dir) / "audit_config.json"
    if not f.is_file():
        return {}
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    return {"base_model": cfg.get("base_model"), "format": (cfg.get("scoring") or {}).get("format")}
