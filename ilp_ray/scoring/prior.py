"""Option priors: each option's log-likelihood *without the question*, under the same model and format.

A model's preference for an option can come from the question or from the option alone: a short
code, a common word or a fluent sentence is likely whatever was asked. The prior separates the
two. It serves twice:

- **calibration** (``scoring.calibration: prior``): an option's score is its log-likelihood with
  the question minus its prior, the pointwise mutual information of option and question
  (lm-eval's ``acc_mutual_info``). A string's length or frequency then cannot win an item;
- **the fairness check**: an item whose answer, or one of whose distractors, wins without the
  question is flagged (``detect.fairness``).

The prior of an option is its score in the item's own format with an empty question (the
format's frame, e.g. ``"Question: \\nAnswer:"`` + ``" {option}"``, or the chat template around an
empty user turn), so the frame's own pull on the answer slot is part of the prior and cancels in
the calibration. Every distinct option text is scored once, however many items share it:
options are packed into pseudo-items of ``CHUNK`` options with an empty question, which the
engines score like any other item (an option's score never depends on the other options of its
item).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ilp_ray.records import McItem

#: Id prefix of the prior pseudo-items (a NUL byte cannot start a real id read from JSON or CSV).
PRIOR_PREFIX = "\x00prior/"
#: Options per pseudo-item: one shared empty context, scored in one pass.
CHUNK = 16


def prior_items(options: Iterable[Sequence[str]]) -> list[McItem]:
    """Pseudo-items that score every distinct option text once, with an empty question."""
    seen: dict[str, None] = {}
    for opts in options:
        for o in opts:
            seen.setdefault(str(o), None)
    texts = list(seen)
    chunks = [texts[c:c + CHUNK] for c in range(0, len(texts), CHUNK)]
    # Every pseudo-item has two options at least, as every item must (a lone last text joins the
    # chunk before it; a lone text overall is scored twice, the same score).
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] += last
    if chunks and len(chunks[0]) == 1:
        chunks[0] = chunks[0] * 2
    return [McItem(id=f"{PRIOR_PREFIX}{c}", question="", options=tuple(opts), answer=0)
            for c, opts in enumerate(chunks)]


def is_prior_id(item_id: str) -> bool:
    return str(item_id).startswith(PRIOR_PREFIX)


def prior_lookup(items: Sequence[McItem], logprob_sums: Sequence[Sequence[float]]) -> dict[str, float]:
    """{option text: prior log-likelihood} from the pseudo-items and their scores, in order."""
    out: dict[str, float] = {}
    for it, lps in zip(items, logprob_sums, strict=True):
        for o, lp in zip(it.options, lps, strict=True):
            out[o] = float(lp)
    return out


def option_priors(options: Iterable[Sequence[str]], lookup: dict[str, float]) -> list[list[float]]:
    """Each item's option priors, in option order (``KeyError`` for an option never scored)."""
    return [[lookup[str(o)] for o in opts] for opts in options]
