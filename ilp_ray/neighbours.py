"""Nearest neighbours by cosine, and the project's Spark session: the one search every stage uses.

MC conversion (distractors), the conflict search of cause III (prompt pairs, locally or on Spark)
and the corpus evidence's semantic matching (on Spark) all rank unit-normalised embeddings by dot
product. ``topk_neighbours`` is an exact top-k over blocks of queries (no n x n matrix), rescored
in float64 so its result does not depend on the block size; ``self_topk_neighbours`` is the same
for a set against itself, each pair scored once. ``get_spark`` holds one SparkSession per master
for the process; ``spark_session`` is the context manager a job uses so that it leaves no JVM
behind but never stops a session someone else holds.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np

# Scores per query block: 32M float32 scores is 128 MiB (torch.topk keeps only m per row).
_SCORE_BUDGET = 1 << 25
_GATHER_BUDGET = 1 << 22  # key floats gathered at once for float64 rescoring
# Candidates kept beyond m before the float64 rescoring, so float32 noise and exact ties at the m-th
# place cannot push out the key the (score desc, index asc) order wants.
_SLACK = 8


def topk_neighbours(queries: np.ndarray, keys: np.ndarray, m: int,
                    block_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blocked exact top-m inner-product search.

    Candidates are preselected with float32 block matmuls and ``torch.topk`` (both on torch's
    intra-op threads; numpy's argpartition was single-threaded and took ~2/3 of the time), then
    their scores are recomputed one query at a time in float64 and rounded to float32. BLAS picks
    different kernels (so different summation orders) for different block shapes; the float64
    rescoring makes the ranking, and the tie-break by index between equal scores (e.g. identical
    embeddings of different texts), independent of ``block_size``. The preselection keeps ``m + 8`` candidates, so only when more
    than 8 keys tie (within float32 noise) at the ``m``-th place can the pick depend on it.

    Args:
        queries: float32 ``(q, d)``.
        keys: float32 ``(n, d)``.
        m: neighbours per query (clipped to ``n``).
        block_size: queries scored at once; by default as many as keep the score block near
            ``_SCORE_BUDGET`` floats (at most 1024), so memory is bounded whatever ``n`` is.

    Returns:
        ``(idx, scores)``, both ``(q, m)``: key indices by descending score, ties broken by
        ascending index, and their float32 scores.
    """
    q, n = len(queries), len(keys)
    m = min(m, n)
    if block_size is None:
        block_size = max(1, min(1024, _SCORE_BUDGET // max(n, 1)))
    idx = np.empty((q, m), dtype=np.int64)
    scores = np.empty((q, m), dtype=np.float32)
    if m == 0:
        return idx, scores
    pool = min(m + _SLACK, n)
    if pool < n:
        import torch

        keys_t = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.float32))
    for lo in range(0, q, block_size):
        qb = queries[lo:lo + block_size]
        if pool < n:
            with torch.no_grad():
                s = torch.from_numpy(np.ascontiguousarray(qb, dtype=np.float32)) @ keys_t.T
                part = torch.topk(s, pool, dim=1, sorted=False).indices.numpy()
            del s
        else:
            part = np.broadcast_to(np.arange(n), (len(qb), n))
        ps = _exact_scores(qb, keys, part)
        order = np.lexsort((part, -ps), axis=1)[:, :m]  # last key is primary: score desc, then index asc
        idx[lo:lo + block_size] = np.take_along_axis(part, order, axis=1)
        scores[lo:lo + block_size] = np.take_along_axis(ps, order, axis=1)
    return idx, scores


