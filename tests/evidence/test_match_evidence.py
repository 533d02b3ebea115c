"""Spark matching against brute-force numpy, and the whole evidence stage with Ray and Spark in one
process, ending in the table the diagnosis consumes."""

import json

import numpy as np
import pandas as pd
import pytest

from ilp_ray.data.embed import HashingEmbedder
from ilp_ray.evidence.config import EvidenceConfig, IndexConfig, MatchConfig, RetrieveConfig, TrackingConfig


def test_spark_matching_equals_brute_force():
    from ilp_ray.evidence.match import match_candidates

    rng = np.random.default_rng(0)
    vocab = ["paris", "france", "capital", "tokyo", "japan", "bees", "honey", "mars", "red", "planet", "gold", "symbol", "rome", "italy", "city"]
    texts = [" ".join(rng.choice(vocab, size=6)) for _ in range(40)]
    items = pd.DataFrame({"id": [f"i{j}" for j in range(8)], "query": texts[:8]})
    rows = [(f"i{j}", f"p{p}", texts[8 + p]) for j in range(8) for p in rng.choice(32, size=10, replace=False)]
    cands = pd.DataFrame(rows, columns=["id", "passage_id", "text"]).assign(bm25=1.0)
    theta = 0.3
    got = match_candidates(items, cands, MatchConfig(theta=theta, embedder="hashing", master="local[2]",
                                                     partitions=3))
    emb = HashingEmbedder()
    q = dict(zip(items["id"], emb.encode(items["query"].tolist())))
    want = {(i, p): float(q[i] @ emb.encode([t])[0]) for i, p, t in rows}
    want = {k: v for k, v in want.items() if v >= theta}
    assert 0 < len(want) < len(rows)  # the threshold really filters
    assert set(zip(got["id"], got["passage_id"])) == set(want)
    for i, p, s in zip(got["id"], got["passage_id"], got["sim"]):
        assert s == pytest.approx(want[(i, p)], abs=1e-5)
    for _, g in got.groupby("id"):
        assert g["sim"].is_monotonic_decreasing


def test_spark_console_progress_only_when_asked():
    """PySpark turns Spark's console progress bars on by default; the project's session has none
    unless progress is asked for (checked on the SparkContext's own progress-bar slot)."""
    from ilp_ray import neighbours as spark_search
    from ilp_ray.neighbours import spark_session

    for master, spark in list(spark_search._SESSIONS.items()):  # a session an earlier test kept
        spark.stop()
        spark_search._SESSIONS.pop(master)
    for progress in (False, True):
        with spark_session(MatchConfig(master="local[1]"), progress=progress) as spark:
            bar = spark.sparkContext._jsc.sc().progressBar()
            assert bar.isDefined() is progress
            assert spark.sparkContext.getConf().get("spark.ui.showConsoleProgress") == str(progress).lower()
        assert "local[1]" not in spark_search._SESSIONS  # stopped: this block started it


