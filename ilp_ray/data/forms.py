"""The form of an answer and the template of a prompt: what makes a distractor a fair one.

A multiple-choice item is a fair question only when its distractors look like its answer: a code
for a code, a number for a number, a definition for a definition. In mixed SFT data the nearest
answers by meaning are often of another kind ("DK" next to "Hg" and "N"), and a model then picks
by form (the shortest string, the commonest token) instead of by knowledge. Two pure functions
describe what MC conversion must match:

- ``answer_form(text)``: the answer's kind (number, single token, several words), its script, its
  casing and its length. ``AnswerForm.key`` is the part that must be equal (a 2-letter upper-case
  code only ever faces 2-letter upper-case codes); ``compatible`` adds the length rule for the
  rest (within a factor ``ratio`` in characters, and in words for multi-word answers).
- ``prompt_templates(prompts)``: the template of each prompt, learnt from the prompts themselves.
  A word that occurs in at least ``min_df`` prompts is part of a template; the rare words between
  them are the slot ("What is the ISO 3166-1 alpha-2 code of *?"). Records that share a template
  ask the same kind of question, so their answers are the first place to look for distractors.
  The slot words are also the question's *subject*: another record's answer that mentions them
  ("a stream or brook" for "Define the word 'brook'") is likely correct for this question too.

Both work on any data: nothing here knows how a dataset was made, and text with no templates
simply gives every prompt a template of its own.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# A number with separators and an optional short unit: "22", "3,306", "-4.5", "100 °C", "1.5 kg".
_NUMBER = re.compile(r"[-+−]?\d(?:[\d,.\u202f]*\d)?(?:\s?(?:%|°[A-Za-z]?|[^\W\d_]{1,3}))?")
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WORD = re.compile(r"\w+", re.UNICODE)
#: Codes (upper-case tokens of at most this many characters, or title-case ones of up to 2, the
#: element symbols) must match in length exactly: "DK" is not a distractor of "DNK", "Hg" not of
#: "N". Other tokens ("red", "blue") only within the length ratio.
SHORT_TOKEN = 4
#: Function words never count as a question's subject, however rare they are in a dataset.
_STOP = frozenset((
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "from", "by", "with", "and", "or", "not", "is",
    "are", "was", "were", "be", "been", "what", "which", "who", "whom", "whose", "when", "where", "why",
    "how", "does", "do", "did", "can", "could", "would", "should", "will", "shall", "may", "might", "this",
    "that", "these", "those", "it", "its", "as", "into", "than", "then", "there", "their", "they", "them",
    "his", "her", "he", "she", "we", "you", "your", "our", "my", "me", "i", "us", "one", "some", "any",
    "each", "every", "all", "no", "nor", "so", "such", "only", "own", "same", "other", "about", "give",
    "name", "state", "tell", "say", "write", "define", "word", "words", "mean", "means", "meaning",
    "answer", "question", "please", "full",
))


@dataclass(frozen=True)
class AnswerForm:
    """What an answer looks like, apart from what it says.

    Attributes:
        kind: ``number`` (digits, with separators and an optional unit), ``token`` (one word or
            code without spaces) or ``words`` (several words).
        script: the Unicode script of most of its letters (``LATIN``, ``CYRILLIC``, ``CJK`` …), or
            ``none`` without letters.
        case: ``upper`` (every letter upper case), ``title`` (first letter upper case), ``lower``
            (first letter lower case) or ``none``.
        chars: length in characters (stripped).
        words: number of words.
        terminal: ends with sentence punctuation (``.``, ``!``, ``?``): a sentence, not a name.
        marks: for a token, its punctuation in order ("Europe/Paris" has "/", "Paris" none): a
            structured value (a path, a zone, a version) is not a distractor of a plain word.
    """

    kind: str
    script: str
    case: str
    chars: int
    words: int
    terminal: bool
    marks: str = ""

    @property
    def kind_key(self) -> tuple:
        """The coarse form (kind, script, casing): what every answer of one question shares."""
        return (self.kind, self.script, self.case)

    @property
    def key(self) -> tuple:
        """The attributes a distractor must share exactly."""
        if self.kind == "number":
            return ("number",)
        code = self.kind == "token" and (
            (self.case == "upper" and self.chars <= SHORT_TOKEN) or (self.case == "title" and self.chars <= 2))
        shape = self.chars if code else 0
        return (self.kind, self.script, self.case, shape, self.terminal, self.marks)

    def compatible(self, other: AnswerForm, ratio: float) -> bool:
        """Same key, and lengths within ``ratio`` of each other (characters; words too for
        multi-word answers). Numbers of any length are compatible ("22" and "3306")."""
        if self.key != other.key:
            return False
        if self.kind == "number":
            return True
        if not _within(self.chars, other.chars, ratio):
            return False
        return self.kind != "words" or _within(self.words, other.words, ratio)


def _within(a: int, b: int, ratio: float) -> bool:
    lo, hi = min(a, b), max(a, b)
    return hi <= ratio * max(lo, 1)


def _script(ch: str) -> str:
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return "OTHER"
    first = name.split()[0]
    return "CJK" if first in ("CJK", "HIRAGANA", "KATAKANA") else first


def answer_form(text: str) -> AnswerForm:
    """The ``AnswerForm`` of an answer text."""
    t = " ".join(str(text).split())
    words = len(_WORD.findall(t))
    letters = [c for c in t if c.isalpha()]
    if letters:
        script = Counter(_script(c) for c in letters).most_common(1)[0][0]
        if all(c.isupper() for c in letters if c.isupper() or c.islower()) and any(c.isupper() for c in letters):
            case = "upper"
        elif letters[0].isupper():
            case = "title"
        elif letters[0].islower():
            case = "lower"
        else:
            case = "none"
    else:
        script, case = "none", "none"
    if _NUMBER.fullmatch(t):
        kind = "number"
    elif " " not in t:
        kind = "token"
    else:
        kind = "words"
    marks = "".join(c for c in t if not c.isalnum()) if kind == "token" else ""
    return AnswerForm(kind=kind, script=script, case=case, chars=len(t), words=max(words, 1),
                      terminal=t.endswith((".", "!", "?")) and kind == "words", marks=marks)


def prompt_tokens(prompt: str) -> list[str]:
    """Lower-cased word and punctuation tokens of a prompt."""
    return _TOKEN.findall(str(prompt).casefold())


@dataclass(frozen=True)
class Templates:
    """``prompt_templates``' result: a template id per prompt and each prompt's subject words."""

    ids: list[int]
    skeletons: list[tuple[str, ...]]
    subjects: list[frozenset[str]]
    min_df: int

    def sizes(self) -> Counter:
        return Counter(self.ids)


def prompt_templates(prompts: Sequence[str], min_df: int | None = None) -> Templates:
    """Group prompts by template, learnt from their word frequencies.

    Args:
        prompts: every prompt of the dataset.
        min_df: a word in at least this many prompts belongs to a template. None: 4, or 0.1% of
            the prompts when that is more (a template is a pattern many records share; an entity
            is asked about in a handful of them).

    Returns:
        ``Templates``: prompts with the same skeleton (template words in order, each run of
        other words, and every capitalised word inside the sentence, collapsed to ``*``) share an id; ``subjects[i]`` are prompt i's rare content
        words (not template words, not function words, at least 3 characters or containing a
        digit).
    """
    # Two readings of the prompts, so that no token list of the whole set is held: the first
    # counts each word's prompts, the second builds each skeleton against those counts.
    if min_df is None:
        min_df = max(4, -(-len(prompts) // 1000))
    df = Counter(w for p in prompts for w in {t.casefold() for t in _TOKEN.findall(str(p))})
    ids: list[int] = []
    skeletons: list[tuple[str, ...]] = []
    subjects: list[frozenset[str]] = []
    index: dict[tuple[str, ...], int] = {}
    canon: list[tuple[str, ...]] = []  # one tuple per template, shared by its prompts
    for p in prompts:
        raw = _TOKEN.findall(str(p))
        # A capitalised word inside a sentence is a name: a slot however often it is asked about
        # (a country with six relations is in six prompts; a template word would be in all of them).
        name = {k for k, w in enumerate(raw) if k and w[:1].isupper() and raw[k - 1] not in (".", "?", "!", ":")}
        sk: list[str] = []
        subj = set()
        for k, w in enumerate(t.casefold() for t in raw):
            if df[w] >= min_df and k not in name:
                sk.append(w)
            else:
                if not sk or sk[-1] != "*":
                    sk.append("*")
                if w.isalnum() and w not in _STOP and (len(w) >= 3 or any(c.isdigit() for c in w)):
                    subj.add(w)
        key = tuple(sk)
        if all(w == "*" for w in key):  # no template word: a prompt of its own kind
            key = ("\x00", len(ids))
        tid = index.setdefault(key, len(index))
        if tid == len(canon):
            canon.append(key)
        ids.append(tid)
        skeletons.append(canon[tid])
        subjects.append(frozenset(subj))
    return Templates(ids=ids, skeletons=skeletons, subjects=subjects, min_df=min_df)


#: An echo shares at least this many leading characters with a subject word (``mentions``).
ECHO_PREFIX = 4


def mentions(text: str, words: frozenset[str], echo: bool = False) -> bool:
    """Does ``text`` contain any of ``words`` (as whole lower-cased words)? With ``echo``, also a
    word that *echoes* one of them: a shared beginning of at least ``ECHO_PREFIX`` characters and
    at least half the shorter word ("Tirvstead" for "Tirvund", "brooklet" for "brook"). A stem
    echoed from the question is a cue a model can copy, and a word of the same stem is often right
    too; three-letter codes ("MDG") never echo."""
    if not words:
        return False
    found = set(_WORD.findall(str(text).casefold()))
    if not words.isdisjoint(found):
        return True
    return echo and any(_shared_start(w, s) >= max(ECHO_PREFIX, -(-min(len(w), len(s)) // 2))
                        for w in found for s in words)


def _shared_start(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
