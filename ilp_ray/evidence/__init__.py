"""Pretraining-corpus evidence (paper 3.2.1–3.2.2, appendix F.2): is an SFT fact in the corpus,
and does the corpus agree?

index (``CorpusIndex``: tantivy or Elasticsearch) → ingest (Ray Data) → retrieve (Ray Data
actors, BM25 top-K) → match (Spark + MiniLM, cosine ≥ θ) → judge (rule / model / llm) →
``corpus_evidence.parquet`` for the diagnosis. Nothing heavy is imported here.
"""
