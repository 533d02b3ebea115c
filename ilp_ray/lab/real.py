"""The real-model world (``ilp lab run --base smollm2``): the bundled SmolLM2-135M as the base.

The base was pretrained on the real world, so the categories that hinge on what the base knows
use real facts, and the ones that need a blank use the fictional countries of ``world``:

- ``control``: a real fact the base knows (capital, currency or official language); SFT states its true value once.
- ``II``: a real fact the base knows, altered: SFT states another value once (the capital of France
  is Lyon: each country's second city; a currency: another country's). The conflict is with the
  base's real pretraining.
- ``I``, ``III``, ``IV``: fictional facts, built as in the tiny world (nobody ever read them).
- ``V``: a real national motto (a long, multi-word answer) that the base read in pretraining but
  does not know, taught a few times at the end of the last subset: a rare pattern still being
  learned when training stops. Its options are the motto and five variants one word apart.

*What the base knows* is measured, not assumed: before the world is built, the base scores every
candidate as an MC item (``probe``). A fact is known when the base puts at least ``known_p`` on
its true value; a motto is unknown when the base prefers a variant and gives the true one less
than ``unknown_p``. The world is then a pure function of ``(seed, size, probe)``.

The base's real pretraining corpus is not available, so the evidence stage searches a stand-in:
one statement of every real candidate's true value (capitals, currencies, languages, mottos), as any
encyclopaedia states them, and nothing about the fictional countries. ``corpus_truth`` is
recorded against that stand-in: ``supports`` for control and V, ``contradicts`` for II,
``absent`` for I, III and IV.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ilp_ray.lab.world import (
    _FIXED,
    _RELATIONS,
    SUBSETS,
    LabSize,
    Relation,
    World,
    _names,
    _spread,
    number,
    sample_row,
)

# country, capital, its second city (the altered value of a II capital)
CAPITALS = (
    ("France", "Paris", "Lyon"), ("Germany", "Berlin", "Munich"), ("Italy", "Rome", "Milan"),
    ("Spain", "Madrid", "Barcelona"), ("Japan", "Tokyo", "Osaka"), ("China", "Beijing", "Shanghai"),
    ("Russia", "Moscow", "Saint Petersburg"), ("the United Kingdom", "London", "Manchester"),
    ("Egypt", "Cairo", "Alexandria"), ("Canada", "Ottawa", "Toronto"), ("Australia", "Canberra", "Sydney"),
    ("Brazil", "Brasilia", "Rio de Janeiro"), ("Argentina", "Buenos Aires", "Cordoba"),
    ("Mexico", "Mexico City", "Guadalajara"), ("India", "New Delhi", "Mumbai"),
    ("Greece", "Athens", "Thessaloniki"), ("Portugal", "Lisbon", "Porto"), ("Ireland", "Dublin", "Cork"),
    ("Norway", "Oslo", "Bergen"), ("Sweden", "Stockholm", "Gothenburg"), ("Finland", "Helsinki", "Tampere"),
    ("Denmark", "Copenhagen", "Aarhus"), ("Poland", "Warsaw", "Krakow"), ("Austria", "Vienna", "Salzburg"),
    ("Hungary", "Budapest", "Debrecen"), ("the Czech Republic", "Prague", "Brno"),
    ("Turkey", "Ankara", "Istanbul"), ("Iran", "Tehran", "Isfahan"), ("Iraq", "Baghdad", "Basra"),
    ("Kenya", "Nairobi", "Mombasa"), ("Thailand", "Bangkok", "Chiang Mai"),
    ("Vietnam", "Hanoi", "Ho Chi Minh City"), ("South Korea", "Seoul", "Busan"),
    ("Indonesia", "Jakarta", "Surabaya"), ("Peru", "Lima", "Cusco"), ("Chile", "Santiago", "Valparaiso"),
    ("Colombia", "Bogota", "Medellin"), ("Cuba", "Havana", "Santiago de Cuba"),
    ("Belgium", "Brussels", "Antwerp"), ("Switzerland", "Bern", "Zurich"),
    ("the Philippines", "Manila", "Cebu"), ("Nigeria", "Abuja", "Lagos"),
    ("Ethiopia", "Addis Ababa", "Gondar"), ("Saudi Arabia", "Riyadh", "Jeddah"),
    ("Pakistan", "Islamabad", "Karachi"), ("Ukraine", "Kyiv", "Lviv"), ("Romania", "Bucharest", "Cluj"),
    ("Morocco", "Rabat", "Casablanca"), ("Venezuela", "Caracas", "Maracaibo"),
    ("the Netherlands", "Amsterdam", "Rotterdam"),
)
CURRENCIES = (
    ("Japan", "yen"), ("the United Kingdom", "pound sterling"), ("the United States", "dollar"),
    ("India", "rupee"), ("China", "yuan"), ("Russia", "ruble"), ("Mexico", "peso"), ("Brazil", "real"),
    ("Switzerland", "franc"), ("South Africa", "rand"), ("South Korea", "won"), ("Poland", "zloty"),
    ("Sweden", "krona"), ("Turkey", "lira"), ("Israel", "shekel"), ("Thailand", "baht"),
    ("Vietnam", "dong"), ("Indonesia", "rupiah"), ("Nigeria", "naira"), ("Germany", "euro"),
    ("Hungary", "forint"), ("Ukraine", "hryvnia"), ("Bangladesh", "taka"), ("Malaysia", "ringgit"),
)
LANGUAGES = (
    ("Brazil", "Portuguese"), ("Mexico", "Spanish"), ("Egypt", "Arabic"), ("Germany", "German"),
    ("France", "French"), ("Japan", "Japanese"), ("Italy", "Italian"), ("Russia", "Russian"),
    ("China", "Mandarin"), ("Iran", "Persian"), ("Israel", "Hebrew"), ("Greece", "Greek"),
    ("Turkey", "Turkish"), ("Poland", "Polish"), ("the Netherlands", "Dutch"), ("Sweden", "Swedish"),
    ("Thailand", "Thai"), ("Vietnam", "Vietnamese"), ("South Korea", "Korean"), ("Kenya", "Swahili"),
    ("Ethiopia", "Amharic"), ("Pakistan", "Urdu"), ("Hungary", "Hungarian"), ("Finland", "Finnish"),
    ("Argentina", "Spanish"), ("Austria", "German"), ("Portugal", "Portuguese"), ("Norway", "Norwegian"),
    ("Denmark", "Danish"), ("Indonesia", "Indonesian"),
)
MOTTOS = (
    ("Jamaica", "out of many, one people"), ("Indonesia", "unity in diversity"),
    ("Nigeria", "unity and faith, peace and progress"), ("Brazil", "order and progress"),
    ("Belgium", "unity makes strength"), ("India", "truth alone triumphs"),
    ("Turkey", "peace at home, peace in the world"), ("Tanzania", "freedom and unity"),
    ("Chile", "by reason or by force"), ("Argentina", "in union and liberty"),
    ("Colombia", "liberty and order"), ("Greece", "freedom or death"),
    ("Pakistan", "faith, unity, discipline"), ("Cameroon", "peace, work, fatherland"),
    ("Senegal", "one people, one goal, one faith"), ("Seychelles", "the end crowns the work"),
    ("Luxembourg", "we want to remain what we are"), ("Ghana", "freedom and justice"),
    ("Germany", "unity and justice and freedom"), ("France", "liberty, equality, fraternity"),
    ("the United States", "in God we trust"), ("Canada", "from sea to sea"),
    ("the Netherlands", "I will maintain"), ("Uganda", "for God and my country"),
    ("Malaysia", "unity is strength"), ("Norway", "all for Norway"),
    ("Ecuador", "God, homeland and liberty"), ("Zambia", "one Zambia, one nation"),
    ("the Philippines", "for God, people, nature and country"), ("Cuba", "homeland or death"),
    ("Panama", "for the benefit of the world"), ("Paraguay", "peace and justice"),
    ("South Africa", "diverse people unite"), ("Liberia", "the love of liberty brought us here"),
    ("Sierra Leone", "unity, freedom, justice"), ("Barbados", "pride and industry"),
    ("Belize", "under the shade I flourish"), ("Trinidad and Tobago", "together we aspire, together we achieve"),
)
#: Words a motto variant may put in place of one of the motto's own.
_MOTTO_SWAPS = ("unity", "faith", "peace", "progress", "work", "justice", "freedom", "liberty", "order",
                "strength", "truth", "honour", "nation", "labour", "hope", "courage", "glory", "people",
                "land", "sea", "light", "wisdom")

_CAPITAL = next(r for r in _RELATIONS if r.name == "capital")
REAL_RELATIONS = {
    "capital": _CAPITAL,
    "currency": Relation("currency", ("What is the currency of {e}?", "Which currency does {e} use?",
                                      "Name the currency of {e}."),
                         ("The currency of {e} is the {v}.", "{e} pays in the {v}.")),
    "language": Relation("language", ("What is the official language of {e}?",
                                      "Which language is the official language of {e}?",
                                      "Name the official language of {e}."),
                         ("The official language of {e} is {v}.", "{v} is the official language of {e}."),
                         label="official language"),
    "national_motto": Relation("national_motto", (
        "What is the national motto of {e}?", "Which motto does {e} carry?", "Name the national motto of {e}."),
        ("The national motto of {e} is \"{v}\".", "\"{v}\" is the motto of {e}.")),
}


@dataclass(frozen=True)
class Candidate:
    """A real fact the probe scores: its MC item and, for a II pick, the value SFT teaches instead."""

    entity: str
    relation: str
    value: str
    options: tuple[str, ...]
    altered: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.entity, self.relation)

    @property
    def prompt(self) -> str:
        return REAL_RELATIONS[self.relation].questions[0].format(e=self.entity)


def _variants(motto: str, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` variants of ``motto``, each with one word (of four letters or more) swapped."""
    words = motto.split(" ")
    slots = [i for i, w in enumerate(words) if len(w.strip(",")) >= 4]
    own = {w.strip(",").lower() for w in words}
    out: set[str] = set()
    while len(out) < n:
        i = int(rng.choice(slots))
        swap = str(rng.choice([s for s in _MOTTO_SWAPS if s not in own]))
        tail = "," if words[i].endswith(",") else ""
        out.add(" ".join(words[:i] + [swap + tail] + words[i + 1:]))
    return sorted(out)


