"""The scoring contract: log-likelihood of every option of a multiple-choice item under one model."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

from ilp_ray.records import McItem, OptionScores


class ScoringEngine(abc.ABC):
    """Abstract base class for scoring backends.

    An engine turns each ``McItem`` (a question and its options) into ``OptionScores``: for every
    option, the natural-log likelihood of the option text given the rendered question, summed over
    the option's tokens, plus its token and character counts. How the question is rendered
    (``fmt``) and tokenised is fixed when the engine is built, so that two engines with the same
    settings are comparable option by option.

    Subclasses set the class-level ``name`` (the registry key) and implement ``score``; they add to
    ``self._truncated`` for every item whose prompt they left-truncate.

    Args:
        tag: the model label written into ``OptionScores.model`` (e.g. "base", "sft", a path).
    """

    name: ClassVar[str] = "base"

    def __init__(self, tag: str):
        self._tag = tag
        self._truncated = 0

    @abc.abstractmethod
    def score(self, items: Sequence[McItem]) -> list[OptionScores]:
        """Score every option of every item.

        Args:
            items: the items to score. They may have different numbers of options (at least one
                each) and prompts of any length. Implementations may batch, sort or regroup items
                internally; batching never changes the results beyond float rounding.

        Returns:
            One ``OptionScores`` per item, in the same order as ``items``, with
            ``len(logprob_sum) == len(item.options)`` and the options in item order.
            ``truncated`` is true for items whose prompt was left-truncated to fit the context.

        Raises:
            DataError: an item cannot be scored (e.g. one option alone is longer than the
                model's context); the message names the item id.
        """

    def close(self) -> None:
        """Release what the engine holds beyond memory (vLLM: its engine-core process). A no-op
        here; callers that own an engine call it when done rather than leave it to interpreter exit."""
        return None

    @property
    def truncated_count(self) -> int:
        """How many items this engine has left-truncated so far, over all ``score`` calls."""
        return self._truncated

    @property
    def tag(self) -> str:
        """The model label written into ``OptionScores.model``."""
        return self._tag
