"""Corpus judges: does the corpus support, contradict, or lack an SFT item's fact?

A judge sees each item's ``Fact`` and its matched passages (text and similarity, best first) and
returns ``(corpus_verdict, corpus_score)``: the verdict in ``CORPUS_VERDICTS`` and how sure the
judge is, in [0, 1]: exactly what ``DiagnosisContext.evidence`` reads.

- ``rule`` (default): string heuristics, below. Cheap, transparent, and blind to paraphrase.
- ``model``: MC likelihood through the project's scoring engine, reading the passage.
- ``llm``: an OpenAI-compatible chat endpoint.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ilp_ray.evidence.index import EvidenceError
from ilp_ray.evidence.query import Fact, keywords
from ilp_ray.registry import Registry

CORPUS_VERDICTS = ("supports", "contradicts", "absent")  # the diagnosis hook's vocabulary


@dataclass(frozen=True)
class Candidate:
    """A matched passage of one item; ``sim`` is its cosine to the item (1.0 when unmatched)."""

    passage_id: str
    text: str
    bm25: float
    sim: float


class CorpusJudge(ABC):
    """Decides each item's corpus verdict. Construct with the ``JudgeConfig``."""

    name: str = ""

    def __init__(self, cfg):
        self.cfg = cfg

    @abstractmethod
    def judge(self, facts: Sequence[Fact], candidates: Sequence[Sequence[Candidate]]) -> list[tuple[str, float]]:
        """Judge a batch of items.

        Args:
            facts: the items' facts.
            candidates: per item, its matched passages, best first (possibly none).

        Returns:
            One ``(verdict, score)`` per item, in order; an item without candidates is ``absent``.
        """


def _norm(s: str) -> str:
    return " ".join(re.findall(r"\w+", s.lower()))


def _contains(text: str, span: str) -> bool:
    span = _norm(span)
    return bool(span) and f" {span} " in f" {_norm(text)} "


def slot_values(text: str, subject: str, relation: str) -> list[str]:
    """Values a passage gives to ``relation`` of ``subject``: "the R of S is V" / "V is the R of S"."""
    s, r = re.escape(_norm(subject)), re.escape(_norm(relation))
    t = _norm(text)
    out = [m.group(1) for m in re.finditer(rf"\b{r} (?:of|for|in) (?:the )?{s} (?:is|was|are|were) (?:the )?(\w+(?: \w+){{0,2}})", t)]
    out += [m.group(1) for m in re.finditer(rf"(\w+(?: \w+){{0,2}}) (?:is|was|are|were) the {r} (?:of|for|in) (?:the )?{s}\b", t)]
    out += [m.group(1) for m in re.finditer(rf"\b{s}(?: s)? {r} (?:is|was|are|were) (?:the )?(\w+(?: \w+){{0,2}})", t)]
    return out


class RuleJudge(CorpusJudge):
    """String rules, in this order, over the matched passages. When the item's subject is known
    (a triple was extracted), only passages that mention the subject count: a value that occurs
    in a passage about something else says nothing about this fact.

    1. supports: the answer span occurs in a passage (whole words, case and punctuation
       ignored). A long answer (more than 8 words) counts as present when 80% of its content
       words occur in one passage. Score: that passage's similarity.
    2. contradicts: a passage that mentions the subject states another value instead. For an MC
       item, another of its options occurs in the passage (the options are the values the
       question admits); otherwise the relation's slot is filled with another value ("the
       capital of X is Z", "Z is the capital of X", "X's capital is Z"), whose words do not
       overlap the object's. Score: that passage's similarity.
    3. absent: neither. Score: 1 − the best similarity (no close passage: surer it is absent).
    """

    name = "rule"

    def judge(self, facts, candidates):
        return [self._one(f, list(c)) for f, c in zip(facts, candidates, strict=True)]

    def _one(self, fact: Fact, cands: list[Candidate]) -> tuple[str, float]:
        long = len(fact.answer.split()) > 8
        want = keywords(fact.answer)
        about = [c for c in cands if _contains(c.text, fact.subject)] if fact.subject else cands
        for c in about:
            if long and want:
                have = set(keywords(c.text))
                if sum(w in have for w in want) >= 0.8 * len(want):
                    return "supports", _clip(c.sim)
            elif _contains(c.text, fact.answer):
                return "supports", _clip(c.sim)
        if fact.subject:
            others = [o for o in (fact.options or ()) if _norm(o) != _norm(fact.answer)]
            obj = set(keywords(fact.object or fact.answer))
            for c in about:
                if any(_contains(c.text, o) for o in others):
                    return "contradicts", _clip(c.sim)
                if fact.relation and any(not (set(keywords(v)) & obj)
                                         for v in slot_values(c.text, fact.subject, fact.relation)):
                    return "contradicts", _clip(c.sim)
        best = max((c.sim for c in cands), default=0.0)
        return "absent", _clip(1.0 - best)


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


PROMPT = """Passage from the pretraining corpus:
{passages}

Claim: the answer to "{question}" is "{answer}".

Does the passage SUPPORT the claim, CONTRADICT it (it gives a different answer), or is the claim \
ABSENT from it? Reply with one word: SUPPORT, CONTRADICT or ABSENT."""


class LlmJudge(CorpusJudge):
    """An OpenAI-compatible endpoint: ``POST {url}/v1/chat/completions``, one request per item
    with candidates, temperature 0; the reply's first word (SUPPORT/CONTRADICT/ABSENT) is the
    verdict, anything else ``absent`` with score 0. The score of a verdict is the best shown
    passage's similarity (the endpoint gives no calibrated confidence). An unreachable endpoint raises
    ``EvidenceError`` naming the URL; the key (env ``api_key_env``) is never put in errors.
    """

    name = "llm"
    _WORDS: ClassVar[dict[str, str]] = {"support": "supports", "supports": "supports", "contradict": "contradicts",
              "contradicts": "contradicts", "absent": "absent"}

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.url:
            raise ValueError("judge.url is required for judge 'llm' (an OpenAI-compatible base URL)")

    def judge(self, facts, candidates):
        out = []
        for f, cands in zip(facts, candidates, strict=True):
            cands = list(cands)[: self.cfg.max_passages]
            if not cands:
                out.append(("absent", 1.0))
                continue
            word = self._ask(PROMPT.format(passages="\n\n".join(c.text for c in cands),
                                           question=f.query if not f.subject else f"{f.relation} of {f.subject}",
                                           answer=f.answer))
            verdict = self._WORDS.get(word)
            out.append((verdict, _clip(cands[0].sim)) if verdict else ("absent", 0.0))
        return out

    def _ask(self, prompt: str) -> str:
        from ilp_ray.llm_client import chat_first_word

        try:
            return chat_first_word(self.cfg.url, self.cfg.llm_model, [{"role": "user", "content": prompt}],
                                   api_key_env=self.cfg.api_key_env, timeout=self.cfg.timeout_s,
                                   who="corpus judge")
        except RuntimeError as e:  # as an EvidenceError, so the CLI reports it as a user-facing error
            raise EvidenceError(str(e)) from None


JUDGES: Registry[CorpusJudge] = Registry("corpus judge", CorpusJudge)
JUDGES.register("rule", RuleJudge)
JUDGES.register("llm", LlmJudge)
JUDGES.register("model", "ilp_ray.evidence.model_judge:ModelJudge")