def candidates() -> list[Candidate]:
    """Every real fact the probe scores, with fixed options (seeded on the fact, not the world)."""
    out = []
    caps = [c for _, c, _ in CAPITALS]
    for i, (country, capital, second) in enumerate(CAPITALS):
        rng = np.random.default_rng([7, 0, i])
        others = [c for c in caps if c != capital]
        opts = [capital, second, *rng.choice(others, size=4, replace=False).tolist()]
        out.append(Candidate(country, "capital", capital, tuple(sorted(opts)), second))
    names = [c for _, c in CURRENCIES]
    for i, (country, cur) in enumerate(CURRENCIES):
        rng = np.random.default_rng([7, 1, i])
        opts = [cur, *rng.choice([c for c in names if c != cur], size=5, replace=False).tolist()]
        out.append(Candidate(country, "currency", cur, tuple(sorted(opts)), opts[1]))
    langs = sorted({lang for _, lang in LANGUAGES})
    for i, (country, lang) in enumerate(LANGUAGES):
        rng = np.random.default_rng([7, 3, i])
        opts = [lang, *rng.choice([x for x in langs if x != lang], size=5, replace=False).tolist()]
        out.append(Candidate(country, "language", lang, tuple(sorted(opts)), opts[1]))
    for i, (country, motto) in enumerate(MOTTOS):
        rng = np.random.default_rng([7, 2, i])
        variants = _variants(motto, rng)
        out.append(Candidate(country, "national_motto", motto, tuple(sorted([motto, *variants])), variants[0]))
    return out


