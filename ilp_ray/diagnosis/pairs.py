"""Near-duplicate prompt pairs and response agreement: the search behind cause III.

``similar_pairs`` finds every pair of samples whose prompt cosine is ``>= theta`` (compared in
float32, as the scores are) among each sample's ``k`` nearest prompts, with the blocked,
memory-bounded ``self_topk_neighbours`` (each pair scored once): no n × n matrix, one
2048 × 2048 tile of scores at a time whatever n is. A pair is found from either side, so it is
missed only when *both* samples have k closer neighbours; ``saturated`` flags the samples whose k-th neighbour still passes theta.
``spark_similar_pairs`` (``spark_search.py``) runs the same search by partitions of query blocks
and returns the same arrays.

The search's pairs then pass a second test, ``SameQuestion`` (``conflict.same_question: spans``):
two prompts ask the same thing when *what varies between them agrees*, not when their shared
template does. On templated data MiniLM puts siblings such as "…alpha-2 country code of
Sollokaia?" / "…of Solnuteia?" at 0.95, far above any paraphrase threshold, because the template
is most of the sentence. What varies from one item of a template to the next is its slot: a
name, a number, a quoted term. So each prompt's *content units* are read off its surface:

- ``quote``: a quoted span ('…', "…", ‘…’, “…”), as one unit;
- ``entity``: a run of capitalised words not at a sentence start (or words with an inner
  capital: "ISO", "iPhone"), a hyphenated name whole ("Eure-et-Loir");
- ``number``: digits, or a number word up to twenty ("three" = "3");
- ``rare``: a run of lower-case words found in at most ``rare_df`` of the dataset's prompts, when
  the dataset has ``rare_min_prompts`` prompts or more. A template recurs with every item it
  serves; a slot filler ("mouse" in "What is the plural of mouse?") only where its item is asked.

A unit of one prompt is *matched* when the other prompt has a unit with the same normalised text
(of any kind: 'Manhattan' quoted matches Manhattan unquoted), or the same words outside its own
quotes and names; units match as multisets (12 + 12 is not 12 + 7). When *both* prompts have an
unmatched unit, what varies disagrees: different questions, and the pair is dropped. Paraphrases
that differ only in template words ("What is the capital of France?" / "Which city is the capital
of France?") or where only one side adds something ("…of France, a country in Europe?") stay
the same question. Two one-token answers of different kinds (a number and a name: "533" / "AW")
also mark different questions. Everything is read from the dataset's own prompts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

import numpy as np

from ilp_ray.data.mc import normalize_text
from ilp_ray.evidence.query import STOPWORDS
from ilp_ray.neighbours import self_topk_neighbours

_NUM_WORDS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"])}
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")
# A quoted span: straight double, curly double or single quotes, or a straight single quote that
# neither follows a letter nor precedes one (so "France's" and "students' books" open none).
_QUOTE = re.compile(r"\"([^\"\n]+)\"|“([^”\n]+)”|‘([^’\n]+)’|(?<![\w'’])'([^\n]+?)'(?!\w)")
_PIECE = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")  # a number, or a run of letters
# A word with its hyphenated or apostrophed parts ("Eure-et-Loir", "O'Brien", "3166-1", "3.14").
_COMPOUND = re.compile(r"[^\W_]+(?:(?:[-'’]|(?<=\d)[.,](?=\d))[^\W_]+)*")
_POSSESSIVE = re.compile(r"(?<=[^\W_])['’]s\b")  # blanked to two spaces, so offsets hold
_RUN_GAP = re.compile(r"[\s.]*")  # what may separate two words of one name ("U.S. Virgin Islands")
_NUMBER_ANSWER = re.compile(r"[+-]?\d+(?:[.,]\d+)*%?")


def pairs_from_topk(offset: int, idx: np.ndarray, sims: np.ndarray, theta: float):
    """(i, j, sim) with i < j and sim >= theta from a block of top-k rows starting at ``offset``,
    and the block's saturation flags (k-th neighbour >= theta)."""
    t = np.float32(theta)
    rows = offset + np.arange(len(idx))[:, None]
    mask = (sims >= t) & (idx != rows)
    i = np.broadcast_to(rows, idx.shape)[mask]
    j = idx[mask]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    saturated = sims[:, -1] >= t if idx.shape[1] else np.zeros(len(idx), bool)
    return lo.astype(np.int64), hi.astype(np.int64), sims[mask].astype(np.float32), saturated


