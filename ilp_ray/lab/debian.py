"""A second lab world, built from real reference data that Debian ships, with SmolLM2-135M as the base.

``ilp_ray.lab.world`` and ``ilp_ray.lab.real`` generate fictional countries whose six relations share
one question shape, and the diagnosis was tuned there. This world is built another way, as a team
mixes tasks in one SFT set: eight tasks with different answer types, read at generation time from
files of Debian packages (never from the network), each asked through 2-4 prompt templates, so that
most prompts share a template and differ only in the entity.

| task                | question -> answer                   | answer type          | file (package)            |
|---------------------|--------------------------------------|----------------------|---------------------------|
| ``country_code``    | country -> ISO 3166-1 alpha-2        | 2-letter code        | iso_3166-1.json (iso-codes) |
| ``country_of_code`` | ISO 3166-1 alpha-3 -> country        | name                 | iso_3166-1.json (iso-codes) |
| ``currency_code``   | currency -> ISO 4217 code            | 3-letter code        | iso_4217.json (iso-codes) |
| ``language_code``   | language -> ISO 639-3 code           | 3-letter code (lower)| iso_639-3.json (iso-codes) |
| ``script_code``     | script -> ISO 15924 code             | 4-letter code        | iso_15924.json (iso-codes) |
| ``port``            | network service -> port              | number               | /etc/services (netbase)   |
| ``time_zone``       | country -> tz database zone          | Area/City name       | zone.tab (tzdata)         |
| ``definition``      | English noun -> its WordNet gloss    | multi-word definition| data.noun (wordnet-base)  |

*What the base knows is measured* (``probe``): every candidate fact is an MC item, the question in
its first template and four options, the true value and three other values of the same task of the
most similar form (codes with the same first letter, ports with as many digits, zones of the same
area, definitions of about as many words); the base scores it in the chat format the audit uses,
and a fact is known at p(true value) >= ``known_p`` (0.5). The candidates are a fixed, seed-free
sample of each source, so the probe is cached once per model (``~/.cache/ilp-ray/debian-probe``).

Categories (the names of ``ilp_ray.lab.world.CATEGORIES``, so ``ilp_ray.lab.score`` applies):

- ``control``: a known real fact, SFT states its true value once (spread over s1, s2, s3).
- ``II``: a known real fact, SFT states another real value of the same task once (s2 or s3).
- ``I``: a fictional entity (a made-up territory, currency, language, script or service, with a
  code, port or zone nobody assigned; the probe confirms the base does not know it), stated once in s3.
- ``III``: a real fact asked in two templates with two different real answers (the true one and
  another value of the task), both in s2 or both in s3.
- ``IV``: a real fact the base does not know (an obscure code, port or zone), taught
  ``forget_repeats`` times over its templates in s1 only, then washed out by s2 and s3.
- ``V``: the full WordNet gloss (a long, multi-word answer) of a rare word the base does not know,
  seen ``rare_repeats`` times (once) at the very end of s3.

The fictional names are compounds of fixed word parts ("Vardholm", "Ostreva") rather than the
consonant-vowel syllables of ``world._names``. SFT rows carry only id, prompt, response and
subset: the audit builds its own MC items from them, as it does for a team's data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilp_ray.errors import DataError
from ilp_ray.lab.world import SUBSETS, Relation, World, number

#: Options per probe item: the audit's default ``mc.k``.
PROBE_K = 4
#: Real candidates per task (a seed-free sample of the source), fictional ones per task, and
#: common/rare words for the definitions. Enough for the default size with a 135M base.
REAL_PER_TASK = 64
FICTIONAL_PER_TASK = 14
COMMON_WORDS, RARE_WORDS = 48, 96


@dataclass(frozen=True)
class Task:
    """One task: its prompt templates (``{e}`` = the entity) and what its answers look like."""

    name: str
    answer: str
    templates: tuple[str, ...]


TASKS = {t.name: t for t in (
    Task("country_code", "ISO 3166-1 alpha-2 code", (
        "What is the ISO 3166-1 alpha-2 code of {e}?", "Which two-letter country code is assigned to {e}?",
        "Give the two-letter ISO code for {e}.")),
    Task("country_of_code", "country name", (
        "Which country has the ISO 3166-1 alpha-3 code {e}?", "The three-letter country code {e} stands for which country?",
        "Name the country whose alpha-3 code is {e}.")),
    Task("currency_code", "ISO 4217 code", (
        "What is the ISO 4217 code of the currency {e}?", "Which three-letter code stands for the currency {e}?",
        "Give the ISO currency code of the {e}.")),
    Task("language_code", "ISO 639-3 code", (
        "What is the ISO 639-3 code of the {e} language?", "Which three-letter language code identifies {e}?")),
    Task("script_code", "ISO 15924 code", (
        "What is the ISO 15924 code of the {e} script?", "Which four-letter code does ISO 15924 give the {e} script?",
        "Give the script code of {e} writing.")),
    Task("port", "port number", (
        "Which port number is assigned to the {e} service?", "What is the default port of {e}?",
        "On which port does {e} listen according to /etc/services?", "Give the well-known port number of {e}.")),
    Task("time_zone", "tz database zone", (
        "What is the time zone of {e} in the tz database?", "Which IANA time zone covers {e}?",
        "Give the tz database zone name for {e}.")),
    Task("definition", "WordNet definition", (
        'What does the word "{e}" mean?', "Define {e}.", 'Give the dictionary definition of "{e}".')),
)}
#: Tasks whose answers are short (codes, numbers, names): the IV and I pools.
SHORT_TASKS = tuple(t for t in TASKS if t != "definition")


# --------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class DebianSources:
    """Where the Debian files are; tests point a field at a missing file."""

    iso_codes: Path = Path("/usr/share/iso-codes/json")
    services: Path = Path("/etc/services")
    zoneinfo: Path = Path("/usr/share/zoneinfo")
    wordnet: Path = Path("/usr/share/wordnet")


class MissingSourceError(DataError):
    """A Debian file the world is built from is not installed."""


def _need(path: Path, package: str) -> Path:
    if not Path(path).is_file():
        raise MissingSourceError(f"not found; the Debian world reads it from the package '{package}' "
                                 f"(apt-get install {package})", file=str(path))
    return Path(path)


def _iso(src: DebianSources, standard: str) -> list[dict]:
    path = _need(Path(src.iso_codes) / f"iso_{standard}.json", "iso-codes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))[standard]
    except (json.JSONDecodeError, KeyError) as e:
        raise DataError(f"not an iso-codes {standard} table ({e})", file=str(path)) from None


def _display(entry: dict) -> str | None:
    """The plain name of an iso-codes entry; None for ISO's inverted forms ("Korea, Republic of")."""
    name = entry.get("common_name") or entry["name"]
    return None if ("," in name or "(" in name or ";" in name) else name


