"""The transformers scoring engine: each item's prompt is computed once for all its options.

For an item with k options, lm-eval runs k full forward passes over prompt + option. Here:

* ``packed`` (default with sdpa/eager attention): one row per item holds the prompt once, then
  every option's tokens; a tree-shaped attention mask lets each option see the prompt and itself
  only, and position ids restart after the prompt for each option. One forward pass per batch,
  no KV-cache copies, and rows are sorted by length so padding stays small. On SmolLM2 with 2 CPU
  threads this ran ~25% faster than the two-pass form, whose many short option passes run the
  matmuls at low efficiency.
* ``cache`` (any attention implementation): a batch of prompts runs once; its ``DynamicCache`` is
  copied to one row per option; the options' tokens then run on it, grouped by length.

Either way the vocabulary projection (lm_head: ~20% of SmolLM2's weights, plus a [tokens, vocab]
log-softmax) is applied only at the positions that are scored, unless the model post-processes
its logits (soft-capping, scaling), where the full forward pass is used instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ilp_ray.records import McItem, OptionScores
from ilp_ray.scoring.base import ScoringEngine
from ilp_ray.scoring.encoding import EncodedItem, LmEvalEncoder

# A context window beyond this gives no benefit for SFT prompts and lets one pathological item
# allocate a huge attention matrix; items longer than it are left-truncated (and counted).
MAX_LENGTH_CAP = 2048

# Fixed cost of one forward pass (Python, kernel launches for every layer) in tokens of work: the
# batch planner pads rows rather than starting a pass when padding costs less than this.
PASS_OVERHEAD_TOKENS = 64

# Upper bound on option rows × prompt tokens in one option pass: every option row carries a copy
# of its prompt's KV cache (SmolLM2: 46 KB per token), so this caps that copy at ~400 MB.
CACHE_TOKEN_BUDGET = 8192

# "packed": one pass per batch with a tree attention mask; "cache": prompt pass + option pass on
# a copied KV cache (for attention implementations that take no custom mask); "auto" picks.
STRATEGIES = ("auto", "packed", "cache")

# Config fields of models whose logits are not simply lm_head(final hidden state).
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")


class TransformersEngine(ScoringEngine):
    """Score with a Hugging Face causal LM on CPU (or wherever the model lives).

    Args:
        model: a model spec (checkpoint directory or bundled name, loaded with ``load_model``),
            a ``(model, tokenizer)`` pair, or a loaded model with ``tokenizer`` given.
        tokenizer: the tokenizer, when ``model`` is a loaded model.
        fmt: prompt format, one of ``ilp_ray.scoring.formats.FORMATS``.
        batch_size: at most this many items per forward batch ("packed": one row per item;
            "cache": the option pass has about ``batch_size`` × options rows). Batches are cut
            where padding would cost more than an extra pass, so some are smaller.
        max_length: input tokens per sequence; longer prompts are left-truncated. Default: the
            model's ``max_position_embeddings``, capped at ``MAX_LENGTH_CAP``.
        tag: the label written into ``OptionScores.model``; default the spec or the model's
            ``name_or_path``.
        strategy: "packed" (one pass, tree attention mask), "cache" (prompt pass + options on a
            copied KV cache) or "auto" (packed where the attention implementation accepts a
            custom mask: sdpa, eager). Both give the same scores.
    """

    name = "transformers"

    def __init__(self, model, tokenizer=None, *, fmt: str = "lm-eval", batch_size: int = 8,
                 max_length: int | None = None, tag: str | None = None, strategy: str = "auto"):
        model, tokenizer, tag = model_and_tokenizer(model, tokenizer, tag)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        super().__init__(tag)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size = batch_size
        self.max_length = default_max_length(model, max_length)
        self.encoder = LmEvalEncoder(tokenizer, fmt, self.max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._project_selected = _projection_is_lm_head(model)
        attn = getattr(model.config, "_attn_implementation", None)
        if strategy == "auto":
            # A tree mask is a custom 4D mask: only sdpa and eager attention take one as given.
            strategy = "packed" if attn in ("sdpa", "eager") else "cache"
        self.strategy = strategy

    def score(self, items: Sequence[McItem]) -> list[OptionScores]:
        import torch

        encoded = [self.encoder.encode(item, i) for i, item in enumerate(items)]
        if self.strategy == "packed":
            length, run = _packed_len, self._score_packed
        else:
            length, run = (lambda e: e.prefix_len), self._score_cached
        # Items sorted by the length of their longest pass, cut into batches where padding costs
        # less than an extra pass.
        order = sorted(encoded, key=length)
        sums: dict[int, list[float]] = {}
        with torch.inference_mode():
            for lo, hi in _partition([length(e) for e in order], self.batch_size):
                batch = order[lo:hi]
                slots = _Slots(batch, self.model.device)
                feats = run(batch, slots)
                for enc, row in zip(batch, self._sum_logprobs(feats, slots, len(batch))):
                    sums[enc.index] = row
        self._truncated += sum(e.truncated for e in encoded)
        return [OptionScores(id=e.id, model=self.tag, logprob_sum=tuple(sums[e.index]),
                             n_tokens=e.n_tokens, n_chars=e.n_chars, truncated=e.truncated)
                for e in encoded]

    def _sum_logprobs(self, feats, slots: _Slots, n_items: int) -> list[list[float]]:
        """Project the gathered scored positions to the vocabulary (if not yet), log-softmax, and
        sum each option's target log-probabilities."""
        import torch

        logits = self.model.get_output_embeddings()(feats) if self._project_selected else feats
        picked = torch.log_softmax(logits.float(), dim=-1).gather(1, slots.targets.unsqueeze(1)).squeeze(1)
        result: list[list[float]] = [[] for _ in range(n_items)]
        for (b, _), value in zip(slots.rows, picked.split(slots.lengths)):
            result[b].append(float(value.sum()))
        return result

    def _score_packed(self, batch: list[EncodedItem], slots: _Slots):
        """One forward pass; each item is one row: its prompt, then all its options.

        A tree-shaped attention mask lets every option token see the prompt and the earlier tokens
        of its own option only, and position ids restart at the prompt's end for each option, so
        each option is computed exactly as if it were alone after the prompt, while the prompt is
        computed once and no KV cache is copied. Rows are right-padded.
        """
        import torch

        dev = self.model.device
        width = max(_packed_len(e) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        pos = torch.zeros(len(batch), width, dtype=torch.long)
        seg = torch.full((len(batch), width), -1, dtype=torch.long)  # 0 prompt, j+1 option j, -1 pad
        col: dict[tuple[int, int], int] = {}  # (item, option) -> first column of its tokens
        for b, e in enumerate(batch):
            p = e.prefix_len
            ids[b, :p] = torch.tensor(e.wholes[0][:p])
            pos[b, :p] = torch.arange(p)
            seg[b, :p] = 0
            c = p
            for j, whole in enumerate(e.wholes):
                suffix = whole[p:-1]
                col[b, j] = c
                ids[b, c:c + len(suffix)] = torch.tensor(suffix, dtype=torch.long)
                pos[b, c:c + len(suffix)] = torch.arange(p, p + len(suffix))
                seg[b, c:c + len(suffix)] = j + 1
                c += len(suffix)
        mask = _tree_mask(seg, self.model.config, self.model.dtype).to(dev)
        out = self._forward(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos.to(dev))
        src_row, src_col = [], []
        for b, j in slots.rows:
            e = batch[b]
            for a in range(e.ctx_len - 1, len(e.wholes[j]) - 1):  # absolute positions scored
                src_row.append(b)
                src_col.append(a if a < e.prefix_len else col[b, j] + a - e.prefix_len)
        return out[torch.tensor(src_row, device=dev), torch.tensor(src_col, device=dev)]

    def _score_cached(self, batch: list[EncodedItem], slots: _Slots):
        """Two passes, for attention implementations that take no custom 4D mask.

        Pass 1 runs each item's shared prefix (its context) once, left-padded so that every row's
        last column is its last real token. Pass 2 runs each option's remaining tokens on a copy
        of its item's KV cache, in groups of similar length.
        """
        import torch
        from transformers import DynamicCache

        dev, config = self.model.device, self.model.config
        prefix = [e.prefix_len for e in batch]
        n_pre = max(prefix)
        ids = torch.full((len(batch), n_pre), self.pad_id, dtype=torch.long)
        pre_mask = torch.zeros(len(batch), n_pre, dtype=torch.long)
        for b, (e, p) in enumerate(zip(batch, prefix)):
            ids[b, n_pre - p:] = torch.tensor(e.wholes[0][:p])
            pre_mask[b, n_pre - p:] = 1
        pre_mask = pre_mask.to(dev)
        # Real tokens get positions 0..p-1 whatever the padding (pads get 0; they are masked).
        pos = (pre_mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache(config=config)
        last = self._forward(input_ids=ids.to(dev), attention_mask=pre_mask, position_ids=pos,
                             past_key_values=cache, use_cache=True, last_only=True)[:, -1]

        rows, offsets = slots.rows, slots.offsets
        feats = torch.empty(len(slots.targets), last.shape[-1], dtype=last.dtype, device=dev)
        # The prompt's last position predicts the first option token for every option.
        from_prefix = [r for r, (b, _) in enumerate(rows) if prefix[b] == batch[b].ctx_len]
        if from_prefix:
            feats[torch.tensor([offsets[r] for r in from_prefix], device=dev)] = \
                last[torch.tensor([rows[r][0] for r in from_prefix], device=dev)]

        suffix = [batch[b].wholes[j][prefix[b]:-1] for b, j in rows]
        todo = sorted((r for r in range(len(rows)) if suffix[r]), key=lambda r: len(suffix[r]))
        # Each option row holds a copy of its prompt's cache: bound the copies' total size.
        max_rows = max(1, CACHE_TOKEN_BUDGET // n_pre)
        for lo, hi in _partition([len(suffix[r]) for r in todo], max_rows):
            group = todo[lo:hi]
            n_suf = len(suffix[group[-1]])
            owner = torch.tensor([rows[r][0] for r in group], device=dev)
            ids = torch.full((len(group), n_suf), self.pad_id, dtype=torch.long)
            suf_mask = torch.zeros(len(group), n_suf, dtype=torch.long)
            for i, r in enumerate(group):
                ids[i, :len(suffix[r])] = torch.tensor(suffix[r])
                suf_mask[i, :len(suffix[r])] = 1
            start = torch.tensor([prefix[rows[r][0]] for r in group]).unsqueeze(1)
            group_cache = DynamicCache(
                ddp_cache_data=[(layer.keys[owner], layer.values[owner]) for layer in cache.layers],
                config=config)
            out = self._forward(input_ids=ids.to(dev), position_ids=(start + torch.arange(n_suf)).to(dev),
                                attention_mask=torch.cat([pre_mask[owner], suf_mask.to(dev)], dim=1),
                                past_key_values=group_cache, use_cache=True)
            # Suffix column c holds absolute position prefix + c; scored ones are ctx_len-1 .. len-2.
            src_row, src_col, dst = [], [], []
            for i, r in enumerate(group):
                b, _ = rows[r]
                skip = prefix[b] == batch[b].ctx_len  # its first scored position came from pass 1
                first = batch[b].ctx_len - 1 - prefix[b] + skip
                n = slots.lengths[r] - skip
                src_row += [i] * n
                src_col += range(first, first + n)
                dst += range(offsets[r] + skip, offsets[r] + skip + n)
            feats[torch.tensor(dst, device=dev)] = out[torch.tensor(src_row, device=dev),
                                                       torch.tensor(src_col, device=dev)]
            del group_cache, out
        return feats

    def _forward(self, *, last_only: bool = False, **kwargs):
        """Final hidden states (when only the scored positions get projected), else logits."""
        if self._project_selected:
            hidden = self.model.get_decoder()(**kwargs).last_hidden_state
            return hidden[:, -1:] if last_only else hidden
        return self.model(**kwargs, logits_to_keep=1 if last_only else 0).logits


class _Slots:
    """The scored positions of a batch, in one fixed order: option rows ``(item, option)``, and
    within each row its continuation tokens; ``targets`` holds the token each one must predict."""

    def __init__(self, batch: list[EncodedItem], device):
        import torch

        self.rows = [(b, j) for b, e in enumerate(batch) for j in range(len(e.wholes))]
        self.lengths = [len(batch[b].wholes[j]) - batch[b].ctx_len for b, j in self.rows]
        self.offsets = [0]
        for n in self.lengths[:-1]:
            self.offsets.append(self.offsets[-1] + n)
        self.targets = torch.tensor([t for b, j in self.rows for t in batch[b].wholes[j][batch[b].ctx_len:]],
                                    device=device)


def _packed_len(e: EncodedItem) -> int:
    """Row length of an item in the packed layout: the prompt once, then each option's inputs."""
    return e.prefix_len + sum(len(w) - 1 - e.prefix_len for w in e.wholes)


def _tree_mask(seg, config, dtype):
    """[rows, 1, L, L] attention mask from per-column segment ids (0 prompt, j+1 option j, -1 pad).

    A query sees earlier-or-same columns that are prompt or its own segment. Pad queries see only
    themselves: a row that sees nothing would turn into NaN in softmax. sdpa takes a boolean mask
    (True = attend); eager adds the mask to the scores, so it gets 0 / dtype-min.
    """
    import torch

    width = seg.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    q, k = seg.unsqueeze(2), seg.unsqueeze(1)
    allowed = causal & (k >= 0) & ((k == 0) | (k == q))
    allowed |= torch.eye(width, dtype=torch.bool) & (q < 0)
    allowed = allowed.unsqueeze(1)
    if getattr(config, "_attn_implementation", None) == "eager":
        zero = torch.zeros((), dtype=dtype)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    return allowed


def model_and_tokenizer(model, tokenizer=None, tag: str | None = None):
    """``(model, tokenizer, tag)`` from a spec string/path, a pair, or a model + tokenizer."""
    if isinstance(model, (str, os.PathLike)):
        from ilp_ray.models import load_model

        tag = tag or str(model)
        model, tokenizer = load_model(model)
    elif isinstance(model, tuple):
        model, tokenizer = model
    if tokenizer is None:
        raise ValueError("a loaded model needs its tokenizer: pass (model, tokenizer) or tokenizer=")
    return model, tokenizer, tag or getattr(model.config, "name_or_path", "") or type(model).__name__


def default_max_length(model, max_length: int | None = None) -> int:
    """``max_length`` if given, else the model's ``max_position_embeddings`` capped at MAX_LENGTH_CAP."""
    if max_length is None:
        limit = getattr(model.config, "max_position_embeddings", None) or MAX_LENGTH_CAP
        return min(int(limit), MAX_LENGTH_CAP)
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    return int(max_length)


def _partition(lengths: list[int], max_rows: int, overhead: int = PASS_OVERHEAD_TOKENS) -> list[tuple[int, int]]:
    """Cut ascending ``lengths`` into contiguous groups of at most ``max_rows`` rows.

    Minimises total padded tokens (rows × longest row, per group) plus ``overhead`` per group,
    by dynamic programming: padding many short rows up to one long row costs more than a pass.

    Returns:
        ``(start, end)`` slices covering ``range(len(lengths))`` in order.
    """
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_rows), j):
            cost = best[i] + (j - i) * lengths[j - 1] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append((cut[j], j))
        j = cut[j]
    return groups[::-1]


def _projection_is_lm_head(model) -> bool:
    """Whether ``logits == lm_head(decoder(x).last_hidden_state)`` for ``model``.

    True for Llama-style models (SmolLM2). Models that soft-cap or rescale logits (Gemma 2,
    Cohere, Granite) or expose no decoder must take the full forward pass instead.
    """
    config = model.config
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in _LOGIT_POSTPROCESSING):
        return False
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    return decoder is not None and head is not None and decoder is not model
