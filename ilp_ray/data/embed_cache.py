"""Embeddings kept on disk by text content, so that no text is embedded twice for one run.

The diagnosis embeds every prompt with MiniLM (at 300k samples ~520 s of 2 cores, the largest
share of its time). ``EmbeddingCache`` keeps those vectors under the run directory, one shard per
chunk embedded, keyed by a hash of each text and by the embedder's identity. So:

- a diagnosis run again on the same audit (other settings, ``ilp diagnose``) embeds nothing;
- a diagnosis killed while embedding resumes from the shards it finished;
- the audit embeds the prompts on the core its scoring actor leaves free (``Prefetch``), and the
  diagnosis embeds only what that did not reach.

The vectors are the embedder's own float32 rows, stored and read back bit for bit: a cached
embedding equals a fresh one of the same embedder (the tests check it).

Layout: ``<folder>/<key>/part-<time>-<pid>-<rand>.npz`` with ``hashes`` (16-byte BLAKE2b of the
UTF-8 text) and ``vectors`` (float32, one row per hash). A shard is written to a hidden name and
renamed, so a kill leaves whole shards only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def embedder_key(embedder) -> str:
    """The identity under which an embedder's vectors are cached: its class, model, backend and
    width. Two embedders with one key give the same vectors for a text (threads and batch size do
    not enter: they do not change them)."""
    from ilp_ray.data.embed import Embedder, HashingEmbedder

    if isinstance(embedder, Embedder):
        parts = ["minilm", os.path.basename(os.path.normpath(embedder._path())), embedder.active_backend]
    elif isinstance(embedder, HashingEmbedder):
        parts = ["hashing", str(embedder.dim), str(embedder.bigrams)]
    else:
        parts = [type(embedder).__module__ + "." + type(embedder).__qualname__]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """16-byte BLAKE2b of each text (``S16`` array)."""
    return np.array([hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts], dtype="S16")


class EmbeddingCache:
    """The cached vectors of one embedder under ``folder``.

    Args:
        folder: the cache folder (one subfolder per embedder key).
        embedder: the ``TextEmbedder`` whose vectors are stored and computed.
        chunk: texts embedded per shard; a stop request is honoured between chunks.
    """

    def __init__(self, folder: str | Path, embedder, chunk: int = 8192):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.embedder, self.chunk = embedder, chunk
        self.dir = Path(folder) / embedder_key(embedder)

    def _shards(self):
        """Each whole shard's (hashes, vectors), one at a time; a shard that cannot be read is
        removed (its texts are embedded again, nothing else is lost)."""
        for f in sorted(self.dir.glob("part-*.npz")) if self.dir.is_dir() else []:
            try:
                with np.load(f) as z:
                    h, v = z["hashes"], z["vectors"]
                if h.shape[0] != v.shape[0] or v.ndim != 2:
                    raise ValueError(f"{h.shape[0]} hashes, vectors {v.shape}")
            except Exception as e:
                log.warning("embedding cache: %s unreadable (%s); removed", f, e)
                f.unlink(missing_ok=True)
                continue
            yield h, v

    def _write(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        from ilp_ray.storage import _atomic_target

        name = f"part-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.npz"
        with _atomic_target(self.dir / name) as tmp, open(tmp, "wb") as f:  # a file: savez would add ".npz"
            np.savez(f, hashes=hashes, vectors=vectors)

    def missing(self, texts: Sequence[str]) -> int:
        """How many distinct texts of ``texts`` have no cached vector."""
        need = set(text_hashes(texts).tolist())
        for h, _ in self._shards():
            need.difference_update(h.tolist())
        return len(need)

    def encode(self, texts: Sequence[str], stop: threading.Event | None = None) -> np.ndarray | None:
        """The vectors of ``texts`` (float32 ``(len(texts), dim)``), embedding and storing only the
        distinct texts the cache lacks, ``chunk`` at a time. With ``stop`` set between chunks it
        returns None, keeping the chunks finished. Shards are read one at a time into the result."""
        if len(texts) == 0:
            return np.ascontiguousarray(self.embedder.encode([]), dtype=np.float32)
        uniq, first, inverse = np.unique(text_hashes(texts), return_index=True, return_inverse=True)
        need = {b: j for j, b in enumerate(uniq.tolist())}  # hash -> row of the distinct texts
        out: np.ndarray | None = None

        def place(h: np.ndarray, v: np.ndarray) -> None:
            nonlocal out
            if out is None:
                out = np.empty((len(uniq), v.shape[1]), np.float32)
            for i, b in enumerate(h.tolist()):
                j = need.pop(b, None)
                if j is not None:
                    out[j] = v[i]

        for h, v in self._shards():
            place(h, v)
        todo = sorted(need.values())
        n_cached = len(uniq) - len(todo)
        for lo in range(0, len(todo), self.chunk):
            if stop is not None and stop.is_set():
                return None
            rows = todo[lo:lo + self.chunk]
            v = np.ascontiguousarray(self.embedder.encode([texts[int(first[j])] for j in rows]), dtype=np.float32)
            self._write(uniq[rows], v)
            place(uniq[rows], v)
        log.info("embedding cache: %d distinct texts, %d read back, %d embedded", len(uniq), n_cached, len(todo))
        return np.ascontiguousarray(out[inverse.reshape(-1)])


class Prefetch:
    """``EmbeddingCache.encode`` of ``texts`` in a background thread, until done or ``stop()``:
    work done on a core that would otherwise wait (the audit runs it while its scoring actor
    holds the other). A failure is logged and leaves the cache as it was; the consumer embeds
    what is missing."""

    def __init__(self, cache: EmbeddingCache, texts: Sequence[str]):
        self.cache, self.texts = cache, list(texts)
        self._stop = threading.Event()
        self.start = time.time()
        self.done = False
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="embed-prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.done = self.cache.encode(self.texts, stop=self._stop) is not None
        except Exception as e:  # only an optimisation: the consumer computes what is missing
            self.error = f"{type(e).__name__}: {e}"
            log.warning("embedding prefetch failed: %s", self.error)

    def stop(self) -> dict:
        """Ask the thread to stop after its current chunk, wait for it, and say how far it got:
        ``start`` (epoch s) and ``wall_s`` as the audit's stage timings, ``done``, ``error``."""
        self._stop.set()
        self.thread.join()
        return {"start": round(self.start, 3), "wall_s": round(time.time() - self.start, 3),
                "done": self.done, "error": self.error}