def real_facts(src: DebianSources = DebianSources()) -> dict[str, dict[str, str]]:
    """Every usable real fact of every task: ``{task: {entity: value}}``, read from the Debian files.

    Entries whose question would be ambiguous are left out: inverted names, currencies that are
    funds or metals, names with two codes, services whose TCP and UDP ports differ, countries with
    several time zones.
    """
    facts: dict[str, dict[str, str]] = {t: {} for t in TASKS}
    countries = _iso(src, "3166-1")
    for c in countries:
        if name := _display(c):
            facts["country_code"][name] = c["alpha_2"]
            facts["country_of_code"][c["alpha_3"]] = name
    names = [(x.get("name", ""), x["alpha_3"]) for x in _iso(src, "4217")]
    dup = {n for n, _ in names if sum(m == n for m, _ in names) > 1}
    skip = re.compile(r"\d|\(|Unit|Unidad|Fund|WIR|Mvdol|Bond|Codes|Gold|Silver|Platinum|Palladium|Sucre|SDR")
    facts["currency_code"] = {n: code for n, code in names if n and n not in dup and not skip.search(n)
                              and not code.startswith("X")}
    for x in _iso(src, "639-3"):
        if "alpha_2" in x and (name := _display(x)):  # the languages ISO 639-1 also codes: the major ones
            facts["language_code"][name] = x["alpha_3"]
    for x in _iso(src, "15924"):
        name = x["name"]
        if not re.search(r"[,(]|[Cc]ode|[Ss]ymbols|[Pp]rivate|[Uu]ndetermined", name) and not x["alpha_4"].startswith("Q"):
            facts["script_code"][name] = x["alpha_4"]
    facts["port"] = _services(_need(Path(src.services), "netbase"))
    facts["time_zone"] = _zones(src, {c["alpha_2"]: _display(c) for c in countries})
    facts["definition"] = {}  # words come from words(): their own common/rare split
    return facts


