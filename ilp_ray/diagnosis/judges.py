"""Conflict judges: which side of a conflicting SFT pair is right (paper 3.2.3, Appendix C.2).

The paper asks GPT-4 / DeepSeek. A judge here answers, per pair, one of:

- ``"a"`` / ``"b"``: that side is right, the other is judged wrong (deletion candidate);
- ``"both"``: both are right (synonym answers, or questions that differ in a detail): no
  conflict. The detector clears the pair, and neither sample is III through it (its evidence
  lists the pair under ``cleared_by_judge``);
- ``"neither"``: both are judged wrong;
- ``"undecided"``: no judgement; both stay conflicting.

Judges live in ``JUDGES`` (lazy entries; ``"module:attr"`` strings work for your own).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ilp_ray.registry import Registry

VERDICTS = ("a", "b", "both", "neither", "undecided")


@dataclass(frozen=True)
class ConflictPair:
    """Two samples whose prompts ask the same thing (cosine >= theta, and what varies agrees) and
    whose responses disagree."""

    a: str
    b: str
    prompt_a: str
    prompt_b: str
    response_a: str
    response_b: str
    similarity: float
    p_a: float | None = None  # fine-tuned model's p(correct) of each side's own MC item
    p_b: float | None = None
    base_p_a: float | None = None
    base_p_b: float | None = None


def judged_wrong(pair: ConflictPair, verdict: str) -> list[str]:
    """The ids a verdict marks wrong."""
    return {"a": [pair.b], "b": [pair.a], "neither": [pair.a, pair.b]}.get(verdict, [])


class ConflictJudge(ABC):
    """Decides conflicting pairs. Construct with the ``ConflictConfig``."""

    name: str = ""

    def __init__(self, cfg):
        self.cfg = cfg

    @abstractmethod
    def judge(self, pairs: Sequence[ConflictPair]) -> list[str]:
        """Judge every pair.

        Args:
            pairs: the conflicting pairs, any number (a judge may batch or call per pair).

        Returns:
            One verdict of ``VERDICTS`` per pair, in order.
        """


class NoJudge(ConflictJudge):
    """No judgement: both sides of every pair stay conflicting."""

    name = "none"

    def judge(self, pairs):
        return ["undecided"] * len(pairs)


class ModelJudge(ConflictJudge):
    """The model's own likelihood: the side whose MC item it gives the higher p(correct) is right.

    Uses the audit's verdict table (no re-scoring): the fine-tuned model's ``pass_expected`` of each
    side, or the base model's with ``judge_source: base``. Sides closer than ``judge_margin`` are
    undecided. The model is a weak judge of truth; it says which side the model sides with.
    """

    name = "model"

    def judge(self, pairs):
        out = []
        for p in pairs:
            pa, pb = (p.p_a, p.p_b) if self.cfg.judge_source == "sft" else (p.base_p_a, p.base_p_b)
            if pa is None or pb is None or abs(pa - pb) < self.cfg.judge_margin:
                out.append("undecided")
            else:
                out.append("a" if pa > pb else "b")
        return out


PROMPT = """Two training examples ask (nearly) the same question but give different answers.

Question A: {prompt_a}
Answer A: {response_a}

Question B: {prompt_b}
Answer B: {response_b}

Which answer is correct? Reply with one word: A (only A is correct), B (only B is correct), \
BOTH (both are correct, e.g. the questions differ in a detail), or NEITHER."""


class LlmJudge(ConflictJudge):
    """An OpenAI-compatible chat endpoint: ``POST {judge_url}/v1/chat/completions``.

    One request per pair, ``temperature`` 0, the prompt in ``PROMPT``; the first word of
    ``choices[0].message.content`` (A, B, BOTH, NEITHER; case-insensitive) is the verdict, and
    anything else is ``undecided``. The API key, if the variable ``judge_api_key_env`` is set,
    goes in an ``Authorization: Bearer`` header. An unreachable endpoint or an HTTP error raises
    ``RuntimeError`` naming the URL: a judge that silently decided nothing would hide it.
    """

    name = "llm"
    _WORDS: ClassVar[dict[str, str]] = {"a": "a", "b": "b", "both": "both", "neither": "neither"}

    def judge(self, pairs):
        return [self._one(p) for p in pairs]

    def _one(self, p: ConflictPair) -> str:
        from ilp_ray.llm_client import chat_first_word

        word = chat_first_word(
            self.cfg.judge_url, self.cfg.judge_model,
            [{"role": "system", "content": "You check facts in training data."},
             {"role": "user", "content": PROMPT.format(**p.__dict__)}],
            api_key_env=self.cfg.judge_api_key_env, timeout=self.cfg.judge_timeout_s, who="conflict judge")
        return self._WORDS.get(word, "undecided")


JUDGES: Registry[ConflictJudge] = Registry("conflict judge", ConflictJudge)
JUDGES.register("none", NoJudge)
JUDGES.register("model", ModelJudge)
JUDGES.register("llm", LlmJudge)
