"""Config sections of corpus evidence (pydantic; loaded with ``ilp_ray.config.load_config``).

Secrets never live in a config: ``ElasticsearchConfig`` names the environment variables (or a
file) to read them from at connect time, so a logged or printed config cannot leak them.

``EvidenceConfig`` is ``ilp corpus evidence``; ``AuditEvidenceConfig`` is the ``evidence`` section
of the audit config. Both share ``EvidenceStageConfig`` (retrieval, matching, judge), and the
audit's section turns into an ``EvidenceConfig`` for its run (``run_config``), so the stage has
one implementation, ``ilp_ray.evidence.run.run_evidence``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ilp_ray.config_base import DATA_FORMAT_HELP, DataFormat, TrackingConfig, _Section


class TantivyConfig(_Section):
    heap_mb: int = Field(128, ge=3, description=(
        "Writer heap in MB, split between the threads (tantivy needs >= 3 MB per thread); "
        "larger means fewer internal flushes while bulk loading."))
    threads: int = Field(1, ge=1, description=(
        "Indexing threads. 1 by default: ingest already runs Ray Data readers beside the writer."))


class ElasticsearchConfig(_Section):
    url: str = Field("http://127.0.0.1:9200", description="Cluster URL (or set ILP_ES_URL and pass it here).")
    request_timeout_s: float = Field(5.0, gt=0, description=(
        "Per-request timeout; also how fast an unreachable cluster is reported."))
    max_retries: int = Field(2, ge=0, description="Client retries per request (the client's max_retries).")
    retry_on_timeout: bool = Field(True, description="Retry a request that timed out (the client's retry_on_timeout).")
    bulk_chunk: int = Field(500, ge=1, description="Passages per bulk request.")
    bulk_retries: int = Field(5, ge=0, description="Our retries of a bulk chunk on 429/5xx or a dropped connection.")
    backoff_s: float = Field(1.0, ge=0, description="First bulk backoff; doubles per retry.")
    backoff_max_s: float = Field(30.0, ge=0, description="Cap of the bulk backoff.")
    shards: int = Field(1, ge=1, description="number_of_shards of a new index.")
    replicas: int = Field(0, ge=0, description="number_of_replicas of a new index (0 on one node).")
    analyzer: str = Field("english", description="Analyzer of the text field (stemming matches tantivy's en_stem).")
    dense: bool = Field(False, description=(
        "Also index MiniLM embeddings in a dense_vector field and add a kNN clause to searches."))
    dims: int = Field(384, ge=1, description="dense_vector dims (MiniLM: 384).")
    api_key_env: str = Field("ILP_ES_API_KEY", description="Env variable holding an API key (preferred).")
    user_env: str = Field("ILP_ES_USER", description="Env variable holding the basic-auth user.")
    password_env: str = Field("ILP_ES_PASSWORD", description="Env variable holding the basic-auth password.")
    credentials_file: str | None = Field(None, description=(
        "A file whose first line is an API key, or 'user:password'; used when the env holds none."))
    verify_certs: bool = Field(True, description="Verify the cluster's TLS certificate.")
    ca_certs: str | None = Field(None, description="CA bundle for a self-signed cluster.")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")


class IndexConfig(_Section):
    backend: Literal["tantivy", "elasticsearch"] = Field("tantivy", description=(
        "tantivy: embedded, on disk, in-process. elasticsearch: a cluster via the official client."))
    location: str = Field("runs/corpus-index", description=(
        "tantivy: the index directory; elasticsearch: the index name."))
    state_dir: str | None = Field(None, description=(
        "Where `ilp corpus index` keeps its manifest (the files already indexed, for resuming), as "
        "<state_dir>/<name>.<id>.manifest.json, <id> naming the index (directory, or cluster URL and "
        "name). None: beside a tantivy index (<location>.manifest.json); for elasticsearch "
        "$ILP_CACHE_DIR/ingest, else ~/.cache/ilp-ray/ingest (never the working directory). Set it "
        "to a persistent volume where the home directory is not (a job's pod)."))
    tantivy: TantivyConfig = TantivyConfig()
    elasticsearch: ElasticsearchConfig = ElasticsearchConfig()


class ChunkConfig(_Section):
    words: int = Field(100, ge=8, description=(
        "Passage length in words: short enough that BM25 and the embedder see one fact, long "
        "enough to hold the subject and its object together."))
    overlap: int = Field(20, ge=0, description="Words shared by consecutive passages, so no fact is cut in two.")

    @model_validator(mode="after")
    def _overlap_lt_words(self):
        if self.overlap >= self.words:
            raise ValueError(f"chunk.overlap ({self.overlap}) must be < chunk.words ({self.words})")
        return self


class IngestConfig(_Section):
    batch_size: int = Field(512, ge=1, description="Documents per Ray Data batch while chunking.")
    read_cpus: float = Field(0.5, gt=0, description=(
        "CPUs per read/chunk task. The writer runs in the driver; leave CPUs free (Ray Data deadlock trap)."))


class RetrieveConfig(_Section):
    k: int = Field(20, ge=1, description="Passages retrieved per SFT item (BM25 top-K).")
    actors: int = Field(1, ge=1, description="Search actors; each opens the index once.")
    cpus_per_actor: float = Field(0.5, gt=0, description="CPUs per actor; a pool taking every CPU deadlocks.")
    batch_size: int = Field(64, ge=1, description="Items per map_batches call.")


class MatchConfig(_Section):
    enabled: bool = Field(True, description="Keep only passages semantically close to the item (Spark + embedder).")
    theta: float = Field(0.5, ge=-1, le=1, description=(
        "Cosine of (query, passage) at or above which a BM25 hit is kept as a match: BM25 finds "
        "shared words, the cosine drops passages that share words but not the meaning."))
    embedder: Literal["minilm", "hashing"] = Field("minilm", description="minilm for audits; hashing for dry runs.")
    master: str = Field("local[*]", description="spark.master.")
    driver_memory: str = Field("2g", description="spark.driver.memory (only before the JVM starts).")
    partitions: int | None = Field(None, ge=1, description="Spark partitions; None: Spark's default parallelism.")


class JudgeConfig(_Section):
    name: str = Field("rule", description="Corpus judge: rule, model or llm (or a registered name).")
    model: str | None = Field(None, validate_default=True, description=(
        "judge=model: a checkpoint dir or bundled name to score with (required for it)."))
    url: str | None = Field(None, validate_default=True, description=(
        "judge=llm: OpenAI-compatible base URL (required for it)."))
    llm_model: str = Field("gpt-4o-mini", description="judge=llm: the model name sent to the endpoint.")
    api_key_env: str = Field("ILP_JUDGE_API_KEY", description="judge=llm: env variable with the bearer key.")
    timeout_s: float = Field(30.0, gt=0, description="judge=llm: per-request timeout.")
    max_passages: int = Field(3, ge=1, description="Matched passages shown to the model/llm judge.")

    @field_validator("name")
    @classmethod
    def _known_judge(cls, v: str) -> str:
        from ilp_ray.evidence.judge import JUDGES

        if v not in JUDGES.names():
            try:
                JUDGES.get(v)
            except KeyError as e:  # the registry's message, with its "Did you mean"
                raise ValueError(e.args[0]) from None
        return v

    @field_validator("model")
    @classmethod
    def _model_judge_needs_model(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("name") == "model" and not v:
            raise ValueError("judge 'model' needs judge.model (a checkpoint dir or bundled name)")
        return v

    @field_validator("url")
    @classmethod
    def _llm_judge_needs_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("name") == "llm" and not v:
            raise ValueError("judge 'llm' needs judge.url (an OpenAI-compatible base URL)")
        return v


class EvidenceStageConfig(_Section):
    """What retrieval, matching and judging need, wherever the stage runs."""

    retrieve: RetrieveConfig = RetrieveConfig()
    match: MatchConfig = MatchConfig()
    judge: JudgeConfig = JudgeConfig()


class EvidenceConfig(EvidenceStageConfig):
    """``ilp corpus evidence``: one SFT dataset against one index."""

    data: str = Field(..., description="SFT dataset, as the audit reads it (ilp_ray.data.load_sft).")
    data_format: DataFormat = Field("auto", description=DATA_FORMAT_HELP)
    out: str = Field("runs/evidence", description="Output directory.")
    index: IndexConfig = IndexConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="ilp-evidence")


class AuditEvidenceConfig(EvidenceStageConfig):
    """The audit's ``evidence`` section: the corpus-evidence stage between detection and diagnosis."""

    enabled: bool = Field(False, description=(
        "Run the corpus-evidence stage after detection and before the diagnosis, on the audit's "
        "data; its outputs go to <run_dir>/evidence/, its rates into the audit's MLflow run, and "
        "its corpus_evidence.parquet to the diagnosis (unless diagnose.evidence names a file)."))
    scope: Literal["unlearned", "top_k", "all"] = Field("unlearned", description=(
        "Which records are judged: the unlearned ones (what the diagnosis reads), the top-K most "
        "severe (detect.top_k), or every record (the dataset's non-existence and conflict rates, "
        "as the paper's Table 13 reports them)."))
    index: IndexConfig | None = Field(None, validate_default=True, description=(
        "The corpus index that `ilp corpus index` built (backend, location, ...); required when "
        "enabled. The index must exist: the audit checks it before any work."))

    @field_validator("index")
    @classmethod
    def _index_when_enabled(cls, v: IndexConfig | None, info: ValidationInfo) -> IndexConfig | None:
        if v is None and info.data.get("enabled"):
            raise ValueError("required when evidence.enabled is true: the corpus index to search "
                             "(e.g. evidence.index.location=runs/corpus-index, built by `ilp corpus index`)")
        return v

    def run_config(self, data: str, out: str) -> EvidenceConfig:
        """The ``EvidenceConfig`` of this section for one run; tracking is the caller's (its run)."""
        if self.index is None:
            raise ValueError("evidence.index is not set")
        return EvidenceConfig(data=data, out=out, index=self.index, retrieve=self.retrieve, match=self.match,
                              judge=self.judge, tracking=TrackingConfig(enabled=False))


class CorpusConfig(_Section):
    """``ilp corpus index``: where the index lives and how documents become passages."""

    index: IndexConfig = IndexConfig()
    chunk: ChunkConfig = ChunkConfig()
    ingest: IngestConfig = IngestConfig()