def _services(path: Path) -> dict[str, str]:
    ports: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        f = line.split("#", 1)[0].split()
        if len(f) >= 2 and "/" in f[1]:
            ports.setdefault(f[0], set()).add(f[1].split("/")[0])
    return {name: next(iter(p)) for name, p in ports.items() if len(p) == 1 and re.fullmatch(r"[a-z][a-z0-9-]+", name)}


def _zones(src: DebianSources, country: dict[str, str | None]) -> dict[str, str]:
    """Country -> its one zone. zone.tab lists each country's own zones; zone1970.tab (the fallback)
    files a zone under every country it covers since 1970."""
    zdir = Path(src.zoneinfo)
    path = next((zdir / f for f in ("zone.tab", "zone1970.tab") if (zdir / f).is_file()), None)
    if path is None:
        raise MissingSourceError("not found (nor zone1970.tab beside it); the Debian world reads it from the "
                                 "package 'tzdata' (apt-get install tzdata)", file=str(zdir / "zone.tab"))
    zones: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        f = line.split("\t")
        for code in f[0].split(","):
            zones.setdefault(code, []).append(f[2])
    return {country[c]: z[0] for c, z in zones.items() if len(z) == 1 and country.get(c)}


def words(src: DebianSources = DebianSources()) -> tuple[dict[str, str], dict[str, str]]:
    """(common, rare) nouns with their WordNet gloss, examples cut off.

    Common: sense-tagged at least 20 times in WordNet's corpus counts (cntlist.rev); the gloss of
    the first (most frequent) sense. Rare: never sense-tagged, one sense only, not a proper noun, a
    gloss of at least 8 words: what a 135M model is unlikely to have learned to define.
    """
    wn = Path(src.wordnet)
    index, data, counts = (_need(wn / f, "wordnet-base") for f in ("index.noun", "data.noun", "cntlist.rev"))
    freq: dict[str, int] = {}
    for line in counts.read_text(encoding="utf-8").splitlines():
        f = line.split()
        if len(f) == 3 and "%1:" in f[0]:
            lemma = f[0].split("%")[0]
            freq[lemma] = freq.get(lemma, 0) + int(f[2])
    first: dict[str, tuple[int, str]] = {}  # lemma -> (senses, offset of its first sense)
    for line in index.read_text(encoding="utf-8").splitlines():
        if line.startswith(" "):
            continue
        f = line.split()
        if re.fullmatch(r"[a-z]{4,}", f[0]):
            first[f[0]] = (int(f[2]), f[6 + int(f[3])])
    want = {off for _, off in first.values()}
    glosses: dict[str, tuple[str, str]] = {}  # offset -> (gloss, the synset's words)
    for line in data.read_text(encoding="utf-8").splitlines():
        off = line[:8]
        if off in want and "|" in line:
            head, gloss = line.split("|", 1)
            glosses[off] = (_clean_gloss(gloss), " ".join(head.split()[4:4 + 2 * int(head.split()[3], 16):2]))
    common, rare = {}, {}
    for lemma, (senses, off) in sorted(first.items()):
        if off not in glosses:
            continue
        gloss, forms = glosses[off]
        if freq.get(lemma, 0) >= 20 and len(gloss.split()) >= 5:
            common[lemma] = gloss
        elif (lemma not in freq and senses == 1 and len(lemma) >= 7 and len(gloss.split()) >= 8
              and lemma in forms.split() and lemma not in gloss.lower()):
            rare[lemma] = gloss
    return common, rare


def _clean_gloss(gloss: str) -> str:
    """The definition part of a WordNet gloss: the examples (quoted, after "; ") cut off."""
    gloss = gloss.strip()
    cut = re.search(r';?\s*"', gloss)
    if cut:
        gloss = gloss[:cut.start()]
    return gloss.strip(" ;")


# --------------------------------------------------------------------------- fictional entities

_ONSETS = ("Aster", "Brenn", "Corv", "Dral", "Eskel", "Fenn", "Gald", "Hest", "Isk", "Jorv", "Kest", "Lunn",
           "Morv", "Nyst", "Orv", "Pell", "Quen", "Rosk", "Sarn", "Tirv", "Ulm", "Vard", "Wess", "Yrn", "Zell")