@pytest.mark.slow
def test_evidence_end_to_end_with_ray_and_spark(ray_session, tmp_path, facts_jsonl):
    """Ray (ingest, retrieval actors) and Spark (matching) in one process, then the diagnosis hook."""
    from pyspark.sql import SparkSession

    spark_before = SparkSession.getActiveSession()
    from ilp_ray.diagnosis.base import check_evidence_table
    from ilp_ray.evidence.config import ChunkConfig, IngestConfig
    from ilp_ray.evidence.ingest import ingest
    from ilp_ray.evidence.run import run_evidence

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Paris is the capital of France.\n\nThe capital of Japan is Kyoto, wrote a confused blog.\n\n"
                      "Bees make honey in hives.\n\nJupiter is the largest planet.\n")
    index = IndexConfig(location=str(tmp_path / "idx"))
    ingest([str(corpus)], index, ChunkConfig(words=20, overlap=5), IngestConfig(), progress=False)
    cfg = EvidenceConfig(data=str(facts_jsonl), out=str(tmp_path / "out"), index=index,
                         retrieve=RetrieveConfig(k=3), match=MatchConfig(theta=0.05, embedder="hashing", master="local[2]"),
                         tracking=TrackingConfig(enabled=True, experiment="ev-test"))
    summary = run_evidence(cfg, progress=False)
    ev = pd.read_parquet(tmp_path / "out" / "evidence.parquet").set_index("id")
    assert ev.loc["f00", "corpus_verdict"] == "supports"  # capital of France: Paris
    assert ev.loc["f01", "corpus_verdict"] == "contradicts"  # capital of Japan: Kyoto, not Tokyo
    assert ev.loc["f09", "corpus_verdict"] == "supports"  # bees make honey
    assert ev.loc["f03", "corpus_verdict"] == "absent"  # Spain is nowhere in the corpus
    assert ev.loc["f00", "passages"][0]["text"] == "Paris is the capital of France."
    hook = pd.read_parquet(tmp_path / "out" / "corpus_evidence.parquet")
    assert list(hook.columns) == ["id", "corpus_verdict", "corpus_score"]
    assert len(check_evidence_table(hook, "corpus_evidence.parquet")) == 12
    o = summary["overall"]
    assert o["n"] == 12 and o["conflict_rate"] == pytest.approx(o["contradicts"] / 12)
    assert o["non_existence_rate"] == pytest.approx(o["absent"] / 12)
    assert set(summary["by_subset"]) == {"geo", "sci"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["overall"] == o
    assert (tmp_path / "out" / "mlflow.db").exists()
    # Spark is left as the job found it (stopped if it started it; a session held by someone
    # else, e.g. an earlier test, stays), and Ray is still up and usable in the same process.
    assert SparkSession.getActiveSession() is spark_before
    assert ray_session.is_initialized() and ray_session.data.range(3).count() == 3


@pytest.fixture
def ray_data_log():
    """Messages of Ray Data's loggers (which do not propagate to the root, so caplog misses them)."""
    import logging

    import ray.data  # noqa: F401  (configures its loggers on import)

    seen: list[str] = []
    listener = logging.Handler(logging.INFO)
    listener.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(listener)
    yield seen
    logger.removeHandler(listener)
    logger.setLevel(level)


def test_progress_flag_of_the_evidence_stage(ray_session, tmp_path, facts_jsonl, capfd, ray_data_log):
    """progress=True: a line per stage on stderr and Ray Data's progress; False: neither. Ray
    Data's setting is the caller's again afterwards."""
    import ray.data

    from ilp_ray.evidence.config import ChunkConfig, IngestConfig
    from ilp_ray.evidence.ingest import ingest
    from ilp_ray.evidence.run import run_evidence

    (tmp_path / "corpus.txt").write_text("Paris is the capital of France.\n\nBees make honey.\n")
    index = IndexConfig(location=str(tmp_path / "idx"))
    ingest([str(tmp_path / "corpus.txt")], index, ChunkConfig(words=20, overlap=5), IngestConfig(), progress=False)
    ctx = ray.data.DataContext.get_current()
    before = ctx.enable_progress_bars
    for progress in (False, True):
        cfg = EvidenceConfig(data=str(facts_jsonl), out=str(tmp_path / f"out-{progress}"), index=index,
                             retrieve=RetrieveConfig(k=3), match=MatchConfig(enabled=False),
                             tracking=TrackingConfig(enabled=False))
        capfd.readouterr()
        ray_data_log.clear()
        run_evidence(cfg, progress=progress)
        stages = [line.split(":")[0] for line in capfd.readouterr().err.splitlines() if line.startswith("[evidence]")]
        # Ray Data logs its progress (rather than drawing bars) where stdout is no terminal, as here
        said = {key: any(key in m for m in ray_data_log) for key in ("Total Progress", "Progress bars disabled")}
        if progress:
            assert stages == ["[evidence] retrieve", "[evidence] match", "[evidence] judge"]
            assert said["Total Progress"]
        else:
            assert stages == [] and not any(said.values())
        assert ctx.enable_progress_bars is before
