"""How a multiple-choice item becomes text: one pure function, ``render``."""

from __future__ import annotations

from ilp_ray.errors import ConfigError

FORMATS: tuple[str, ...] = ("chat", "plain", "lm-eval")


def render(question: str, option: str, fmt: str, tokenizer=None,
           history: tuple[tuple[str, str], ...] = ()) -> tuple[str, str]:
    """Render one (question, option) pair as ``(context, continuation)`` text.

    The model is scored on ``continuation`` given ``context``; the option's log-likelihood is the
    sum over the continuation's tokens only.

    Formats:
        ``lm-eval``: context ``"Question: {question}\\nAnswer:"``, continuation ``" {option}"``.
            This is lm-evaluation-harness's default multiple-choice layout (its
            ``target_delimiter`` is a space). The space goes in front of the option, not at the
            end of the context, because BPE tokenisers fold a leading space into the word: " Paris"
            is one token and "Paris" another, and running text always has the " Paris" form. A
            context ending in a space would leave a lone " " token that the model rarely saw
            before a word, and score the option as the unusual space-less "Paris".
        ``plain``: context ``"{question}\\n"``, continuation ``"{option}"``: the raw SFT layout,
            prompt then response on the next line.
        ``chat``: context is the tokenizer's chat template applied to one user turn with
            ``add_generation_prompt=True`` (so it ends with the assistant header), continuation is
            the option: what an instruction-tuned model sees before it answers.

    ``history`` (the ``(role, content)`` turns before the question, from a conversation) comes
    first: under ``chat`` as those messages in the chat template, under ``plain`` and ``lm-eval``
    as each turn's content on its own line before the question's own layout (neither format has
    roles, and lm-eval has no multi-turn layout to follow).

    Whitespace at the end of a context (the newline of ``plain``, often of ``chat``) is not lost:
    the encoder moves it onto the front of the continuation before tokenising, as lm-eval's
    ``_encode_pair`` does, so "\\n" + "Paris" is tokenised together the way it would be in one
    string. Keeping that step in the encoder, not here, lets ``render`` return the natural text.

    Args:
        question: the item's question (the SFT prompt).
        option: one answer option.
        fmt: one of ``FORMATS``.
        tokenizer: needed for ``chat`` only (its ``apply_chat_template`` is used).
        history: earlier turns of the conversation, oldest first.

    Returns:
        ``(context, continuation)``.

    Raises:
        ConfigError: (a ValueError) unknown ``fmt``, or ``chat`` without a tokenizer that has
            a chat template.
    """
    before = "".join(f"{content}\n" for _, content in history)
    if fmt == "lm-eval":
        return f"{before}Question: {question}\nAnswer:", f" {option}"
    if fmt == "plain":
        return f"{before}{question}\n", option
    if fmt == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("format 'chat' needs a tokenizer with a chat template; "
                              "use 'plain' or 'lm-eval' for models without one", field="format")
        from ilp_ray.records import history_messages

        context = tokenizer.apply_chat_template(history_messages(history) + [{"role": "user", "content": question}],
                                                tokenize=False, add_generation_prompt=True)
        return context, option
    raise ConfigError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}", field="format")