def dedupe_pairs(i: np.ndarray, j: np.ndarray, s: np.ndarray):
    """Each unordered pair once, sorted by (i, j)."""
    if len(i) == 0:
        return i, j, s
    order = np.lexsort((j, i))
    i, j, s = i[order], j[order], s[order]
    keep = np.ones(len(i), bool)
    keep[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return i[keep], j[keep], s[keep]


def similar_pairs(emb: np.ndarray, theta: float, k: int, block_size: int | None = None):
    """All prompt pairs with cosine >= theta among each sample's k nearest, locally.

    Args:
        emb: float32 ``(n, d)`` unit rows.
        theta: cosine threshold (inclusive).
        k: neighbours per sample, self excluded.
        block_size: queries per block; None: bounded by memory (see ``self_topk_neighbours``).

    Returns:
        ``(i, j, sim, saturated)``: pair arrays with ``i < j``, sorted, and a bool per sample.
    """
    n = len(emb)
    if n < 2:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(n, bool))
    return pairs_from_neighbours(*self_topk_neighbours(emb, min(k + 1, n), block_size=block_size), theta)


def pairs_from_neighbours(idx: np.ndarray, sims: np.ndarray, theta: float):
    """``similar_pairs``' result from a ready all-rows top-k table (self included)."""
    i, j, s, sat = pairs_from_topk(0, idx, sims, theta)
    return (*dedupe_pairs(i, j, s), sat)


def _numbers(text: str) -> list[str]:
    words = _WORD.findall(text.casefold())
    return sorted(_NUM.findall(text.replace(",", "")) + [_NUM_WORDS[w] for w in words if w in _NUM_WORDS])


def response_rule(a: str, b: str, exact: bool) -> tuple[bool | None, str]:
    """The text rules of ``responses_disagree``: (verdict, rule), or (None, "") when only the
    response cosine can decide, so that only those pairs need their responses embedded."""
    if normalize_text(a) == normalize_text(b):
        return False, "same text"
    if exact:
        return True, "different MC answer"
    wa, wb = set(_WORD.findall(a.casefold())), set(_WORD.findall(b.casefold()))
    if wa and wb and (wa <= wb or wb <= wa):
        return False, "one contains the other"
    na, nb = _numbers(a), _numbers(b)
    if na and nb and na != nb:
        return True, "different numbers"
    return None, ""


def responses_disagree(a: str, b: str, cos: float | None, theta_response: float, exact: bool) -> tuple[bool, str]:
    """Do two responses to the same question disagree? Returns (verdict, the rule that decided).

    In order: equal after normalisation → agree; ``exact`` mode (pre-built MC answers) → disagree;
    every word of one occurs in the other → agree ("Paris" vs "The capital of France is Paris.";
    a definition and its first clause, which the longer one's extra dates would otherwise split);
    both carry numbers and they differ → disagree (embeddings barely see digits: "100 degrees"
    vs "90 degrees" has cosine 0.90 on MiniLM); else disagree when cosine < theta_response.

    Synonyms are beyond it: on 300 WordNet synonym pairs ("sate" / "replete") MiniLM gives a
    median cosine of 0.38, barely above a synonym and a co-hyponym's lemma (0.26; AUC 0.735), and
    10% reach 0.8 (``bench/conflict_templates.py``). No threshold separates them; a judge's
    "both" does.
    """
    verdict, rule = response_rule(a, b, exact)
    if verdict is not None:
        return verdict, rule
    if cos is None:
        return True, "different text"
    if cos < np.float32(theta_response):
        return True, f"response cosine {cos:.3f} < {theta_response}"
    return False, f"response cosine {cos:.3f} >= {theta_response}"


