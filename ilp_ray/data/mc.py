"""Turn SFT records into multiple-choice items (paper section 3.1.1).

The original response is the correct option; the k-1 distractors are other records' responses,
chosen so that the item is a fair question: plausible wrong answers of the same type and form as
the answer, none of them itself correct.

Design choices:

- **Same form, same kind of question first** (``distractors: typed``, the default). In mixed SFT
  data the nearest answers by meaning are often of another kind: "What is the alpha-2 code of
  Denmark?" drew ``HRK``, ``Hg`` and ``N`` next to ``DK``, and a model then picks the shortest or
  commonest string, so "unlearned" measures the item. A distractor must have the answer's form
  (``forms.AnswerForm``: number / token / words, script, casing, the exact length of a short
  code, and a length within ``length_ratio``), and comes first from records that share the
  prompt's template (``forms.prompt_templates``: "…code of *?"), then from any record. Only when
  the data has too few answers of that form is the form relaxed, in two recorded steps
  (``McItem.fallback``: 1, the same kind and script; 2, any answer). ``nearest`` is the plain
  nearest-meaning search, any form (the behaviour before typed distractors).
- **Response-only embeddings.** Within a stage candidates are ranked by the cosine of their
  answers to this answer, so distractors are plausible. Embedding prompt+response would rank
  records with a similar *question* first, and their responses are the ones most likely to also
  be correct for this prompt (paraphrased or repeated questions). One response embedding also
  serves the near-duplicate test, so each distinct text is encoded once.
- **Exclusions: no distractor may be correct.** A candidate is skipped when its text equals the
  answer after whitespace/case normalisation, when its cosine with the answer is >= ``near_dup``,
  when it repeats an already chosen distractor's normalised text or its cosine with one is
  >= ``near_dup``, and (``subject_check``) when it names or echoes the question's subject, the
  prompt's rare content words: "a stream or brook", another record's answer, is right for "Define
  the word 'brook'" too, yet its cosine with the trained definition is far below ``near_dup``. An
  echo is a word of the same beginning (``forms.mentions``): "Africa/Tirvstead" offered for the
  zone of "Tirvund" drew SmolLM2 to copy it (p 1.00), a cue the answer did not have.
- **Subset preference.** Within each stage, candidates from the record's own subset are tried
  first (nearest first); other subsets only fill what is left.
- **Option layout.** The distractors keep the order they were chosen in; the answer is inserted at
  a position drawn uniformly from ``numpy.random.default_rng(seed).integers(0, k, size=len(records))``,
  one draw per record in record order (pre-built items too), so the layout depends only on the
  seed and the record order, never on batch or block sizes. ``distractor_ids[j]`` is the id of
  the record whose response is the j-th option once the answer is removed:
  ``options[:answer] + options[answer+1:]``.
- **Scale.** No n x n matrix: ``topk_neighbours`` scores blocks of queries against all candidates,
  keeping a pool of ``8k`` per query, and the pool widens (x4) only for queries whose exclusions
  exhaust it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ilp_ray.data.embed import TextEmbedder, get_embedder
from ilp_ray.data.forms import mentions
from ilp_ray.errors import DataError
from ilp_ray.neighbours import topk_neighbours
from ilp_ray.records import McItem, SftRecord

_POOL_PER_OPTION = 8


def normalize_text(text: str) -> str:
    """Whitespace- and case-insensitive key used for exact-duplicate tests."""
    return " ".join(text.split()).casefold()


DISTRACTORS = ("typed", "nearest")


def build_mc_items(records: Sequence[SftRecord], k: int = 4, seed: int = 0, near_dup: float = 0.95,
                   prefer_same_subset: bool = True, embedder: TextEmbedder | None = None,
                   batch_size: int = 256, block_size: int | None = None, distractors: str = "typed",
                   length_ratio: float = 2.0, subject_check: bool = True,
                   min_df: int | None = None) -> list[McItem]:
    """Convert records to k-option MC items with nearest-neighbour distractors.

    Args:
        records: the SFT records; ids must be unique. Records with ``options``/``answer`` keep them.
        k: options per item (the answer plus k-1 distractors), >= 2.
        seed: seeds the answer positions.
        near_dup: cosine at or above which two texts count as the same answer, in (0, 1].
        prefer_same_subset: draw distractors from the record's subset first.
        embedder: a ``TextEmbedder``; the shared MiniLM ``Embedder`` if None.
        batch_size: encoding batch size for the default embedder.
        block_size: queries per search block (see ``topk_neighbours``); None picks it from memory.
        distractors: ``typed`` (answers of the same form, from the same prompt template first; see
            the module docstring) or ``nearest`` (the nearest answers by meaning, of any form).
        length_ratio: for ``typed``, a distractor's length is within this factor of the answer's.
        subject_check: skip a candidate that mentions the question's subject (its rare words).
        min_df: prompt-template word frequency (``forms.prompt_templates``); None: its default.

    Returns:
        One ``McItem`` per record, in record order; ``question`` is the prompt. ``fallback`` says
        how far the search had to relax the answer's form (0: not at all).

    Raises:
        ValueError: a bad argument (names the argument).
        DataError: duplicate ids; fewer than k distinct responses; or a record for which fewer
            than k-1 valid distractors exist (names the record and how many were found).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if not 0.0 < near_dup <= 1.0:
        raise ValueError(f"near_dup must be in (0, 1], got {near_dup!r}")
    if distractors not in DISTRACTORS:
        raise ValueError(f"distractors must be one of {DISTRACTORS}, got {distractors!r}")
    if not length_ratio >= 1.0:
        raise ValueError(f"length_ratio must be >= 1, got {length_ratio!r}")
    records = list(records)
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise DataError(f"duplicate record id {r.id!r}", field="id")
        seen.add(r.id)
        if (r.options is None) != (r.answer is None):
            raise DataError(f"record {r.id!r}: 'options' and 'answer' must be given together", field="options")
    positions = np.random.default_rng(seed).integers(0, k, size=len(records))
    todo = [i for i, r in enumerate(records) if r.options is None]
    chosen: dict[int, list[int]] = {}
    levels: dict[int, int] = {}
    if todo:
        search = _Search(records, k, near_dup, prefer_same_subset, embedder or get_embedder(batch_size),
                         block_size, typed=distractors == "typed", length_ratio=length_ratio,
                         subject_check=subject_check, min_df=min_df)
        chosen = search.run(todo)
        levels = search.levels
    items = []
    for i, r in enumerate(records):
        if r.options is not None:
            items.append(McItem(id=r.id, question=r.prompt, options=tuple(r.options), answer=int(r.answer),
                                subset=r.subset, position=r.position, history=r.history))
            continue
        picks = [records[j] for j in chosen[i]]
        a = int(positions[i])
        opts = [p.response for p in picks]
        opts.insert(a, r.response)
        items.append(McItem(id=r.id, question=r.prompt, options=tuple(opts), answer=a,
                            distractor_ids=tuple(p.id for p in picks), subset=r.subset, position=r.position,
                            fallback=levels.get(i, 0), history=r.history))
    return items