def self_topk_neighbours(emb: np.ndarray, m: int, block_size: int | None = None,
                         slack: int = _SLACK) -> tuple[np.ndarray, np.ndarray]:
    """``topk_neighbours(emb, emb, m)`` (self included), scoring each pair once.

    The score matrix is walked in square tiles on and above the diagonal. A tile's scores serve
    twice: as candidates of its rows and, read down its columns, of its columns.
    A running table keeps each row's best ``m + slack`` candidates; at the end they are rescored
    in float64 and ranked as ``topk_neighbours`` ranks them (score desc, then index asc), so the
    result is the same, except when more than ``slack`` keys tie within float32 noise at the
    ``m``-th place. Memory: the table plus one tile, whatever n is.

    Args:
        emb: float32 ``(n, d)``.
        m: neighbours per row, self included (clipped to ``n``).
        block_size: tile side; None: 2048 (a 16 MiB tile).
        slack: extra candidates kept per row, against float32 ranking noise.

    Returns:
        ``(idx, scores)``, both ``(n, m)``, as ``topk_neighbours`` returns them.
    """
    import torch

    n = len(emb)
    m = min(m, n)
    pool = min(m + slack, n)
    if m == 0 or pool >= n:  # every key is a candidate anyway
        return topk_neighbours(emb, emb, m, block_size=block_size)
    b = block_size or 2048
    e = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    best_v = torch.full((n, pool), -torch.inf)
    best_i = torch.full((n, pool), -1, dtype=torch.int64)

    def fold(rows: torch.Tensor, cand_v: torch.Tensor, cand_i: torch.Tensor) -> None:
        """Fold dense candidates ``(len(rows), c)`` into the table rows ``rows``."""
        v = torch.cat([best_v[rows], cand_v], dim=1)
        i = torch.cat([best_i[rows], cand_i], dim=1)
        keep = torch.topk(v, pool, dim=1, sorted=False).indices
        best_v[rows] = torch.gather(v, 1, keep)
        best_i[rows] = torch.gather(i, 1, keep)

    def merge(tile: torch.Tensor, row0: int, col0: int, down: bool) -> None:
        """Fold a tile of scores into the table: each tile row ``row0 + r`` takes key ``col0 + c``
        (``down``: each tile column ``col0 + c`` takes key ``row0 + r``) where it makes the pool.

        Once the pools are full, only scores at or above a pool's worst can enter: those few are
        gathered sparsely (a compare and a nonzero on the tile as laid out, never transposed)
        instead of a top-k over the whole tile."""
        start, other = (col0, row0) if down else (row0, col0)
        n_rows = tile.shape[1] if down else tile.shape[0]
        worst = best_v[start:start + n_rows].min(dim=1).values
        hit = None
        if bool(torch.isfinite(worst).all()):
            hit = (tile >= (worst[None, :] if down else worst[:, None])).nonzero()
            if len(hit) > tile.numel() // 8:  # dense after all (many near-duplicates)
                hit = None
        if hit is None:
            scores = tile.T.contiguous() if down else tile
            top = torch.topk(scores, min(pool, scores.shape[1]), dim=1, sorted=False)
            fold(torch.arange(start, start + n_rows), top.values, top.indices + other)
            return
        if not len(hit):
            return
        vals = tile[hit[:, 0], hit[:, 1]]
        hr, hc = (hit[:, 1], hit[:, 0]) if down else (hit[:, 0], hit[:, 1])
        if down:  # group by table row
            order = torch.argsort(hr, stable=True)
            hr, hc, vals = hr[order], hc[order], vals[order]
        urows, counts = torch.unique_consecutive(hr, return_counts=True)
        slot = torch.arange(len(hr)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        which = torch.repeat_interleave(torch.arange(len(urows)), counts)
        cand_v = torch.full((len(urows), int(counts.max())), -torch.inf)
        cand_i = torch.full(cand_v.shape, -1, dtype=torch.int64)
        cand_v[which, slot] = vals
        cand_i[which, slot] = hc + other
        fold(urows + start, cand_v, cand_i)

    with torch.no_grad():
        for lo in range(0, n, b):
            rows = e[lo:min(lo + b, n)]
            for clo in range(lo, n, b):
                tile = rows @ e[clo:min(clo + b, n)].T
                merge(tile, lo, clo, down=False)
                if clo != lo:  # off the diagonal: the same scores as candidates of the columns
                    merge(tile, lo, clo, down=True)
    part = best_i.numpy()
    ps = _exact_scores(emb, emb, part)
    order = np.lexsort((part, -ps), axis=1)[:, :m]
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(ps, order, axis=1)


def _exact_scores(qb: np.ndarray, keys: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``qb[i] . keys[part[i, j]]`` summed in float64, as float32; gathers a bounded number of keys."""
    out = np.empty(part.shape, dtype=np.float32)
    step = max(1, _GATHER_BUDGET // max(1, keys.shape[1]))
    for i in range(len(qb)):
        q64 = qb[i].astype(np.float64)
        for c in range(0, part.shape[1], step):
            out[i, c:c + step] = keys[part[i, c:c + step]].astype(np.float64) @ q64
    return out


_SESSIONS: dict = {}


def get_spark(master: str = "local[*]", driver_memory: str = "2g", progress: bool = False):
    """A SparkSession as STACK.md describes it (quiet UI, Arrow on); one per process and master.

    ``progress``: Spark's console progress bars (``[Stage 3:> (0 + 2) / 2]`` on stderr). PySpark
    turns them on by default; they are off unless asked for. Like the driver memory, this is
    fixed when the session starts: a session that already exists keeps its setting.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if master not in _SESSIONS:
        from pyspark.sql import SparkSession

        spark = (SparkSession.builder.master(master).appName("ilp-conflicts")
                 .config("spark.driver.memory", driver_memory)
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "true" if progress else "false")
                 .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                 .getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        _SESSIONS[master] = spark
    return _SESSIONS[master]


@contextmanager
def spark_session(match_cfg, progress: bool = False):
    """The project's Spark session for ``match_cfg.master``; stopped on exit only if this block
    started it, so a job leaves no JVM behind but never stops a session someone else holds.
    Spark's console progress bars are on only with ``progress`` (and only for a session this
    block starts)."""
    started = match_cfg.master not in _SESSIONS
    spark = get_spark(match_cfg.master, match_cfg.driver_memory, progress=progress)
    try:
        yield spark
    finally:
        if started:
            spark.stop()
            _SESSIONS.pop(match_cfg.master, None)
