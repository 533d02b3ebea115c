"""Semantic matching on Spark: keep the BM25 hits whose embedding is close to the item's.

Items and the distinct candidate passages are embedded in ``mapInPandas`` tasks (each Python
worker loads the embedder once, one torch thread), the vectors are joined back onto the
(item, passage) pairs, and the cosine is a dot product of unit vectors in Spark SQL. Pairs with
cosine ≥ ``theta`` are kept. The session is the project's one (``get_spark``: UI and console
progress bars off, Arrow on, ``SPARK_LOCAL_IP``, ``PYSPARK_PYTHON``), and coexists with Ray in one
process.
"""

from __future__ import annotations

from ilp_ray.neighbours import spark_session


def make_embedder(kind: str):
    """The embedder of ``MatchConfig.embedder``: MiniLM (one torch thread) or the hashing twin."""
    if kind == "hashing":
        from ilp_ray.data.embed import HashingEmbedder

        return HashingEmbedder()
    from ilp_ray.data.embed import get_embedder

    return get_embedder(num_threads=1)


def _embed_task(kind: str, key: str, text: str):
    def run(frames):
        import pandas as pd

        emb = make_embedder(kind)
        for pdf in frames:
            vecs = emb.encode(pdf[text].astype(str).tolist())
            yield pd.DataFrame({"key": pdf[key].astype(str), "vec": list(vecs)})
    return run


def match_candidates(items, candidates, match_cfg, progress: bool = False):
    """Cosine of every (item, candidate passage) pair on Spark; keep those ≥ ``theta``.

    Args:
        items: pandas DataFrame with ``id`` and ``query`` (the text embedded for the item).
        candidates: pandas DataFrame with ``id``, ``passage_id``, ``text`` (and any other columns,
            kept), as ``search_items`` returns.
        match_cfg: ``MatchConfig`` (theta, embedder, master, driver memory, partitions).
        progress: Spark's console progress bars (off by default).

    Returns:
        ``candidates`` with a float ``sim`` column, only the rows with sim ≥ theta, ordered by
        item and descending sim.
    """
    import pandas as pd

    if candidates.empty:
        return candidates.assign(sim=pd.Series(dtype=float))
    from pyspark.sql import functions as F

    with spark_session(match_cfg, progress=progress) as spark:
        return _match(spark, items, candidates, match_cfg, F)


def _match(spark, items, candidates, match_cfg, F):
    parts = match_cfg.partitions or spark.sparkContext.defaultParallelism
    schema = "key string, vec array<float>"
    q = (spark.createDataFrame(items[["id", "query"]].astype(str)).repartition(parts)
         .mapInPandas(_embed_task(match_cfg.embedder, "id", "query"), schema)
         .withColumnRenamed("key", "id").withColumnRenamed("vec", "qv"))
    p = (spark.createDataFrame(candidates[["passage_id", "text"]].drop_duplicates("passage_id").astype(str))
         .repartition(parts).mapInPandas(_embed_task(match_cfg.embedder, "passage_id", "text"), schema)
         .withColumnRenamed("key", "passage_id").withColumnRenamed("vec", "pv"))
    pairs = spark.createDataFrame(candidates[["id", "passage_id"]].astype(str))
    dot = F.aggregate(F.zip_with("qv", "pv", lambda x, y: x * y), F.lit(0.0).cast("double"),
                      lambda acc, x: acc + x)
    sims = (pairs.join(q, "id").join(p, "passage_id").select("id", "passage_id", dot.alias("sim"))
            .where(F.col("sim") >= float(match_cfg.theta)).toPandas())
    out = candidates.assign(id=candidates["id"].astype(str)).merge(sims, on=["id", "passage_id"], how="inner")
    return out.sort_values(["id", "sim"], ascending=[True, False], kind="stable").reset_index(drop=True)