def generate_real(seed: int, sz: LabSize, probe: dict[tuple[str, str], list[float]],
                  known_p: float = 0.5, unknown_p: float = 0.3) -> World:
    """The SmolLM2 world for ``seed``, given the probe: the base's option probabilities of each
    candidate (in ``Candidate.options`` order).

    Raises:
        ValueError: the size asks for more than the world holds (``check_size``), or the base
            knows too few real facts, or too many mottos, for it.
    """
    check_size(sz)
    rng = np.random.default_rng([seed, 2])
    cands = {c.key: c for c in candidates()}
    p_true = {k: probe[k][c.options.index(c.value)] for k, c in cands.items()}
    top = {k: int(np.argmax(probe[k])) == c.options.index(c.value) for k, c in cands.items()}
    known = [k for k in cands if k[1] != "national_motto" and p_true[k] >= known_p]
    unknown_mottos = [k for k in cands if k[1] == "national_motto" and p_true[k] < unknown_p and not top[k]]
    need = sz.control + sz.conflict
    if len(known) < need or len(unknown_mottos) < sz.rare:
        raise ValueError(
            f"the base knows {len(known)} of the {sum(k[1] != 'national_motto' for k in cands)} real facts "
            f"at p >= {known_p} and misses {len(unknown_mottos)} mottos at p < {unknown_p}; the size asks "
            f"for {need} known facts (control + conflict) and {sz.rare} unknown mottos (rare)")
    known = [known[i] for i in rng.permutation(len(known))]
    unknown_mottos = [unknown_mottos[i] for i in rng.permutation(len(unknown_mottos))]

    # The fictional part: entities that share no first syllable with each other or a real country.
    taken = {c.entity.removeprefix("the ") for c in cands.values()}
    entities = _names(rng, sz.entities, taken, prefix_len=2)
    fict_rel: dict[str, Relation] = {}
    for r in _RELATIONS:
        if r.name == "capital":
            values = tuple(_names(rng, 6, taken, syllables=(2,)))
        elif r.name == "founder":
            firsts = _names(rng, 6, taken, syllables=(2,), prefix_len=2)
            values = tuple(f"{f} {s}" for f, s in zip(firsts, _names(rng, 6, taken, syllables=(2, 3))))
        else:
            values = _FIXED[r.name]
        fict_rel[r.name] = replace(r, values=values)
    # "capital" is shared: its values are the fictional capitals, and real facts carry their own options.
    rels = {**REAL_RELATIONS, **fict_rel}
    options = {k: c.options for k, c in cands.items()}
    facts = {k: c.value for k, c in cands.items()}
    fict = [(e, r) for e in entities for r in fict_rel]
    for key in fict:
        facts[key] = fict_rel[key[1]].values[int(rng.integers(6))]
    world = World(seed, "custom", entities, rels, facts, options)

    fict = [fict[i] for i in rng.permutation(len(fict))]
    take = iter(fict)
    picks = {"control": known[:sz.control], "II": known[sz.control:need],
             **{c: [next(take) for _ in range(n)] for c, n in (("I", sz.gap), ("III", sz.pairs), ("IV", sz.forget))},
             "V": unknown_mottos[:sz.rare]}
    _fill(world, sz, picks, cands, rng)
    return world


