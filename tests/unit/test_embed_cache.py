"""The embedding cache (``ilp_ray.data.embed_cache``): bit-equal to the embedder, each text
embedded once across calls, resumable after a stop, robust to a damaged shard."""

import threading

import numpy as np
import pytest

from ilp_ray.data.embed import HashingEmbedder
from ilp_ray.data.embed_cache import EmbeddingCache, Prefetch, embedder_key

TEXTS = [f"What is the capital of country number {i}?" for i in range(23)]


class Counting(HashingEmbedder):
    """A hashing embedder that records every text it embeds (and can act after a call)."""

    def __init__(self, after=None, fail=False):
        super().__init__()
        self.seen: list[str] = []
        self.after, self.fail = after, fail

    def encode(self, texts):
        if self.fail:
            raise RuntimeError("boom")
        self.seen.extend(texts)
        out = super().encode(texts)
        if self.after:
            self.after()
        return out


def shards(cache):
    return sorted(cache.dir.glob("part-*.npz"))


def test_vectors_equal_the_embedders_bit_for_bit_and_each_text_is_embedded_once(tmp_path):
    emb = Counting()
    cache = EmbeddingCache(tmp_path, emb, chunk=5)
    texts = TEXTS + TEXTS[:4] + ["", TEXTS[7]]  # repeats and an empty text
    got = cache.encode(texts)
    np.testing.assert_array_equal(got, HashingEmbedder().encode(texts))
    assert got.dtype == np.float32 and got.shape == (len(texts), 256)
    assert sorted(emb.seen) == sorted(set(texts))  # each distinct text once
    assert len(shards(cache)) == 5  # 24 distinct texts, 5 a chunk
    # A second call, in a new cache object (a new process), embeds nothing and reads the same rows.
    emb2 = Counting()
    again = EmbeddingCache(tmp_path, emb2, chunk=5).encode(list(reversed(texts)))
    assert emb2.seen == []
    np.testing.assert_array_equal(again, got[::-1])
    # Only the new texts of a larger call are embedded.
    more = EmbeddingCache(tmp_path, emb2).encode(texts + ["a new prompt"])
    assert emb2.seen == ["a new prompt"]
    np.testing.assert_array_equal(more[:-1], got)
    assert cache.missing(texts + ["x", "y"]) == 2


def test_a_stop_keeps_the_finished_chunks_and_the_next_call_embeds_the_rest(tmp_path):
    stop = threading.Event()
    emb = Counting(after=stop.set)  # stop requested during the first chunk
    cache = EmbeddingCache(tmp_path, emb, chunk=8)
    assert cache.encode(TEXTS, stop=stop) is None
    assert len(emb.seen) == 8 and len(shards(cache)) == 1
    rest = Counting()
    got = EmbeddingCache(tmp_path, rest, chunk=8).encode(TEXTS)
    assert sorted(rest.seen) == sorted(set(TEXTS) - set(emb.seen))  # nothing embedded twice
    np.testing.assert_array_equal(got, HashingEmbedder().encode(TEXTS))


def test_a_damaged_or_partial_shard_is_dropped_and_recomputed(tmp_path):
    cache = EmbeddingCache(tmp_path, Counting(), chunk=100)
    want = cache.encode(TEXTS)
    (f,) = shards(cache)
    f.write_bytes(f.read_bytes()[:100])  # truncated, as a disk fault could leave it
    (cache.dir / ".tmp-part-1.npz").write_bytes(b"half")  # a killed write's temporary: never read
    emb = Counting()
    got = EmbeddingCache(tmp_path, emb, chunk=100).encode(TEXTS)
    np.testing.assert_array_equal(got, want)
    assert sorted(emb.seen) == sorted(TEXTS) and not f.exists()


def test_embedders_with_other_vectors_do_not_share_a_cache(tmp_path):
    assert embedder_key(HashingEmbedder(256)) == embedder_key(HashingEmbedder(256))
    assert embedder_key(HashingEmbedder(128)) != embedder_key(HashingEmbedder(256))
    assert embedder_key(HashingEmbedder(256, bigrams=False)) != embedder_key(HashingEmbedder(256))
    EmbeddingCache(tmp_path, HashingEmbedder(256)).encode(TEXTS)
    small = EmbeddingCache(tmp_path, HashingEmbedder(128)).encode(TEXTS)
    assert small.shape == (len(TEXTS), 128)


def test_minilm_cached_equals_minilm_fresh(tmp_path):
    from ilp_ray.data.embed import get_embedder

    emb = get_embedder(batch_size=8)
    got = EmbeddingCache(tmp_path, emb).encode(TEXTS[:6])
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, emb).encode(TEXTS[:6]), got)
    np.testing.assert_allclose(got, emb.encode(TEXTS[:6]), atol=1e-6)


def test_prefetch_fills_the_cache_or_reports_its_failure(tmp_path):
    pre = Prefetch(EmbeddingCache(tmp_path / "a", Counting(), chunk=4), TEXTS)
    pre.thread.join(timeout=30)
    got = pre.stop()
    assert {k: got[k] for k in ("done", "error")} == {"done": True, "error": None} and got["wall_s"] >= 0
    emb = Counting()
    EmbeddingCache(tmp_path / "a", emb).encode(TEXTS)
    assert emb.seen == []
    bad = Prefetch(EmbeddingCache(tmp_path / "b", Counting(fail=True)), TEXTS)
    bad.thread.join(timeout=30)
    got = bad.stop()
    assert {k: got[k] for k in ("done", "error")} == {"done": False, "error": "RuntimeError: boom"}
    assert not list((tmp_path / "b").rglob("*.npz"))
    # Stopped before it began: nothing embedded, nothing written.
    ev, emb = threading.Event(), Counting()
    ev.set()
    assert EmbeddingCache(tmp_path / "c", emb).encode(TEXTS, stop=ev) is None
    assert emb.seen == [] and not list((tmp_path / "c").rglob("*.npz"))


def test_bad_chunk_is_refused(tmp_path):
    with pytest.raises(ValueError, match="chunk"):
        EmbeddingCache(tmp_path, HashingEmbedder(), chunk=0)