@dataclass(frozen=True)
class Unit:
    """A piece of a prompt that names what it asks about."""

    kind: str  # "quote" | "entity" | "number" | "rare"
    text: str  # normalised: case-folded words joined by one space (a number: its digits)

    def __str__(self) -> str:
        return f"{self.kind} '{self.text}'"


@dataclass(frozen=True)
class PromptParts:
    """A prompt read for the same-question test.

    ``words``: every case-folded word and number in order (the alignment of the evidence);
    ``free``: the words outside quotes and entity names, with their positions in ``words``;
    ``units``: its quotes, entity names and numbers (rare words are added per dataset).
    """

    words: tuple[str, ...]
    free: tuple[tuple[int, str], ...]
    units: tuple[Unit, ...]
    free_text: str = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "free_text", " " + " ".join(w for _, w in self.free) + " ")


def prompt_parts(text: str) -> PromptParts:
    """Split a prompt into its words, free words and content units (see the module doc)."""
    text = _POSSESSIVE.sub("  ", text)
    words: list[str] = []
    free: list[tuple[int, str]] = []
    units: list[Unit] = []
    pos = 0
    for m in _QUOTE.finditer(text):
        _read_plain(text, pos, m.start(), words, free, units)
        q = [w.casefold() for w in _PIECE.findall(m.group(m.lastindex))]
        if q:
            words += q
            units.append(Unit("quote", " ".join(q)))
        pos = m.end()
    _read_plain(text, pos, len(text), words, free, units)
    return PromptParts(tuple(words), tuple(free), tuple(units))


def _sentence_start(text: str, at: int) -> bool:
    before = text[:at].rstrip(" \t\"'“‘([")
    return not before or before[-1] in ".!?:;\n"


def _read_plain(text: str, start: int, end: int, words, free, units) -> None:
    """Words, free words, names and numbers of ``text[start:end]`` (no quotes in it)."""
    run: list[str] = []
    last_end, initial = -1, False

    def close():
        if run:
            units.append(Unit("entity", " ".join(run)))
            run.clear()

    for m in _COMPOUND.finditer(text, start, end):
        pieces = _PIECE.findall(m.group())
        if run and not _RUN_GAP.fullmatch(text, last_end, m.start()):
            close()
        # after an initial inside a name ("U.S. Virgin Islands") a full stop ends no sentence
        starts = not (run and initial) and _sentence_start(text, m.start())
        last_end, initial = m.end(), len(m.group()) == 1 and m.group().isupper()
        if _is_name(m.group(), pieces, starts, bool(run) and not starts):
            # one name, hyphenated parts and all: "Eure-et-Loir", "Guinea-Bissau", "COVID-19"
            run += [w.casefold() for w in pieces]
            words += [w.casefold() for w in pieces]
            continue
        close()
        for piece in pieces:
            low = piece.casefold()
            if piece[0].isdigit() or low in _NUM_WORDS:
                units.append(Unit("number", piece.replace(",", "") if piece[0].isdigit() else _NUM_WORDS[low]))
            words.append(low)
            free.append((len(words) - 1, low))
    close()


def _is_name(compound: str, pieces: list[str], sentence_start: bool, in_run: bool) -> bool:
    """A capitalised word not at a sentence start, or one with an inner capital ("ISO", "iPhone",
    the "Pohjanmaa" of "Etelä-Pohjanmaa"). Stopwords count when capitalised mid-sentence (the "She"
    language, "Congo, The Democratic Republic of the"); the pronoun "I" only inside a name
    ("Perseverance I")."""
    if compound == "I":  # a roman numeral after a name, not the pronoun
        return in_run
    for k, piece in enumerate(pieces):
        if piece[0].isdigit():
            continue
        if any(c.isupper() for c in piece[1:]) or (piece[0].isupper() and (k > 0 or not sentence_start)):
            return True
    return False