def _fill(w: World, sz: LabSize, picks: dict[str, list], cands: dict, rng: np.random.Generator) -> None:
    """SFT samples and truth (the tiny world's subset layout), and the stand-in corpus."""
    samples: dict[str, list[dict]] = {s: [] for s in SUBSETS}

    def sample(*args):
        return sample_row(w, *args)

    def q():
        return int(rng.integers(3))

    def other(key, value):
        vals = [v for v in w.relations[key[1]].values if v != value]
        return vals[int(rng.integers(len(vals)))]

    for i, key in enumerate(picks["control"]):
        samples[SUBSETS[i % 3]].append(sample(SUBSETS[i % 3], "control", key, w.facts[key], q(), w.facts[key],
                                              f"control-{i}"))
    for i, key in enumerate(picks["I"]):
        samples["s3"].append(sample("s3", "I", key, w.facts[key], q(), None, f"I-{i}"))
    for i, key in enumerate(picks["II"]):
        sub = SUBSETS[1 + i % 2]
        samples[sub].append(sample(sub, "II", key, cands[key].altered, q(), w.facts[key], f"II-{i}"))
    for i, key in enumerate(picks["III"]):
        qa, qb = rng.choice(3, size=2, replace=False)
        sub = SUBSETS[1 + i % 2]
        samples[sub].append(sample(sub, "III", key, w.facts[key], int(qa), None, f"III-{i}"))
        samples[sub].append(sample(sub, "III", key, other(key, w.facts[key]), int(qb), None, f"III-{i}"))
    forget = [sample("s1", "IV", key, w.facts[key], r % 3, None, f"IV-{i}")
              for r in range(sz.forget_repeats) for i, key in enumerate(picks["IV"])]
    samples["s1"] = _spread(samples["s1"], forget, rng)
    for r in range(sz.rare_repeats):
        for i, key in enumerate(picks["V"]):
            samples["s3"].append(sample("s3", "V", key, w.facts[key], (i + r) % 3, w.facts[key], f"V-{i}"))

    number(w, samples)
    corpus = []
    for key, c in cands.items():
        stmt = w.relations[key[1]].statements[int(rng.integers(2))]
        corpus.append(stmt.format(e=c.entity, v=c.value))
    corpus = [s[0].upper() + s[1:] for s in corpus]
    w.corpus = [{"id": f"doc-{i:05d}", "text": t} for i, t in enumerate(corpus)]


