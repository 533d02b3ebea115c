"""Typed records passed between stages. Small and frozen; tables hold the same columns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SftRecord:
    """One supervised fine-tuning sample.

    ``position`` is its index in training order; ``options``/``answer`` are set only when the
    data is already multiple-choice (then MC conversion keeps them as they are).

    A sample taken from a conversation (``ilp_ray.data.conversations``) keeps what came before its
    prompt: ``history`` holds the earlier ``(role, content)`` turns (a system turn first, if any),
    ``prompt`` the last user turn and ``response`` the assistant turn that answers it; ``turn`` is
    the 0-based index of that assistant turn among the conversation's assistant turns. Training
    and scoring render ``history`` + ``prompt`` together (``ilp_ray.scoring.formats.render``).
    """

    id: str
    prompt: str
    response: str
    subset: str = "default"
    position: int = 0
    options: tuple[str, ...] | None = None
    answer: int | None = None
    history: tuple[tuple[str, str], ...] = ()
    turn: int | None = None


@dataclass(frozen=True)
class McItem:
    """A multiple-choice view of one SFT record (paper section 3.1.1).

    ``options[answer]`` is the original response; ``distractor_ids`` are the ids of the records
    whose responses became the other options, in option order (empty for pre-built options).
    """

    id: str
    question: str
    options: tuple[str, ...]
    answer: int
    distractor_ids: tuple[str, ...] = ()
    subset: str = "default"
    position: int = 0
    fallback: int = 0  # how far MC conversion relaxed the answer's form (0: every distractor matches it)
    history: tuple[tuple[str, str], ...] = ()  # the conversation before the question (SftRecord.history)


@dataclass(frozen=True)
class OptionScores:
    """Log-likelihood of each option given the question, under one model.

    Sums are natural-log. ``n_chars`` lets acc_norm divide by characters as lm-eval does.
    ``truncated`` is true when the prompt was left-truncated to fit the context window.
    """

    id: str
    model: str
    logprob_sum: tuple[float, ...]
    n_tokens: tuple[int, ...]
    n_chars: tuple[int, ...]
    truncated: bool = False


@dataclass(frozen=True)
class SampleVerdict:
    """Every per-sample figure of an audit (fine-tuned model unless prefixed ``base_``)."""

    id: str
    subset: str
    position: int
    answer: int
    probs: tuple[float, ...]
    pred: int
    pred_norm: int
    correct: bool
    pass_at_n: float
    pass_expected: float
    bon_correct: bool
    entropy: float
    confidence: float
    base_probs: tuple[float, ...] | None = None
    base_pred: int | None = None
    base_correct: bool | None = None
    base_pass_expected: float | None = None
    known_by_base: bool | None = None
    js_base_sft: float | None = None
    unlearned: bool = False
    error_consistency: float = 0.0
    severity_rank: int | None = None
    in_top_k: bool = False
    extra: dict = field(default_factory=dict)


def history_messages(history: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """``SftRecord.history`` as chat messages (``[{"role", "content"}, ...]``): the chat template's,
    the items table's and the scoring service's form of it."""
    return [{"role": role, "content": content} for role, content in history]


def history_from_messages(messages) -> tuple[tuple[str, str], ...]:
    """The inverse of ``history_messages`` (None or empty: no history)."""
    return tuple((m["role"], m["content"]) for m in messages or ())


def records_frame(records):
    """SFT records as a DataFrame (id, subset, prompt, response): an MLflow dataset input."""
    import pandas as pd

    return pd.DataFrame({"id": [r.id for r in records], "subset": [r.subset for r in records],
                         "prompt": [r.prompt for r in records], "response": [r.response for r in records]})
