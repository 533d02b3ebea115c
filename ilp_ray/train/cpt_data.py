"""Continued pretraining data: raw documents, a seeded D_k / D_general mixture, packed blocks.

Document files:

- ``.jsonl`` / ``.ndjson`` (optionally ``.gz``): one JSON object per line with a string ``text``;
  blank lines are skipped (and counted for line numbers).
- ``.parquet`` / ``.pq``: a string column ``text``, one document per row.
- ``.txt``: documents separated by one or more blank lines (a line holding only whitespace counts
  as blank); newlines inside a document are kept. A file with no blank line is one document.

Empty documents are errors (they name the file and line/row): they would only waste draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ilp_ray.errors import DataError


def read_documents(path: str | Path) -> list[str]:
    """Read a document file (see the module docstring for the formats).

    One reader serves CPT and the corpus index (``ilp_ray.data.corpus_files``), so a corpus
    file means the same documents to both.

    Raises:
        DataError: unreadable file, unknown extension, a bad row (names the line or row), or no
            documents at all.
    """
    from ilp_ray.data.corpus_files import file_kind
    from ilp_ray.data.corpus_files import read_documents as iter_documents

    name = str(path)
    if not Path(name).is_file():
        raise DataError("document file does not exist", file=name)
    if file_kind(name) is None:
        raise DataError("unsupported document file; use .jsonl, .parquet or .txt", file=name)
    docs = [text for _, text in iter_documents(name)]  # streamed, under the loader's limits
    if not docs:
        raise DataError("no documents", file=name)
    return docs


def mixture_draws(n_knowledge: int, n_general: int, ratio: float, n_draws: int,
                  seed: int, epoch: int) -> list[tuple[int, int]]:
    """Draw ``n_draws`` documents: ``(corpus, index)`` with corpus 0 = D_k, 1 = D_general.

    Each draw picks D_k with probability ``ratio`` (an independent Bernoulli trial, so the realised
    share of D_k is Binomial(n_draws, ratio) / n_draws), then the next document of that corpus in a
    seeded permutation, re-permuted whenever it is used up, so every document of a corpus is seen
    once before any is repeated. Seeded by ``(seed, epoch)``.
    """
    if n_general == 0 and ratio < 1:
        raise ValueError("ratio < 1 needs a non-empty general corpus")
    rng = np.random.default_rng([seed, epoch])
    pick = rng.random(n_draws) >= ratio  # True: general
    sizes = (n_knowledge, n_general)
    perms: list[list[int]] = [[], []]
    out = []
    for c in pick.astype(int).tolist():
        if not perms[c]:
            perms[c] = rng.permutation(sizes[c]).tolist()[::-1]
        out.append((c, perms[c].pop()))
    return out


def pack(token_docs: Sequence[Sequence[int]], block_size: int, eos_id: int | None) -> list[tuple[int, ...]]:
    """Concatenate documents (each followed by EOS) and cut the stream into ``block_size`` blocks.

    The tail shorter than a block is dropped. Attention runs across document boundaries inside a
    block (standard packing); EOS tells the model where a document ended.
    """
    stream: list[int] = []
    for doc in token_docs:
        stream.extend(doc)
        if eos_id is not None:
            stream.append(eos_id)
    return [tuple(stream[i:i + block_size]) for i in range(0, len(stream) - block_size + 1, block_size)]


class CptData:
    """Tokenised corpora and, per epoch, the packed blocks of that epoch's mixture draws.

    Args:
        knowledge, general: the documents of D_k and D_general (general may be empty).
        tokenizer: the model's tokenizer (documents are encoded without special tokens; a BOS, if
            the tokenizer has one, starts every document).
        ratio, documents, seed: see ``MixtureConfig``.
        block_size: tokens per block.
    """

    def __init__(self, knowledge: Sequence[str], general: Sequence[str], tokenizer, ratio: float,
                 documents: int | None, seed: int, block_size: int):
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.corpora = tuple([bos + tokenizer.encode(d, add_special_tokens=False) for d in docs]
                             for docs in (knowledge, general))
        self.ratio, self.seed, self.block_size = ratio, seed, block_size
        self.documents = documents or int(np.ceil(len(knowledge) / ratio))
        self.eos_id = tokenizer.eos_token_id

    def blocks(self, epoch: int) -> tuple[list[tuple[int, ...]], list[tuple[int, int]]]:
        """The epoch's packed blocks, and the draws they came from."""
        draws = mixture_draws(len(self.corpora[0]), len(self.corpora[1]), self.ratio, self.documents,
                              self.seed, epoch)
        return pack([self.corpora[c][i] for c, i in draws], self.block_size, self.eos_id), draws