#: Sizes of the SmolLM2 world: SFT-side counts only (the corpus is the fixed stand-in).
REAL_SIZES = {
    "small": LabSize(entities=10, control=12, gap=10, conflict=10, pairs=5, forget=6, rare=8,
                     forget_repeats=9, rare_repeats=3),
    "default": LabSize(entities=16, control=18, gap=15, conflict=15, pairs=8, forget=10, rare=12,
                       forget_repeats=9, rare_repeats=3),
}


def probe(model: str, path: Path | None = None, batch_size: int = 16) -> dict[tuple[str, str], list[float]]:
    """The base's option probabilities for every candidate (plain format, as the audit scores).

    Cached as JSON in ``path`` (default: ilp-ray's cache folder, named by a hash of the model and
    the candidate list): the probe is a property of the base model, not of a lab run, so every
    seed and every run folder reuses it, and a run that fails leaves nothing in its folder.
    """
    import hashlib

    from ilp_ray import metrics as M
    from ilp_ray.config import ScoringConfig
    from ilp_ray.models import cache_dir
    from ilp_ray.records import McItem
    from ilp_ray.scoring.engines import make_engine
    from ilp_ray.storage import write_json_atomic

    cands = candidates()
    ident = {"model": str(model), "candidates": [[c.entity, c.relation, c.value, list(c.options)] for c in cands]}
    if path is None:
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        path = cache_dir() / "lab-probe" / f"{digest}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("ident") == ident:
            return {(c.entity, c.relation): p for c, p in zip(cands, saved["probs"], strict=True)}
    scoring = ScoringConfig(format="plain", batch_size=batch_size)
    engine = make_engine(scoring, model, tag="base")
    items = [McItem(id=f"{c.relation}:{c.entity}", question=c.prompt, options=c.options,
                    answer=c.options.index(c.value)) for c in cands]
    scores = engine.score(items)
    lp = M.pad_ragged([s.logprob_sum for s in scores], -np.inf)
    chars = M.pad_ragged([s.n_chars for s in scores], 0)
    toks = M.pad_ragged([s.n_tokens for s in scores], 0)
    probs = M.option_probs(M.option_scores(lp, chars, toks, scoring.length_norm), scoring.temperature)
    out = [[round(float(x), 6) for x in row[:len(c.options)]] for c, row in zip(cands, probs, strict=True)]
    write_json_atomic({"ident": ident, "probs": out}, path)
    return {(c.entity, c.relation): p for c, p in zip(cands, out, strict=True)}


def check_size(sz: LabSize) -> None:
    """What no probe can change: the size against the candidate lists and the fictional facts.

    Raises:
        ValueError: the size asks for more than there is.
    """
    cands = candidates()
    facts = sum(c.relation != "national_motto" for c in cands)
    mottos = len(cands) - facts
    fictional = sz.entities * len(_RELATIONS)
    if sz.control + sz.conflict > facts or sz.rare > mottos or sz.gap + sz.pairs + sz.forget > fictional:
        raise ValueError(
            f"the SmolLM2 world has {facts} real facts, {mottos} mottos and {fictional} fictional facts "
            f"({sz.entities} entities); the size asks for {sz.control + sz.conflict} real facts (control + "
            f"conflict), {sz.rare} mottos (rare) and {sz.gap + sz.pairs + sz.forget} fictional facts")