class _Search:
    """Distractor selection state: unique texts, their embeddings, forms and the candidate entries.

    An *entry* is a distinct (subset, normalised text) pair, or a distinct normalised text when
    subsets are ignored; its representative is the first record carrying it, whose id and original
    text become the option.

    The search runs in stages, each over a narrower-to-wider pool of candidates, and a record
    leaves once it has k-1 distractors. ``typed``: (1) records of the same prompt template (and
    subset, when preferred) whose answers have the answer's form (``forms.AnswerForm``: kind,
    script, casing, short-code length, and length within ``length_ratio``); (2) any record with
    that form; (3) the same kind and script, length and casing relaxed (fallback 1); (4) any
    answer (fallback 2). ``nearest``: the record's subset, then every record, by meaning alone.
    Within a stage, candidates come nearest-first by answer embedding.
    """

    def __init__(self, records: list[SftRecord], k: int, near_dup: float, by_subset: bool,
                 embedder: TextEmbedder, block_size: int | None, typed: bool = True,
                 length_ratio: float = 2.0, subject_check: bool = True, min_df: int | None = None):
        from ilp_ray.data.forms import answer_form, prompt_templates

        self.records, self.k, self.near_dup, self.by_subset = records, k, near_dup, by_subset
        self.block_size, self.typed, self.length_ratio = block_size, typed, length_ratio
        text_of: dict[str, int] = {}
        first_text: list[str] = []
        self.rec_text = np.empty(len(records), dtype=np.int64)  # record -> unique text
        for i, r in enumerate(records):
            key = normalize_text(r.response)
            if key not in text_of:
                text_of[key] = len(first_text)
                first_text.append(r.response)
            self.rec_text[i] = text_of[key]
        self.n_texts = len(first_text)
        if self.n_texts < k:
            raise DataError(f"only {self.n_texts} distinct responses among {len(records)} records; "
                            f"{k}-option items need at least {k}. Lower k or add data.", field="response")
        emb = np.asarray(embedder.encode(first_text), dtype=np.float32)
        if emb.ndim != 2 or len(emb) != self.n_texts:
            raise ValueError(f"embedder returned shape {emb.shape} for {self.n_texts} texts")
        # Renormalise: a custom embedder may not, and dot products must be cosines.
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.emb = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        self.texts = first_text
        self.forms = [answer_form(t) for t in first_text]
        subsets = sorted({r.subset for r in records})
        code = {s: c for c, s in enumerate(subsets)}
        self.rec_subset = np.array([code[r.subset] for r in records], dtype=np.int64)
        entry_of: dict[tuple[int, int], int] = {}
        rep: list[int] = []
        self.rec_entry = np.empty(len(records), dtype=np.int64)
        for i in range(len(records)):
            key = (int(self.rec_subset[i]) if by_subset else 0, int(self.rec_text[i]))
            if key not in entry_of:
                entry_of[key] = len(rep)
                rep.append(i)
            self.rec_entry[i] = entry_of[key]
        self.entry_rec = np.array(rep, dtype=np.int64)
        self.entry_text = self.rec_text[self.entry_rec]
        self.entry_subset = self.rec_subset[self.entry_rec]
        templates = prompt_templates([r.prompt for r in records], min_df) if typed else None
        self.rec_template = np.array(templates.ids if typed else np.zeros(len(records)), dtype=np.int64)
        self.subjects = templates.subjects if (typed and subject_check) else None
        self.rec_form = self._codes([self.forms[t].key for t in self.rec_text])
        self.rec_kind = self._codes([(self.forms[t].kind, self.forms[t].script) for t in self.rec_text])
        self.levels: dict[int, int] = {}

    @staticmethod
    def _codes(keys: list) -> np.ndarray:
        index: dict = {}
        return np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)

    def _stages(self) -> list[tuple[tuple[np.ndarray, ...], bool, int]]:
        """(record key arrays a candidate must share with the query, strict form?, fallback level)."""
        sub = (self.rec_subset,) if self.by_subset else ()
        if not self.typed:
            return [(sub, False, 0), ((), False, 0)] if sub else [((), False, 0)]
        t, f = self.rec_template, self.rec_form
        stages = [((t, *sub, f), True, 0), ((t, f), True, 0)] if sub else [((t, f), True, 0)]
        stages += [((*sub, f), True, 0), ((f,), True, 0)] if sub else [((f,), True, 0)]
        return [*stages, ((self.rec_kind,), False, 1), ((), False, 2)]

    def run(self, todo: list[int]) -> dict[int, list[int]]:
        """Pick k-1 distractor record indices for each record index in ``todo``."""
        chosen: dict[int, list[int]] = {i: [] for i in todo}  # entry ids until the end
        for keys, strict, level in self._stages():
            short = np.array([i for i in todo if len(chosen[i]) < self.k - 1], dtype=np.int64)
            if not short.size:
                break
            before = {int(q): len(chosen[int(q)]) for q in short}
            if keys:
                groups: dict[tuple, list[int]] = {}
                for i in range(len(self.records)):
                    groups.setdefault(tuple(int(a[i]) for a in keys), []).append(i)
                by_key: dict[tuple, list[int]] = {}
                for q in short.tolist():
                    by_key.setdefault(tuple(int(a[q]) for a in keys), []).append(q)
                for key, qs in by_key.items():
                    members = groups[key]
                    if len(members) < 2:
                        continue
                    cand = np.unique(self.rec_entry[members])
                    self._fill(np.array(qs, dtype=np.int64), cand, chosen, strict)
            else:
                self._fill(short, np.arange(len(self.entry_rec)), chosen, strict)
            if level:
                for q in short.tolist():
                    if len(chosen[q]) > before[q]:
                        self.levels[q] = max(self.levels.get(q, 0), level)
        self._check(todo, chosen)
        return {i: [int(self.entry_rec[e]) for e in es] for i, es in chosen.items()}

    def _fill(self, queries: np.ndarray, cand: np.ndarray, chosen: dict[int, list[int]], strict: bool) -> None:
        """Extend ``chosen[q]`` from entries ``cand``, widening the pool until every query is
        filled or the candidates are exhausted."""
        if cand.size == 0 or queries.size == 0:
            return
        keys = self.emb[self.entry_text[cand]]
        base = {int(q): list(chosen[q]) for q in queries}
        m = min(len(cand), _POOL_PER_OPTION * self.k)
        while queries.size:
            idx, scores = topk_neighbours(self.emb[self.rec_text[queries]], keys, m, self.block_size)
            short = []
            for q, row, sc in zip(queries, idx, scores):
                # Restart from the pre-call state: the wider pool's ranking starts with the narrower
                # one, so the picks do not depend on how often the pool was widened.
                picks = list(base[int(q)])
                self._greedy(int(q), cand[row], sc, picks, strict)
                chosen[int(q)] = picks
                if len(picks) < self.k - 1:
                    short.append(q)
            if m >= len(cand):
                return
            queries = np.array(short, dtype=np.int64)
            m = min(len(cand), m * 4)

    def _greedy(self, q: int, ranked: np.ndarray, scores: np.ndarray, picks: list[int], strict: bool) -> None:
        qt = self.rec_text[q]
        form = self.forms[qt]
        subject = self.subjects[q] if self.subjects is not None else None
        texts = {int(self.entry_text[e]) for e in picks}
        vecs = [self.emb[t] for t in texts]
        for e, s in zip(ranked, scores):
            if len(picks) >= self.k - 1:
                return
            t = int(self.entry_text[e])
            # Same text id == same normalised text: the answer itself or an exact duplicate of it.
            if t == qt or t in texts or s >= self.near_dup:
                continue
            if strict and not form.compatible(self.forms[t], self.length_ratio):
                continue
            # Another record's answer that names this question's subject is likely right here too.
            if subject and mentions(self.texts[t], subject, echo=True):
                continue
            v = self.emb[t]
            if vecs and float(np.max(np.stack(vecs) @ v)) >= self.near_dup:
                continue
            picks.append(int(e))
            texts.add(t)
            vecs.append(v)

    def _check(self, todo: list[int], chosen: dict[int, list[int]]) -> None:
        short = [i for i in todo if len(chosen[i]) < self.k - 1]
        if not short:
            return
        i = short[0]
        more = f" ({len(short) - 1} more records are short too)" if len(short) > 1 else ""
        raise DataError(
            f"record {self.records[i].id!r}: only {len(chosen[i])} valid distractors found among "
            f"{self.n_texts - 1} other distinct responses, need {self.k - 1} (candidates equal to the "
            f"answer or to each other, with cosine >= {self.near_dup}, or naming the question's "
            f"subject, are excluded). The data is too uniform: lower k or raise near_dup{more}.",
            field="response")