_ENDINGS = ("mark", "holm", "reva", "gard", "mont", "wick", "ara", "esse", "und", "oria", "stad", "enne")
_CITY_ENDINGS = ("ford", "haven", "port", "burg", "ville", "stead")
_UNITS = ("crown", "mark", "florin", "ducat", "shilling", "talent", "guilder", "real")
_SERVICE_STEMS = ("quill", "ember", "lattice", "cinder", "vesper", "tandem", "sable", "marrow", "thistle",
                  "wicket", "gossamer", "bramble", "halcyon", "orrery")
_SERVICE_TAILS = ("d", "net", "mux", "sync", "ctl", "proto")
_AREAS = ("Europe", "Africa", "Asia", "America", "Pacific", "Atlantic", "Indian")


def assigned_codes(src: DebianSources = DebianSources()) -> dict[str, set[str]]:
    """Every code each standard assigns (upper case), inverted names and obscure languages
    included: what no fictional code may be."""
    return {"country_code": {c["alpha_2"] for c in _iso(src, "3166-1")},
            "country_of_code": {c["alpha_3"] for c in _iso(src, "3166-1")},
            "currency_code": {c["alpha_3"] for c in _iso(src, "4217")},
            "language_code": {c["alpha_3"].upper() for c in _iso(src, "639-3")}
            | {c.get("bibliographic", c["alpha_3"]).upper() for c in _iso(src, "639-2")},
            "script_code": {c["alpha_4"].upper() for c in _iso(src, "15924")}}


def fictional_facts(facts: dict[str, dict[str, str]], assigned: dict[str, set[str]],
                    n: int = FICTIONAL_PER_TASK) -> dict[str, dict[str, str]]:
    """``n`` made-up facts per short task: no entity is a real name, no code one a standard assigns
    (``assigned``), no port one /etc/services names.

    Seed-free, like the real candidates: the probe covers them once per model, and each world
    picks the ones its base does not know.
    """
    rng = np.random.default_rng([16, 6, 0])
    real_names = {e.lower() for t in facts.values() for e in t} | {v.lower() for t in facts.values() for v in t.values()}
    lands = [o + e for o in _ONSETS for e in _ENDINGS]
    lands = [lands[i] for i in rng.permutation(len(lands)) if lands[i].lower() not in real_names]
    take = iter(lands)

    def code(n_letters: int, taken: Iterable[str], case: str) -> str:
        taken = {t.upper() for t in taken}
        while True:
            c = "".join(chr(65 + int(x)) for x in rng.integers(26, size=n_letters))
            if c not in taken:
                taken.add(c)
                return c.lower() if case == "lower" else c.title() if case == "title" else c

    def adjective(land: str) -> str:
        return land + ("n" if land.endswith(("a", "e")) else "ian")

    out: dict[str, dict[str, str]] = {t: {} for t in SHORT_TASKS}
    for _ in range(n):
        out["country_code"][next(take)] = code(2, [*assigned["country_code"], *out["country_code"].values()], "upper")
        out["country_of_code"][code(3, [*assigned["country_of_code"], *out["country_of_code"]], "upper")] = next(take)
        unit = _UNITS[int(rng.integers(len(_UNITS)))]
        out["currency_code"][f"{adjective(next(take))} {unit}"] = code(
            3, [*assigned["currency_code"], *out["currency_code"].values()], "upper")
        out["language_code"][next(take) + "ish"] = code(
            3, [*assigned["language_code"], *out["language_code"].values()], "lower")
        out["script_code"][next(take) + "ic"] = code(
            4, [*assigned["script_code"], *out["script_code"].values()], "title")
        city = _ONSETS[int(rng.integers(len(_ONSETS)))] + _CITY_ENDINGS[int(rng.integers(len(_CITY_ENDINGS)))]
        out["time_zone"][next(take)] = f"{_AREAS[int(rng.integers(len(_AREAS)))]}/{city}"
    real_ports = sorted(facts["port"].values(), key=int)
    services = [s + t for s in _SERVICE_STEMS for t in _SERVICE_TAILS if s + t not in facts["port"]]
    used = set(real_ports)
    for i in rng.permutation(len(services))[:n].tolist():
        digits = len(real_ports[int(rng.integers(len(real_ports)))])  # the real ports' mix of lengths
        while (port := str(int(rng.integers(10 ** (digits - 1), 10 ** digits)))) in used:
            pass
        used.add(port)
        out["port"][services[i]] = port
    return out


# --------------------------------------------------------------------------- candidates and the probe