def answer_kind(text: str) -> str | None:
    """``number`` or ``name`` for a one-token answer ("533", "eight" / "AW", "Fe"); None for
    anything longer, or a token of both ("KN-05", "3rd")."""
    t = text.strip().rstrip(".")
    if not t or any(c.isspace() for c in t):
        return None
    if _NUMBER_ANSWER.fullmatch(t) or t.casefold() in _NUM_WORDS:
        return "number"
    return None if any(c.isdigit() for c in t) else "name"


def differing_spans(a: PromptParts, b: PromptParts, limit: int = 4) -> tuple[list[str], list[str]]:
    """The word spans in which two prompts differ, each side's, by a word alignment (difflib)."""
    sa, sb = [], []
    ops = SequenceMatcher(None, a.words, b.words, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        if i2 > i1:
            sa.append(" ".join(a.words[i1:i2])[:80])
        if j2 > j1:
            sb.append(" ".join(b.words[j1:j2])[:80])
    return sa[:limit], sb[:limit]


class SameQuestion:
    """The same-question test of a candidate pair: does what varies between the prompts agree?

    Args:
        prompts: every prompt of the dataset (their document frequencies decide what is rare).
        responses: the responses, in the same order, or None. With them, two one-token answers of
            different kinds, a number and a name ("533" / "AW"), mark different questions (the
            numeric vs the alpha-2 code of one country): a question's answers, right or wrong, are
            of one kind, and its template words alone cannot tell an attribute from a phrasing.
        rare_df: a lower-case word in at most this many prompts is a slot filler (content).
        rare_min_prompts: below this many prompts rarity says nothing and is not used.
    """

    def __init__(self, prompts: Sequence[str], responses: Sequence[str] | None = None, rare_df: int = 3,
                 rare_min_prompts: int = 100, cache: int = 8192):
        from functools import lru_cache

        from ilp_ray.data.forms import answer_form

        # Only each prompt's content units are kept for the whole dataset. Its parsed words are read
        # again where a pair is tested (a bounded cache: pairs come sorted by their first sample), so
        # a 300k-record set holds no 300k word lists (~1.7 kB a prompt).
        self._parse = lru_cache(maxsize=cache)(lambda s: prompt_parts(prompts[s]))
        self.kinds = None if responses is None else [answer_kind(r) for r in responses]
        # One-word answers' forms: a question's answers, right or wrong, share one (a 2-letter code
        # and a 3-letter one answer two questions: a country's alpha-2 and alpha-3 codes).
        # Numbers ("8", "Eight") are compared by kind above, not by form.
        self.forms = None if responses is None else [
            answer_form(r).key if k == "name" else None for r, k in zip(responses, self.kinds, strict=True)]
        # The form a template's answers take (majority of at least 3, of 2/3 or more): two
        # templates whose answers differ in form ask two kinds of question ("Name the motto of *."
        # is answered in lower-case phrases, "Who founded *?" by names), whatever their words.
        self.template_form: list = [None] * len(prompts)
        if responses is not None:
            from collections import defaultdict

            from ilp_ray.data.forms import prompt_templates

            tids = prompt_templates(prompts).ids
            by_t: dict[int, Counter] = defaultdict(Counter)
            for t, r in zip(tids, responses, strict=True):
                by_t[t][answer_form(r).kind_key] += 1
            major = {}
            for t, fs in by_t.items():
                top, count = fs.most_common(1)[0]
                total = fs.total()
                if total >= 3 and count * 3 >= 2 * total:
                    major[t] = top
            self.template_form = [major.get(t) for t in tids]
        self.rare_df = rare_df
        self.df: Counter[str] = Counter()
        self._units: list[tuple[Unit, ...]] = []
        use_rare = len(prompts) >= rare_min_prompts
        for p in prompts:
            pp = prompt_parts(p)
            self._units.append(pp.units)
            if use_rare:
                self.df.update({w for _, w in pp.free})
        if use_rare:  # a second reading, once every frequency is known
            for s, p in enumerate(prompts):
                rare = self._rare_runs(prompt_parts(p))
                if rare:
                    self._units[s] = self._units[s] + rare

    def __len__(self) -> int:
        return len(self._units)

    def part(self, s: int) -> PromptParts:
        """Prompt ``s`` read (``prompt_parts``), from the bounded cache."""
        return self._parse(s)

    def _is_rare(self, w: str) -> bool:
        return self.df[w] <= self.rare_df and w not in STOPWORDS and w not in _NUM_WORDS and len(w) > 1 \
            and not w[0].isdigit()

    def _rare_runs(self, p: PromptParts) -> tuple[Unit, ...]:
        runs: list[list[tuple[int, str]]] = []
        for k, w in p.free:
            if not self._is_rare(w):
                continue
            if runs and runs[-1][-1][0] == k - 1:
                runs[-1].append((k, w))
            else:
                runs.append([(k, w)])
        return tuple(Unit("rare", " ".join(w for _, w in r)) for r in runs)

    def units(self, s: int) -> tuple[Unit, ...]:
        """Prompt ``s``'s content units: quotes, names, numbers and rare words."""
        return self._units[s]

    def unmatched(self, s: int, other: int) -> list[Unit]:
        """The content units of prompt ``s`` that prompt ``other`` lacks, counted as multisets (a
        second "Saint Kitts" needs a second one)."""
        o, theirs = self.part(other), self.units(other)
        have = Counter(u.text for u in theirs if u.kind != "number")
        nums = Counter(u.text for u in theirs if u.kind == "number")
        out = []
        for u in self.units(s):
            pool = nums if u.kind == "number" else have
            if pool[u.text] > 0:
                pool[u.text] -= 1
            elif u.kind == "number" or f" {u.text} " not in o.free_text:
                out.append(u)
        return out

    def test(self, a: int, b: int) -> tuple[bool, str, list[Unit], list[Unit]]:
        """(same question?, why, a's unmatched units, b's unmatched units) for samples a and b."""
        ua, ub = self.unmatched(a, b), self.unmatched(b, a)
        if ua and ub:
            return False, f"different question: {_units(ua)} vs {_units(ub)}", ua, ub
        if self.kinds is not None and None not in (self.kinds[a], self.kinds[b]) and self.kinds[a] != self.kinds[b]:
            return False, f"different question: a {self.kinds[a]} answers one, a {self.kinds[b]} the other", ua, ub
        if self.forms is not None and None not in (self.forms[a], self.forms[b]) and self.forms[a] != self.forms[b]:
            return False, "different question: their one-word answers differ in form", ua, ub
        ta, tb = self.template_form[a], self.template_form[b]
        if None not in (ta, tb) and ta != tb:
            return False, "different question: their templates' answers differ in form", ua, ub
        if ua or ub:
            return True, f"same question: only one side adds {_units(ua or ub)}", ua, ub
        return True, "same question: only template words differ", ua, ub


def unit_pairs(sq: SameQuestion, max_group: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample pairs whose prompts share a content unit (a quote, a name or a rare word; numbers
    alone are not enough), ``i < j``, each pair once.

    The cosine search finds a sample's nearest prompts, and in templated data those are its
    template's siblings: a paraphrase about the same entity in another template (cosine 0.7-0.85)
    is not among its k nearest. Pairing by shared units finds it whatever its rank. A unit shared
    by more than ``max_group`` prompts names no one item (a template word the surface cues took
    for a name) and is skipped, which also bounds the pairs at ``max_group²`` per unit.
    """
    by_unit: dict[str, list[int]] = {}
    for s in range(len(sq)):
        for u in {u.text for u in sq.units(s) if u.kind != "number"}:
            by_unit.setdefault(u, []).append(s)
    found: set[tuple[int, int]] = set()
    for members in by_unit.values():
        if 1 < len(members) <= max_group:
            found.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    arr = np.array(sorted(found), dtype=np.int64)
    return arr[:, 0], arr[:, 1]


def _units(us: list[Unit], limit: int = 3) -> str:
    return ", ".join(map(str, us[:limit])) + (f" (+{len(us) - limit})" if len(us) > limit else "")
