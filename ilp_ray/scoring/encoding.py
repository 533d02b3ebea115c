"""Items to token ids, exactly as lm-evaluation-harness 0.4.13's HF backend tokenises them.

Every engine encodes through ``LmEvalEncoder``, so engines differ only in how they compute, and
scores are comparable with lm-eval's ``loglikelihood`` token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ilp_ray.errors import DataError
from ilp_ray.records import McItem
from ilp_ray.scoring.formats import render


@dataclass(frozen=True)
class EncodedItem:
    """One item as token ids, ready to score.

    ``wholes[j]`` is context + continuation of option j (after any left truncation); the first
    ``ctx_len`` tokens are the context, the same for every option; the option's score is the
    log-likelihood of ``wholes[j][ctx_len:]``, predicted from positions ``ctx_len-1 .. len-2``.
    ``n_chars[j]`` is ``len(options[j])``, without the format's delimiter: lm-eval's acc_norm
    divides by ``len(choice)``, and its choices do not include the target delimiter.
    """

    index: int
    id: str
    wholes: tuple[tuple[int, ...], ...]
    ctx_len: int
    n_chars: tuple[int, ...]
    truncated: bool

    @property
    def n_tokens(self) -> tuple[int, ...]:
        return tuple(len(w) - self.ctx_len for w in self.wholes)

    @cached_property
    def prefix_len(self) -> int:
        """Tokens every option's input starts with, so they can be run once for the item.

        The longest common prefix of the options' token sequences, capped at ``ctx_len``. With
        lm-eval's encoding every ``wholes[j]`` is ``context_enc + continuation_enc``, so this is
        ``ctx_len``; computing it keeps the engine right for any encoding.
        """
        first, n = self.wholes[0], self.ctx_len
        for other in self.wholes[1:]:
            i = 0
            while i < n and first[i] == other[i]:
                i += 1
            n = i
        return n


class LmEvalEncoder:
    """Render + tokenise items the way lm-eval's ``HFLM.loglikelihood`` does by default.

    Args:
        tokenizer: the model's HF tokenizer.
        fmt: a prompt format (``ilp_ray.scoring.formats.FORMATS``); checked here, at build time.
        max_length: the model's context window in tokens (input tokens per forward pass).
    """

    def __init__(self, tokenizer, fmt: str, max_length: int):
        render("", "", fmt, tokenizer)  # fail on a bad format now, not at the first item
        self.tokenizer, self.fmt, self.max_length = tokenizer, fmt, max_length
        # lm-eval's prefix token: BOS when the tokenizer has one, else EOS.
        self.prefix_token_id = (tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                                else tokenizer.eos_token_id)
        self._prefix_text = tokenizer.decode(self.prefix_token_id)

    def tok_encode(self, text: str) -> list[int]:
        """lm-eval ``HFLM.tok_encode``: the tokenizer's own special tokens (a BOS for Llama-style
        tokenizers), except when the text already starts with the BOS text (chat templates that
        write it themselves), which must not get a second one."""
        if self._prefix_text and text.startswith(self._prefix_text):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval ``TemplateLM._encode_pair`` + the empty-context branch of ``loglikelihood``.

        Trailing whitespace of the context moves onto the continuation (it tokenises with the word
        that follows). The whole string is encoded once and split at the length of the encoded
        context, so tokens that merge across the boundary are counted in the continuation.
        """
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        if not context:
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        return ctx, whole[len(ctx):]

    def encode(self, item: McItem, index: int = 0) -> EncodedItem:
        """Encode every option of ``item``, left-truncating its context to fit ``max_length``.

        All options lose the same number of context tokens, so every option of an item is scored
        against the same context (lm-eval truncates each request on its own; the two agree
        whenever nothing is truncated).

        Raises:
            DataError: no options, an option that encodes to no tokens, or an option longer than
                ``max_length`` on its own.
        """
        if not item.options:
            raise DataError(f"item {item.id!r} has no options", field="options")
        ctx_ids: list[int] | None = None
        conts = []
        for j, option in enumerate(item.options):
            context, continuation = render(item.question, option, self.fmt, self.tokenizer, item.history)
            ctx, cont = self.encode_pair(context, continuation)
            if not cont:
                raise DataError(f"item {item.id!r}: option {j} encodes to no tokens", field="options")
            if len(cont) > self.max_length:
                raise DataError(f"item {item.id!r}: option {j} is {len(cont)} tokens, longer than the "
                                f"model's max_length {self.max_length} on its own", field="options")
            ctx_ids = ctx if ctx_ids is None else ctx_ids
            conts.append(cont)
        wholes = [ctx_ids + c for c in conts]
        # A forward pass takes whole[:-1] (the last token is only a target), hence the "- 1".
        cut = max(0, max(len(w) for w in wholes) - 1 - self.max_length)
        return EncodedItem(index=index, id=item.id, wholes=tuple(tuple(w[cut:]) for w in wholes),
                           ctx_len=len(ctx_ids) - cut, n_chars=tuple(len(o) for o in item.options),
                           truncated=cut > 0)
