"""The prompt-pair search of cause III on Spark, for more samples than one process handles.

The normalised embeddings are broadcast once; the query range is cut into blocks, the blocks into
``partitions``; each task runs the same ``topk_neighbours`` as the local path on its blocks and
returns only the pairs that pass theta (a few per sample, not the n × k neighbour table). Because
``topk_neighbours`` is independent of the block size (float64 rescoring), the result equals the
local path's exactly; a test checks it.

On a cluster, the executors need ``ilp_ray`` importable (install the package in their image, or
ship it with ``--py-files``) and memory for one copy of the embeddings (n × d × 4 bytes: 150 MB
for 100k MiniLM vectors).
"""

from __future__ import annotations

import numpy as np

from ilp_ray.neighbours import get_spark


def _block_task(emb_bc, m: int, theta: float):
    def run(blocks):
        import numpy as _np

        from ilp_ray.diagnosis.pairs import pairs_from_topk
        from ilp_ray.neighbours import topk_neighbours

        emb = emb_bc.value
        for lo, hi in blocks:
            idx, sims = topk_neighbours(emb[lo:hi], emb, m)
            i, j, s, sat = pairs_from_topk(lo, idx, sims, theta)
            yield lo, i, j, s, _np.asarray(sat)
    return run


def spark_similar_pairs(emb: np.ndarray, theta: float, k: int, block_size: int | None = None,
                        master: str = "local[*]", partitions: int | None = None, driver_memory: str = "2g"):
    """``pairs.similar_pairs`` on Spark: same arguments and the same result.

    Args:
        emb, theta, k, block_size: as ``similar_pairs`` (block_size: queries per task block;
            None: 1024, or fewer when n is small so every partition gets work).
        master: Spark master URL.
        partitions: tasks; None: twice Spark's default parallelism.
        driver_memory: ``spark.driver.memory`` for a session this call starts.
    """
    from ilp_ray.diagnosis.pairs import dedupe_pairs

    n = len(emb)
    if n < 2:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(n, bool))
    spark = get_spark(master, driver_memory)
    sc = spark.sparkContext
    parts = partitions or 2 * sc.defaultParallelism
    bs = block_size or max(1, min(1024, -(-n // parts)))
    blocks = [(lo, min(n, lo + bs)) for lo in range(0, n, bs)]
    bc = sc.broadcast(np.ascontiguousarray(emb, dtype=np.float32))
    try:
        out = sc.parallelize(blocks, min(parts, len(blocks))).mapPartitions(
            _block_task(bc, min(k + 1, n), theta)).collect()
    finally:
        bc.unpersist()
    sat = np.zeros(n, bool)
    for lo, _, _, _, s in out:
        sat[lo:lo + len(s)] = s

    def cat(pos, dt):
        return np.concatenate([o[pos] for o in out]).astype(dt) if out else np.zeros(0, dt)

    i, j, s = dedupe_pairs(cat(1, np.int64), cat(2, np.int64), cat(3, np.float32))
    return i, j, s, sat