@dataclass(frozen=True)
class Candidate:
    """A fact the probe scores: its MC item (the question in the task's first template)."""

    task: str
    entity: str
    value: str
    options: tuple[str, ...]
    fictional: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, self.entity)

    @property
    def prompt(self) -> str:
        return TASKS[self.task].templates[0].format(e=self.entity)


def _form_distance(task: str, a: str, b: str) -> float:
    """How unlike in form two values of a task are (smaller: a fairer distractor)."""
    if task == "definition":
        return abs(len(a.split()) - len(b.split()))
    if task == "time_zone":
        return 100 * (a.split("/")[0] != b.split("/")[0]) + abs(len(a) - len(b))
    if task == "port":
        return 100 * (len(a) != len(b)) + 10 * (a[0] != b[0]) + abs(int(a) - int(b)) / 10 ** len(a)
    return abs(len(a) - len(b)) + 3 * (a[0].lower() != b[0].lower())


def _options(task: str, value: str, pool: list[str], rng: np.random.Generator, k: int = PROBE_K) -> tuple[str, ...]:
    """``value`` and k-1 other values of the task, drawn from the 3(k-1) most similar in form."""
    others = sorted({v for v in pool if v.lower() != value.lower()})
    dist = np.array([_form_distance(task, value, v) for v in others])
    near = np.lexsort((rng.random(len(others)), dist))[:3 * (k - 1)]
    picks = rng.choice(near, size=k - 1, replace=False)
    return tuple(sorted([value, *(others[i] for i in picks.tolist())]))


@functools.lru_cache(maxsize=4)
def candidates(src: DebianSources = DebianSources()) -> tuple[Candidate, ...]:
    """Every fact the probe scores, in a fixed order: a seed-free sample of ``REAL_PER_TASK`` real
    facts per short task, ``COMMON_WORDS`` + ``RARE_WORDS`` definitions, and the fictional facts.

    Raises:
        MissingSourceError: a Debian file is missing (names the file and the package).
    """
    facts = real_facts(src)
    common, rare = words(src)
    fict = fictional_facts(facts, assigned_codes(src))
    out: list[Candidate] = []
    for ti, task in enumerate(TASKS):
        if task == "definition":
            rng = np.random.default_rng([16, 1, ti])
            chosen = {**_sample(common, COMMON_WORDS, rng), **_sample(rare, RARE_WORDS, rng)}
            pool = list(chosen.values())
        else:
            chosen = _sample(facts[task], REAL_PER_TASK, np.random.default_rng([16, 1, ti]))
            pool = sorted(set(facts[task].values()))
        for i, (e, v) in enumerate(chosen.items()):
            out.append(Candidate(task, e, v, _options(task, v, pool, np.random.default_rng([16, 2, ti, i]))))
        if task in fict:
            fpool = pool + sorted(fict[task].values())
            for i, (e, v) in enumerate(fict[task].items()):
                out.append(Candidate(task, e, v, _options(task, v, fpool, np.random.default_rng([16, 3, ti, i])), True))
    return tuple(out)


def _sample(d: dict[str, str], n: int, rng: np.random.Generator) -> dict[str, str]:
    keys = sorted(d)
    idx = sorted(rng.choice(len(keys), size=min(n, len(keys)), replace=False).tolist())
    return {keys[i]: d[keys[i]] for i in idx}


def probe(model: str = "smollm2-135m", src: DebianSources = DebianSources(), path: Path | None = None,
          batch_size: int = 16, fmt: str = "chat") -> dict[tuple[str, str], list[float]]:
    """The base's option probabilities of every candidate (in ``Candidate.options`` order), scored
    in ``fmt`` (the audit's ``scoring.format``) with the audit's own engine and option probabilities.

    Cached as JSON in ``path`` (default: ilp-ray's cache, named by a hash of the model, the format
    and the items): the probe is a property of the base and the Debian files' contents, not of a
    world seed, so every seed and run folder reuses it.
    """
    import hashlib

    from ilp_ray.config import ScoringConfig
    from ilp_ray.detect import item_results
    from ilp_ray.models import cache_dir
    from ilp_ray.records import McItem
    from ilp_ray.scoring.engines import make_engine
    from ilp_ray.storage import write_json_atomic

    cands = candidates(src)
    ident = {"model": str(model), "format": fmt,
             "items": [[c.task, c.entity, c.value, list(c.options)] for c in cands]}
    if path is None:
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        path = cache_dir() / "debian-probe" / f"{digest}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("ident") == ident:
            return {c.key: p for c, p in zip(cands, saved["probs"], strict=True)}
    scoring = ScoringConfig(format=fmt, batch_size=batch_size)
    items = [McItem(id=f"{c.task}:{c.entity}", question=c.prompt, options=c.options,
                    answer=c.options.index(c.value)) for c in cands]
    scores = make_engine(scoring, model, tag="base").score(items)
    probs = [[round(p, 6) for p in r["probs"]] for r in item_results(items, scores, scoring)]
    write_json_atomic({"ident": ident, "probs": probs}, path)
    return {c.key: p for c, p in zip(cands, probs, strict=True)}


