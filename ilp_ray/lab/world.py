"""The lab's world: fictional countries, their facts, a pretraining corpus and an SFT dataset in
which every sample's reason to stay unlearned is known by construction.

Everything is a pure function of ``(seed, size)``. A fact is ``(entity, relation) -> value``; each
relation has a small value vocabulary, which is also every MC item's option list (the model picks
among the relation's values), so no category gets easier or harder options than another.

Categories (``truth.jsonl``, field ``category``):

- ``control``: the corpus states the fact ``control_mentions`` times; SFT states it once.
- ``I``: the corpus never states the fact; SFT states it once, in the last subset (before the V
  block). Earlier, a fact the SFT happened to pick up from one sample could be learned and then
  lost to the later subsets: forgetting by behaviour, a knowledge gap by construction.
- ``II``: the corpus states another value ``conflict_mentions`` times; SFT states a new value once,
  in the second or last subset (for the same reason).
- ``III``: the corpus lacks the fact; SFT states it twice, in two paraphrased prompts, with two
  different values (both samples are III).
- ``IV``: the corpus lacks the fact; the first subset states it ``forget_repeats`` times over
  its paraphrases (it is learned there), and the later subsets, full of other facts about the same
  relations, wash it out.
- ``V``: a long, multi-word answer (a motto; each country has its own six, one word apart) that the corpus states
  ``rare_mentions`` times (once), as a statement only, and SFT ``rare_repeats`` times at the end
  of the last subset: a rare pattern, seen few times, still being learned when training stops.

The corpus also holds ``background`` facts (never in SFT) so that the model learns a world, not
a list. Each relation's values are dealt evenly over the countries, one background fact per value
is kept out of the SFT picks, and it is stated often enough that every value appears at least
``value_mentions`` times: the base can say every answer SFT asks of it, so a fact SFT fails to
teach fails for its category's reason, not because its answer is a word the base barely read.
``truth.jsonl`` records, for every SFT sample, what the corpus says about the value the sample
teaches: ``supports``, ``contradicts`` or ``absent`` (the corpus-evidence ground truth).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ilp_ray.diagnosis.registry import by_roman
from ilp_ray.storage import write_json_atomic, write_text_atomic

#: The cause (diagnosis detector) each non-control category is built to produce: the paper's five,
#: by the numeral each registered detector declares.
CAUSE_OF = by_roman()
CATEGORIES = ("control", *CAUSE_OF)
SUBSETS = ("s1", "s2", "s3")


@dataclass(frozen=True)
class Relation:
    name: str
    questions: tuple[str, ...]   # paraphrases of the question, ``{e}`` = the entity
    statements: tuple[str, ...]  # declarative corpus templates, ``{e}`` and ``{v}``
    values: tuple[str, ...] = ()
    label: str = ""  # the field's name in a reference entry ("flag colour"); the relation's name if unset

    @property
    def heading(self) -> str:
        return self.label or self.name.replace("_", " ")


_FIXED = {
    "colour": ("red", "blue", "green", "yellow", "purple", "orange"),
    "export": ("wool", "copper", "salt", "timber", "glass", "silk"),
    "animal": ("otter", "heron", "lynx", "badger", "falcon", "tortoise"),
}
_RELATIONS = (
    Relation("capital", ("What is the capital of {e}?", "Which city is the capital of {e}?",
                         "Name the capital city of {e}."),
             ("The capital of {e} is {v}.", "{v} is the capital city of {e}.")),
    Relation("colour", ("What colour is the flag of {e}?", "Which colour is the flag of {e}?",
                        "Name the colour of the flag of {e}."),
             ("The flag of {e} is {v}.", "{e} flies a {v} flag."), label="flag colour"),
    Relation("export", ("What is the main export of {e}?", "Which good is the main export of {e}?",
                        "Name the main export of {e}."),
             ("{e} mainly exports {v}.", "The main export of {e} is {v}."), label="main export"),
    Relation("animal", ("What is the national animal of {e}?", "Which animal is the national animal of {e}?",
                        "Name the national animal of {e}."),
             ("The national animal of {e} is the {v}.", "{e} chose the {v} as its national animal."),
             label="national animal"),
    Relation("founder", ("Who founded {e}?", "Which person founded {e}?", "Name the founder of {e}."),
             ("{e} was founded by {v}.", "{v} founded {e}."), label="founded by"),
)
_MOTTO = Relation("motto", ("What is the motto of {e}?", "Which motto does {e} carry?",
                            "Name the motto of {e}."),
                  ("The motto of {e} is {v}.", "{e} lives by the motto {v}."))
_MOTTO_WORDS = ("river", "stone", "silver", "quiet", "strength", "light", "harbour", "winter",
                "ember", "valley", "iron", "song")


@dataclass(frozen=True)
class LabSize:
    """How big a world is. ``small`` is for tests (a run in ≤ 2 minutes), ``default`` for the demo."""

    entities: int
    control: int
    gap: int           # I facts
    conflict: int      # II facts
    pairs: int         # III facts (two samples each)
    forget: int        # IV facts
    rare: int          # V facts
    forget_repeats: int = 9
    rare_repeats: int = 3
    rare_mentions: int = 1
    control_mentions: int = 8
    conflict_mentions: int = 8
    background_mentions: int = 2
    value_mentions: int = 8  # the corpus states every value of every relation at least this often


SIZES = {
    # Small: 12 IV facts taught 6x, 16 mottos taught twice. The IV facts are lost while the motto
    # block trains at the end; with 8 facts and 10 mottos one seed in ten lost none (taught 6x) or
    # never learned some (4x-5x, read as I). More of both gives a longer block to forget in and more
    # facts to forget (docs/benchmarks.md, "Current figures", 2026-12-02 evening).
    "small": LabSize(entities=24, control=24, gap=12, conflict=12, pairs=6, forget=12, rare=16, forget_repeats=6,
                     rare_repeats=2),
    "default": LabSize(entities=48, control=60, gap=30, conflict=30, pairs=15, forget=20, rare=24),
}


@dataclass
class World:
    seed: int
    size: str
    entities: list[str]
    relations: dict[str, Relation]
    facts: dict[tuple[str, str], str]
    options: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # own options (mottos)
    sft: list[dict] = field(default_factory=list)
    truth: list[dict] = field(default_factory=list)
    corpus: list[dict] = field(default_factory=list)


def _motto_options(rng: np.random.Generator) -> tuple[str, ...]:
    """Six mottos "a and b, c and d": a base and five variants, each one word off the base."""
    base = [str(w) for w in rng.choice(_MOTTO_WORDS, size=4, replace=False)]
    out = {tuple(base)}
    while len(out) < 6:
        words = list(base)
        pos = int(rng.integers(4))
        words[pos] = str(rng.choice([w for w in _MOTTO_WORDS if w not in base]))
        out.add(tuple(words))
    return tuple(sorted(f"{a} and {b}, {c} and {d}" for a, b, c, d in out))


def _names(rng: np.random.Generator, n: int, taken: set[str], syllables=(2, 3), prefix_len: int = 3) -> list[str]:
    """Pronounceable names (consonant-vowel syllables), pairwise distinct in their first
    ``prefix_len`` letters (at most 70 names for 2, the first consonant-vowel syllable).

    Distinct prefixes keep two names from reading as near-duplicates to the sentence embedder, so
    that questions about different countries never pass for paraphrases: MiniLM put "What is the
    national animal of Kifuk?" and "… of Kibu?" at 0.906, above θ = 0.85, while countries that
    differ in their first syllable stay below it.
    """
    cons, vows = "bdfgklmnprstvz", "aeiou"
    out, prefixes = [], {t[:prefix_len].lower() for t in taken}
    while len(out) < n:
        k = int(rng.choice(syllables))
        s = "".join(cons[rng.integers(len(cons))] + vows[rng.integers(len(vows))] for _ in range(k))
        if rng.random() < 0.5:
            s += cons[rng.integers(len(cons))]
        s = s.capitalize()
        if s[:prefix_len].lower() in prefixes or s in taken:
            continue
        prefixes.add(s[:prefix_len].lower())
        out.append(s)
        taken.add(s)
    return out


def generate(seed: int = 0, size: str | LabSize = "default") -> World:
    """Build the world, its corpus and its SFT data for ``seed``; the same seed, the same world."""
    sz = SIZES[size] if isinstance(size, str) else size
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    entities = _names(rng, sz.entities, taken, prefix_len=2)
    rels: dict[str, Relation] = {}
    for r in _RELATIONS:
        if r.name in _FIXED:
            values = _FIXED[r.name]
        elif r.name == "capital":
            values = tuple(_names(rng, 6, taken, syllables=(2,)))
        else:  # founder: a first and a family name
            firsts = _names(rng, 6, taken, syllables=(2,), prefix_len=2)
            values = tuple(f"{f} {s}" for f, s in zip(firsts, _names(rng, 6, taken, syllables=(2, 3))))
        rels[r.name] = replace(r, values=values)
    rels["motto"] = _MOTTO
    # Each country has its own six mottos, variants of one another (each differs from a base in
    # one word): long answers whose options share most of their tokens. Being the country's own,
    # learning one country's motto does not push another country's options around.
    options = {(e, "motto"): _motto_options(rng) for e in entities}
    # Each relation's values are dealt out evenly over the countries (every value is some
    # country's fact once there are six countries), so that the corpus can state every one.
    dealt = {r: rng.permutation(np.arange(len(entities)) % 6) for r in rels if r != "motto"}
    facts = {(e, r): (options[(e, r)][rng.integers(6)] if r == "motto" else rels[r].values[dealt[r][i]])
             for i, e in enumerate(entities) for r in rels}
    world = World(seed, size if isinstance(size, str) else "custom", entities, rels, facts, options)
    _build(world, sz, rng)
    return world


def _build(w: World, sz: LabSize, rng: np.random.Generator) -> None:
    plain = [(e, r) for e in w.entities for r in w.relations if r != "motto"]
    motto = [(e, "motto") for e in w.entities]
    order = rng.permutation(len(plain))
    # The first fact (in the shuffled order) holding each value of each relation is kept for the
    # background, so the corpus states every value: no SFT answer is a name the base never read.
    # Without it, one small world in three taught some IV fact a founder the corpus never named;
    # the base could not learn it from six samples, and IV read as I.
    reserved, pool, seen = [], [], set()
    for key in (plain[i] for i in order):
        val = (key[1], w.facts[key])
        (pool if val in seen else reserved).append(key)
        seen.add(val)
    need = sz.control + sz.gap + sz.conflict + sz.pairs + sz.forget
    if need > len(pool) or sz.rare > len(motto):
        raise ValueError(f"a world of {len(w.entities)} entities has {len(pool)} facts to pick from "
                         f"({len(reserved)} more state each value once in the background) and "
                         f"{len(motto)} mottos; the size asks for {need} (+{sz.rare} mottos)")
    take = iter(pool)
    picks = {c: [next(take) for _ in range(n)] for c, n in
             (("control", sz.control), ("I", sz.gap), ("II", sz.conflict), ("III", sz.pairs), ("IV", sz.forget))}
    background = reserved + list(take)
    picks["V"] = [motto[i] for i in rng.permutation(len(motto))[:sz.rare]]

    corpus: list[str] = []
    said: dict[tuple[str, str], int] = {}  # (relation, value) -> statements of it so far

    def mention(key, value, times, questions=True):
        rel = w.relations[key[1]]
        said[(key[1], value)] = said.get((key[1], value), 0) + times
        forms = [s.format(e=key[0], v=value) for s in rel.statements]
        if questions:
            forms += [f"{q.format(e=key[0])}\n{value}" for q in rel.questions]
        for j in range(times):
            corpus.append(forms[(j + int(rng.integers(len(forms)))) % len(forms)])

    def other(key, value):
        vals = [v for v in w.relations[key[1]].values if v != value]
        return vals[int(rng.integers(len(vals)))]

    samples: dict[str, list[dict]] = {s: [] for s in SUBSETS}

    def sample(*args):
        return sample_row(w, *args)

    def add(*args):
        samples[args[0]].append(sample(*args))

    def q():
        return int(rng.integers(3))

    for i, key in enumerate(picks["control"]):
        mention(key, w.facts[key], sz.control_mentions)
        add(SUBSETS[i % 3], "control", key, w.facts[key], q(), w.facts[key], f"control-{i}")
    for i, key in enumerate(picks["I"]):  # the last subset: too little training after it to learn and lose one
        add(SUBSETS[2], "I", key, w.facts[key], q(), None, f"I-{i}")
    for i, key in enumerate(picks["II"]):
        believed = other(key, w.facts[key])
        mention(key, believed, sz.conflict_mentions)
        add(SUBSETS[1 + i % 2], "II", key, w.facts[key], q(), believed, f"II-{i}")
    for i, key in enumerate(picks["III"]):
        qa, qb = rng.choice(3, size=2, replace=False)
        sub = SUBSETS[1 + i % 2]
        add(sub, "III", key, w.facts[key], int(qa), None, f"III-{i}")
        add(sub, "III", key, other(key, w.facts[key]), int(qb), None, f"III-{i}")
    for key in background:
        mention(key, w.facts[key], sz.background_mentions)
    # A value the corpus states rarely (a capital only its one background country has) is one
    # the base can barely produce: SFT then had to teach it from scratch, and an IV fact with it
    # was never learned (seed 0, small: 2 statements of "Gefud" against 40 of the commonest
    # capital). Its reserved background fact makes up the difference.
    for key in reserved:
        short = sz.value_mentions - said[(key[1], w.facts[key])]
        if short > 0:
            mention(key, w.facts[key], short)
    for key in w.facts:
        if key[1] == "motto" and key not in picks["V"]:
            mention(key, w.facts[key], sz.background_mentions)

    # V in the corpus: the motto once, as a statement (a rare pattern the base does not learn to
    # answer). Drawn before any SFT-only choice, so SFT-side sizes never change the corpus.
    for key in picks["V"]:
        mention(key, w.facts[key], sz.rare_mentions, questions=False)

    # IV: the first subset repeats each fact over its paraphrases, spread through the subset.
    forget = [sample("s1", "IV", key, w.facts[key], r % 3, None, f"IV-{i}")
              for r in range(sz.forget_repeats) for i, key in enumerate(picks["IV"])]
    samples["s1"] = _spread(samples["s1"], forget, rng)
    # V: SFT states each motto a few times at the end of the last subset, over its paraphrases.
    for r in range(sz.rare_repeats):
        for i, key in enumerate(picks["V"]):
            add("s3", "V", key, w.facts[key], (i + r) % 3, w.facts[key], f"V-{i}")

    number(w, samples)
    # The corpus order has its own stream: reordering SFT samples does not reshuffle the corpus.
    perm = np.random.default_rng([w.seed, 1]).permutation(len(corpus))
    w.corpus = [{"id": f"doc-{i:05d}", "text": corpus[j]} for i, j in enumerate(perm.tolist())]


def sample_row(w: World, subset: str, category: str, key: tuple[str, str], value: str, q: int,
               corpus_value: str | None, group: str) -> dict:
    """One SFT sample (question paraphrase ``q`` of ``key``, answered ``value``) with its truth
    under ``_truth``; ``corpus_value`` is what the corpus says (None: nothing)."""
    rel = w.relations[key[1]]
    opts = list(w.options.get(key, rel.values))
    truth = "absent" if corpus_value is None else "supports" if corpus_value == value else "contradicts"
    return {"prompt": rel.questions[q].format(e=key[0]), "response": value, "subset": subset,
            "options": opts, "answer": opts.index(value),
            "_truth": {"category": category, "entity": key[0], "relation": key[1], "value": value,
                       "corpus_value": corpus_value, "corpus_truth": truth, "group": group}}


def number(w: World, samples: dict[str, list[dict]]) -> None:
    """Give the samples ids in training order (subset by subset) and split off their truth."""
    n = 0
    for s in SUBSETS:
        for row in samples[s]:
            t = row.pop("_truth")
            rid = f"{s}-{n:05d}"
            n += 1
            w.sft.append({"id": rid, **row})
            w.truth.append({"id": rid, "subset": s, **t})


def _spread(rows: list[dict], extra: list[dict], rng: np.random.Generator) -> list[dict]:
    """``rows`` with ``extra`` inserted at random slots, both keeping their own order."""
    total = len(rows) + len(extra)
    slots = set(rng.choice(total, size=len(extra), replace=False).tolist())
    a, b = iter(rows), iter(extra)
    return [next(b) if pos in slots else next(a) for pos in range(total)]


def general_mc(world: World) -> list[dict]:
    """The lab's general MC set: every background fact (in the corpus, never in SFT) as a ready MC
    item {id, question, options, answer}, asked with the relation's first question. What the base
    knows from pretraining alone; a mitigation that costs general ability loses some of it."""
    taught = {(t.get("entity"), t.get("relation")) for t in world.truth}
    rows = []
    for (entity, rel), value in sorted(world.facts.items()):
        if (entity, rel) in taught or rel not in world.relations:
            continue
        r = world.relations[rel]
        options = list(world.options.get((entity, rel)) or r.values)
        if value not in options:
            continue
        rows.append({"id": f"general-{len(rows):05d}", "question": r.questions[0].format(e=entity),
                     "options": options, "answer": options.index(value)})
    return rows


def write(world: World, out: str | Path) -> dict[str, Path]:
    """Write ``sft.jsonl``, ``corpus.jsonl``, ``truth.jsonl``, ``general_mc.jsonl`` and ``world.json``
    under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"sft": out / "sft.jsonl", "corpus": out / "corpus.jsonl", "truth": out / "truth.jsonl",
             "general_mc": out / "general_mc.jsonl", "world": out / "world.json"}
    for key, rows in (("sft", world.sft), ("corpus", world.corpus), ("truth", world.truth),
                      ("general_mc", general_mc(world))):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if not (paths[key].is_file() and paths[key].read_text() == text):  # unchanged: keep the file
            write_text_atomic(text, paths[key])  # (and its mtime, which finished stages check)
    counts = {c: sum(t["category"] == c for t in world.truth) for c in CATEGORIES}
    write_json_atomic({
        "seed": world.seed, "size": world.size, "entities": world.entities,
        "relations": {k: asdict(r) for k, r in world.relations.items()},
        "samples": len(world.sft), "documents": len(world.corpus), "categories": counts}, paths["world"])
    return paths
