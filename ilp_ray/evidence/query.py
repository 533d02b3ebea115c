"""From an SFT item (prompt + response) to a corpus query, and the fact the corpus is checked for.

The query is the content words of prompt and response (lower-cased, stopwords removed, first
occurrence kept), with the subject, relation and object in front when a pattern finds them: BM25
ranks by term overlap, and a fact's three slots are the terms a supporting passage must share.

Subject–relation–object extraction is deliberately light: a handful of question templates that
cover factoid SFT data ("What is the capital of France?" + "Paris" → subject France, relation
capital, object Paris). Anything else gets no triple and is judged on the answer span alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

STOPWORDS = frozenset(["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own", "please", "same", "she", "should", "so", "some", "such", "tell", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "answer", "question", "called", "name", "named", "known"])

_WORD = re.compile(r"[\w][\w'-]*", re.UNICODE)
_TAIL = r"\s*[?.!]*\s*$"
# (regex, relation group or fixed relation). Order matters: the first match wins.
_PATTERNS: list[tuple[re.Pattern, str | None]] = [
    (re.compile(r"^(?:what|which|who)\s+(?:is|was|are|were)\s+the\s+(?P<rel>[\w\s-]+?)\s+(?:of|for|in)\s+"
                r"(?P<subj>.+?)" + _TAIL, re.I), None),
    (re.compile(r"^(?:what|which|who)\s+\w+\s+(?:is|was|are|were)\s+the\s+(?P<rel>[\w\s-]+?)\s+(?:of|for|in)\s+"
                r"(?P<subj>.+?)" + _TAIL, re.I), None),
    (re.compile(r"^name\s+the\s+(?P<rel>[\w\s-]+?)\s+(?:of|for|in)\s+(?P<subj>.+?)" + _TAIL, re.I), None),
    (re.compile(r"^(?:what|which)\s+(?P<rel>[\w-]+)\s+(?:is|was|does|did)\s+(?P<subj>.+?)\s+"
                r"(?:have|use|speak|carry|hold|belong to|come from)?" + _TAIL, re.I), None),
    (re.compile(r"^(?:who|which\s+\w+)\s+(?P<rel>wrote|painted|invented|discovered|founded|composed|directed|built)\s+"
                r"(?P<subj>.+?)" + _TAIL, re.I), None),
    (re.compile(r"^(?:in\s+)?what\s+year\s+(?:was|did|were)\s+(?P<subj>.+?)\s+(?P<rel>\w+)" + _TAIL, re.I), None),
    (re.compile(r"^where\s+(?:is|was|are)\s+(?P<subj>.+?)\s+(?P<rel>located|born|found|buried)?" + _TAIL, re.I),
     "location"),
]


@dataclass(frozen=True)
class Fact:
    """What the corpus is searched for, for one SFT item."""

    id: str
    subset: str
    query: str
    answer: str
    subject: str | None = None
    relation: str | None = None
    object: str | None = None
    prompt: str = ""
    options: tuple[str, ...] | None = None  # MC options with the answer first, for the model judge


def keywords(text: str) -> list[str]:
    """Content words of ``text``: lower-cased, stopwords dropped, each once, in order."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(text.lower()):
        w = w.strip("'-")
        if w and w not in STOPWORDS and w not in seen:
            seen[w] = None
    return list(seen)


def extract_triple(prompt: str, response: str) -> tuple[str, str, str] | None:
    """(subject, relation, object) of a factoid question and its answer, or None.

    Only short answers (at most 8 words) are objects: a long response is an explanation, not a
    slot value.
    """
    answer = response.strip().rstrip(".!")
    if not answer or len(answer.split()) > 8:
        return None
    q = " ".join(prompt.strip().split())
    for pat, fixed in _PATTERNS:
        m = pat.match(q)
        if m:
            subj = re.sub(r"^(?:the|a|an)\s+", "", m.group("subj").strip(), flags=re.I)
            rel = fixed or (m.group("rel") or "").strip().lower()
            if subj and rel:
                return subj, rel, answer
    return None


def make_fact(id: str, prompt: str, response: str, subset: str = "default",
              options: Sequence[str] | None = None) -> Fact:
    """Build the ``Fact`` (query, answer span, triple) of one SFT record."""
    triple = extract_triple(prompt, response)
    words = keywords(prompt) + keywords(response)
    if triple:
        words = keywords(" ".join(triple)) + words
    query = " ".join(dict.fromkeys(words))
    s, r, o = triple or (None, None, None)
    return Fact(id=id, subset=subset, query=query, answer=response.strip(), subject=s, relation=r, object=o,
                prompt=prompt, options=tuple(options) if options else None)