# --------------------------------------------------------------------------- sizes

@dataclass(frozen=True)
class DebianSize:
    """How many facts of each category a world holds (samples: III x2, IV x ``forget_repeats``,
    V x ``rare_repeats``)."""

    control: int
    gap: int            # I
    conflict: int       # II
    pairs: int          # III
    forget: int         # IV
    rare: int           # V
    forget_repeats: int = 6
    rare_repeats: int = 1
    rare_min_words: int = 10  # a V gloss has at least this many words

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            least = 1 if f.name.endswith(("repeats", "words")) else 0
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
                raise ValueError(f"DebianSize field '{f.name}' must be an integer >= {least}, got {v!r}")


SIZES = {
    # ~150 samples: 30 + 20 + 20 + 2x10 + 6x9 + 15 = 159.
    "small": DebianSize(control=30, gap=20, conflict=20, pairs=10, forget=9, rare=15),
    "default": DebianSize(control=60, gap=40, conflict=40, pairs=20, forget=18, rare=30),
}


def resolve_size(size: str | DebianSize, overrides: dict[str, int] | None = None) -> DebianSize:
    """A size by name (or as given) with fields overridden.

    Raises:
        ValueError: an unknown size name or field, or a bad value (names it).
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown Debian world size {size!r}; known: {', '.join(SIZES)}")
        size = SIZES[size]
    elif not isinstance(size, DebianSize):
        raise ValueError(f"size must be a name ({', '.join(SIZES)}) or a DebianSize, got {size!r}")
    known = [f.name for f in dataclasses.fields(DebianSize)]
    for k in overrides or {}:
        if k not in known:
            raise ValueError(f"unknown DebianSize field {k!r}; known: {', '.join(known)}")
    return dataclasses.replace(size, **(overrides or {}))


# --------------------------------------------------------------------------- the world

def generate_debian(seed: int, size: str | DebianSize, probe: dict[tuple[str, str], list[float]],
                    known_p: float = 0.5, src: DebianSources = DebianSources()) -> World:
    """The Debian world for ``seed``, given the probe (``probe()``, or a synthetic one in tests):
    a pure function of ``(seed, size, probe)`` and the Debian files.

    Raises:
        MissingSourceError: a Debian file is missing.
        ValueError: a bad size, a probe that misses candidates, or a base that knows (or does
            not know) too few facts for the size (names the pool and both counts).
    """
    sz = resolve_size(size)
    cands = candidates(src)
    missing = [c.key for c in cands if c.key not in probe or len(probe[c.key]) != len(c.options)]
    if missing:
        raise ValueError(f"the probe has no scores (or the wrong number) for {len(missing)} of {len(cands)} "
                         f"candidates, e.g. {missing[0]}; probe again (the Debian files changed?)")
    rng = np.random.default_rng([seed, 16])
    p_true = {c.key: float(probe[c.key][c.options.index(c.value)]) for c in cands}
    order = [cands[i] for i in rng.permutation(len(cands))]
    known = [c for c in order if not c.fictional and p_true[c.key] >= known_p]
    pools = {
        "control+II": known,
        "I": [c for c in order if c.fictional and p_true[c.key] < known_p],
        "IV": [c for c in order if not c.fictional and c.task in SHORT_TASKS and p_true[c.key] < known_p],
        "V": [c for c in order if c.task == "definition" and p_true[c.key] < known_p
              and len(c.value.split()) >= sz.rare_min_words],
    }
    need = {"control+II": sz.control + sz.conflict, "I": sz.gap, "IV": sz.forget, "V": sz.rare}
    short = [f"{k}: {len(pools[k])} for {n}" for k, n in need.items() if len(pools[k]) < n]
    if short:
        raise ValueError(f"the probe (p >= {known_p} is known) leaves too few candidates for this size: "
                         + "; ".join(short))
    spread = _by_task(known)
    picks = {"control": spread[:sz.control], "II": spread[sz.control:sz.control + sz.conflict],
             "I": _by_task(pools["I"])[:sz.gap], "V": pools["V"][:sz.rare]}
    picks["IV"] = _by_task(pools["IV"])[:sz.forget]
    used = {c.key for cs in picks.values() for c in cs}
    rest = [c for c in order if not c.fictional and c.key not in used]
    if len(rest) < sz.pairs:
        raise ValueError(f"{len(rest)} real facts are left for {sz.pairs} III pairs")
    picks["III"] = _by_task(rest)[:sz.pairs]

    rels = {t.name: Relation(t.name, t.templates, ()) for t in TASKS.values()}
    by_key = {c.key: c for c in cands}
    world = World(seed, size if isinstance(size, str) else "custom",
                  sorted({c.entity for cs in picks.values() for c in cs if c.fictional}), rels,
                  {c.key: c.value for c in by_key.values()}, {c.key: c.options for c in by_key.values()})
    _fill(world, sz, picks, p_true, known_p, rng)
    return world


def _by_task(cands: list[Candidate]) -> list[Candidate]:
    """``cands`` dealt round-robin over their tasks (each task's in its given order), so that any
    prefix mixes the tasks as evenly as they allow."""
    queues: dict[str, list[Candidate]] = {}
    for c in cands:
        queues.setdefault(c.task, []).append(c)
    out, depth = [], 0
    while len(out) < len(cands):
        out += [q[depth] for q in queues.values() if depth < len(q)]
        depth += 1
    return out


def _fill(w: World, sz: DebianSize, picks: dict[str, list[Candidate]], p_true: dict, known_p: float,
          rng: np.random.Generator) -> None:
    samples: dict[str, list[dict]] = {s: [] for s in SUBSETS}

    def other(c: Candidate) -> str:
        """Another real value of the task, of similar form: one of the probe item's distractors."""
        opts = [o for o in c.options if o != c.value]
        return opts[int(rng.integers(len(opts)))]

    def row(subset: str, category: str, c: Candidate, value: str, template: int, group: str) -> dict:
        return {"prompt": TASKS[c.task].templates[template].format(e=c.entity), "response": value,
                "subset": subset,
                "_truth": {"category": category, "task": c.task, "entity": c.entity, "fact": f"{c.task}:{c.entity}",
                           "value": value, "true_value": c.value, "fictional": c.fictional,
                           "base_p_true": round(p_true[c.key], 4), "known_by_probe": p_true[c.key] >= known_p,
                           "template": template, "group": group}}

    def tmpl(c: Candidate) -> int:
        return int(rng.integers(len(TASKS[c.task].templates)))

    for i, c in enumerate(picks["control"]):
        samples[SUBSETS[i % 3]].append(row(SUBSETS[i % 3], "control", c, c.value, tmpl(c), f"control-{i}"))
    for i, c in enumerate(picks["II"]):
        sub = SUBSETS[1 + i % 2]
        samples[sub].append(row(sub, "II", c, other(c), tmpl(c), f"II-{i}"))
    for i, c in enumerate(picks["III"]):
        sub = SUBSETS[1 + i % 2]
        ta, tb = rng.choice(len(TASKS[c.task].templates), size=2, replace=False).tolist()
        samples[sub] += [row(sub, "III", c, c.value, ta, f"III-{i}"), row(sub, "III", c, other(c), tb, f"III-{i}")]
    for i, c in enumerate(picks["I"]):
        samples["s3"].append(row("s3", "I", c, c.value, tmpl(c), f"I-{i}"))
    for i, c in enumerate(picks["IV"]):
        n, start = len(TASKS[c.task].templates), tmpl(c)
        samples["s1"] += [row("s1", "IV", c, c.value, (start + r) % n, f"IV-{i}") for r in range(sz.forget_repeats)]
    # Within a subset the order is random (a team's data is not sorted by what will go wrong),
    # except the V block, which closes the last subset.
    for s in SUBSETS:
        samples[s] = [samples[s][j] for j in rng.permutation(len(samples[s])).tolist()]
    for r in range(sz.rare_repeats):
        for i, c in enumerate(picks["V"]):
            samples["s3"].append(row("s3", "V", c, c.value, (tmpl(c) + r) % len(TASKS[c.task].templates), f"V-{i}"))
    number(w, samples)
