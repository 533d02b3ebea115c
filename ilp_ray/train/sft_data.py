"""SFT examples as token ids with labels: the loss falls on response tokens only.

The prompt is rendered and tokenised by the audit core's own encoder (``ilp_ray.scoring``), so a
trained model is scored after training on exactly the token sequence it was trained on: for the
``chat`` format, the tokenizer's chat template with one user turn (the prompt) and the generation
prompt, followed by the response; for ``plain``, ``"prompt\\n"`` + response. An EOS token ends
every example, so the model also learns where the response stops (the scorer never asks for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ilp_ray.errors import DataError
from ilp_ray.records import SftRecord

IGNORE = -100  # label of tokens that carry no loss (torch's CrossEntropyLoss ignore_index)


@dataclass(frozen=True)
class Example:
    """One training sequence.

    ``labels[i]`` is ``IGNORE`` on prompt tokens and the token id itself on response tokens
    (HF causal LMs shift labels internally). ``truncated``: the prompt lost tokens on the left.
    """

    id: str
    subset: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    truncated: bool = False


def resolve_format(fmt: str, tokenizer) -> str:
    """``auto`` → ``chat`` when the tokenizer has a chat template, else ``plain``."""
    if fmt == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    return fmt


def encode_sft(records: Sequence[SftRecord], tokenizer, fmt: str, max_length: int) -> list[Example]:
    """Tokenise records with prompt tokens masked.

    Args:
        records: the SFT records.
        tokenizer: the model's tokenizer.
        fmt: ``chat`` or ``plain`` (see ``resolve_format``).
        max_length: tokens per example. A longer example loses prompt tokens from the left (the
            start of a long prompt matters least for the answer); the response is never cut.

    Returns:
        One ``Example`` per record, in record order.

    Raises:
        DataError: a response (+ EOS) alone is longer than ``max_length``; names the record.
    """
    from ilp_ray.scoring.encoding import LmEvalEncoder
    from ilp_ray.scoring.formats import render

    encoder = LmEvalEncoder(tokenizer, fmt, max_length)
    eos = tokenizer.eos_token_id
    out = []
    for r in records:
        context, continuation = render(r.prompt, r.response, fmt, tokenizer, r.history)
        ctx, cont = encoder.encode_pair(context, continuation)
        cont = list(cont) + ([eos] if eos is not None else [])
        if len(cont) + 1 > max_length:  # at least one prompt token must remain to predict from
            raise DataError(f"record {r.id!r}: the response is {len(cont)} tokens with EOS, which does "
                            f"not fit max_length {max_length}; raise sft.max_length", field="response")
        cut = max(0, len(ctx) + len(cont) - max_length)
        ctx = list(ctx[cut:])
        out.append(Example(id=r.id, subset=r.subset, input_ids=tuple(ctx + cont),
                           labels=tuple([IGNORE] * len(ctx) + cont), truncated=cut > 0))
    return out


def collate(examples: Sequence[Example], pad_id: int):
    """Right-pad a batch: ``{"input_ids", "attention_mask", "labels"}`` as long tensors."""
    import torch

    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids)
        labels[i, :k] = torch.tensor(e.labels)
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def per_sample_loss(model, examples: Sequence[Example], pad_id: int, batch_size: int = 16) -> list[float]:
    """Mean cross-entropy over each example's response tokens (its SFT loss), without gradients.

    Args:
        model: a causal LM (in whatever mode the caller set; eval for trajectories).
        examples: the examples to score.
        pad_id: padding token id.
        batch_size: examples per forward pass.

    Returns:
        One loss per example, in order (nats per response token).
    """
    import torch

    out: list[float] = []
    dev = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(dev) for k, v in collate(examples[start:start + batch_size], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            targets = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
            counts = (targets != IGNORE).sum(1).clamp(min=1)
            out.extend((nll.sum(1) / counts).tolist())
    return out
