"""Elasticsearch backend (official client 9.x): the index at scale.

- Mapping and settings come from ``ElasticsearchConfig`` (analyzer, shards, replicas, and a
  ``dense_vector`` field when ``dense`` is on).
- Bulk indexing uses the passage id as ``_id``, so a re-sent passage overwrites itself.
- Search is BM25 ``multi_match`` over the text, plus a kNN clause on the MiniLM vector when
  ``dense`` is on (ES adds the two scores).
- Transient failures: the client retries single requests (``max_retries``, ``retry_on_timeout``);
  a bulk chunk that fails with 429/5xx or a dropped connection is re-sent with our own
  exponential backoff, since a chunk holds many documents and the client would not re-split it.
- Credentials are read at connect time from the env (``ILP_ES_API_KEY``, or ``ILP_ES_USER`` and
  ``ILP_ES_PASSWORD``) or a file; they are never stored on the object, logged or put in errors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ilp_ray.errors import DataError
from ilp_ray.evidence.index import CorpusIndex, EvidenceError, Hit, Passage

_TRANSIENT_STATUS = {429, 502, 503, 504}


def _auth(cfg) -> dict:
    """Client auth kwargs from the env, else the credentials file; {} when neither has any."""
    key = os.environ.get(cfg.api_key_env)
    if key:
        return {"api_key": key}
    user, pw = os.environ.get(cfg.user_env), os.environ.get(cfg.password_env)
    if user and pw:
        return {"basic_auth": (user, pw)}
    if cfg.credentials_file:
        try:
            line = Path(cfg.credentials_file).read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as e:
            # Name the file, not its content.
            raise DataError(f"cannot read the Elasticsearch credentials file ({type(e).__name__})",
                            file=cfg.credentials_file) from None
        if ":" in line:
            u, _, p = line.partition(":")
            return {"basic_auth": (u, p)}
        return {"api_key": line}
    return {}


class ElasticsearchIndex(CorpusIndex):
    """Passages in the Elasticsearch index ``location`` of the cluster at ``cfg.url``.

    Construction checks the cluster answers (within ``request_timeout_s``) and raises
    ``EvidenceError`` naming the URL when it does not. The index is created by the first ``add``;
    ``search`` and ``count`` on a missing index raise ``EvidenceError`` naming it.
    """

    name = "elasticsearch"

    def __init__(self, cfg, location: str):
        from elasticsearch import Elasticsearch

        from ilp_ray.evidence.config import ElasticsearchConfig

        cfg = cfg or ElasticsearchConfig()
        super().__init__(cfg, location)
        if not location or location != location.lower() or location.startswith(("_", "-", "+")):
            raise DataError(f"invalid Elasticsearch index name {location!r} (lower case, no leading _ - +)",
                            field="index.location")
        self._es = Elasticsearch(cfg.url, request_timeout=cfg.request_timeout_s, max_retries=cfg.max_retries,
                                 retry_on_timeout=cfg.retry_on_timeout, verify_certs=cfg.verify_certs,
                                 ca_certs=cfg.ca_certs, **_auth(cfg))
        self._call("reach the cluster", lambda: self._es.info())
        self._embedder = None

    def _call(self, what: str, fn):
        """Run one client call; turn transport and API errors into ``EvidenceError``."""
        from elasticsearch import ApiError, TransportError

        try:
            return fn()
        except TransportError as e:  # connection refused, DNS, TLS, timeout
            raise EvidenceError(f"cannot {what}: Elasticsearch at {self.cfg.url} is unreachable "
                                f"({type(e).__name__}); check index.elasticsearch.url") from None
        except ApiError as e:
            if e.status_code == 404:
                raise EvidenceError(f"Elasticsearch index {self.location!r} does not exist at "
                                    f"{self.cfg.url}; build it with `ilp corpus index`") from None
            if e.status_code in (401, 403):
                raise EvidenceError(f"cannot {what}: Elasticsearch at {self.cfg.url} refused the "
                                    f"credentials (HTTP {e.status_code}); see {self.cfg.api_key_env}") from None
            raise EvidenceError(f"cannot {what} at {self.cfg.url}: HTTP {e.status_code} {e.error}") from None

    def _mapping(self) -> dict:
        props = {"doc_id": {"type": "keyword"}, "chunk": {"type": "integer"},
                 "text": {"type": "text", "analyzer": self.cfg.analyzer}}
        if self.cfg.dense:
            props["vector"] = {"type": "dense_vector", "dims": self.cfg.dims, "index": True,
                               "similarity": "cosine"}
        return {"properties": props}

    def _ensure(self) -> None:
        if self._call("check the index", lambda: bool(self._es.indices.exists(index=self.location))):
            return
        settings = {"number_of_shards": self.cfg.shards, "number_of_replicas": self.cfg.replicas}
        self._call("create the index", lambda: self._es.indices.create(
            index=self.location, settings=settings, mappings=self._mapping()))

    def _vectors(self, texts: list[str]):
        if self._embedder is None:
            from ilp_ray.data.embed import get_embedder

            self._embedder = get_embedder()
        return self._embedder.encode(texts)

    def _send(self, chunk: list[Passage]) -> None:
        from elasticsearch import ApiError, TransportError, helpers

        vecs = self._vectors([p.text for p in chunk]) if self.cfg.dense else None
        actions = []
        for i, p in enumerate(chunk):
            src = {"doc_id": p.doc_id, "chunk": p.chunk, "text": p.text}
            if vecs is not None:
                src["vector"] = vecs[i].tolist()
            actions.append({"_index": self.location, "_id": p.id, "_source": src})
        delay = self.cfg.backoff_s
        for attempt in range(self.cfg.bulk_retries + 1):
            try:
                _, errors = helpers.bulk(self._es, actions, raise_on_error=False, stats_only=False)
            except (TransportError, ApiError) as e:
                status = getattr(e, "status_code", None)
                if attempt < self.cfg.bulk_retries and (status is None or status in _TRANSIENT_STATUS):
                    time.sleep(min(delay, self.cfg.backoff_max_s))
                    delay *= 2
                    continue
                self._call("bulk index", _raiser(e))
            hard = [err for err in errors if _status(err) not in _TRANSIENT_STATUS]
            if hard:
                raise EvidenceError(f"bulk indexing into {self.location!r} at {self.cfg.url} rejected "
                                    f"{len(hard)} passage(s); first: {str(hard[0])[:300]}")
            if not errors:
                return
            # Re-send only the passages the cluster pushed back (429 per item); ids make it safe.
            again = {_id(err) for err in errors}
            actions = [a for a in actions if a["_id"] in again]
            if attempt < self.cfg.bulk_retries:
                time.sleep(min(delay, self.cfg.backoff_max_s))
                delay *= 2
        raise EvidenceError(f"bulk indexing into {self.location!r} at {self.cfg.url} kept failing "
                            f"after {self.cfg.bulk_retries} retries (cluster overloaded?)")

    def add(self, passages: Iterable[Passage]) -> int:
        self._ensure()
        n, chunk = 0, []
        for p in passages:
            chunk.append(p)
            if len(chunk) >= self.cfg.bulk_chunk:
                self._send(chunk)
                n, chunk = n + len(chunk), []
        if chunk:
            self._send(chunk)
            n += len(chunk)
        return n

    def commit(self) -> None:
        if self._call("check the index", lambda: bool(self._es.indices.exists(index=self.location))):
            self._call("refresh the index", lambda: self._es.indices.refresh(index=self.location))

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        from ilp_ray.evidence.tantivy_index import query_terms

        terms = [query_terms(q) for q in queries]
        live = [i for i, t in enumerate(terms) if t]
        out: list[list[Hit]] = [[] for _ in queries]
        if not live:
            return out
        vecs = self._vectors([queries[i] for i in live]) if self.cfg.dense else None
        searches = []
        for j, i in enumerate(live):
            body = {"size": k, "query": {"multi_match": {"query": terms[i], "fields": ["text"]}},
                    "_source": ["doc_id", "text"]}
            if vecs is not None:
                body["knn"] = {"field": "vector", "query_vector": vecs[j].tolist(), "k": k,
                               "num_candidates": max(100, 2 * k)}
            searches += [{"index": self.location}, body]
        # One msearch per batch: a round trip per query would dominate at K=100.
        resp = self._call("search", lambda: self._es.msearch(searches=searches))
        for i, r in zip(live, resp["responses"]):
            if "error" in r:
                if r.get("status") == 404:
                    self._call("search", lambda: self._es.indices.get(index=self.location))
                raise EvidenceError(f"search in {self.location!r} at {self.cfg.url} failed: {str(r['error'])[:300]}")
            out[i] = [Hit(h["_id"], h["_source"]["doc_id"], h["_source"]["text"], float(h["_score"]))
                      for h in r["hits"]["hits"]]
        return out

    def count(self) -> int:
        return int(self._call("count", lambda: self._es.count(index=self.location))["count"])

    def exists(self) -> bool:
        return self._call("check the index", lambda: bool(self._es.indices.exists(index=self.location)))

    def size_bytes(self) -> int | None:
        st = self._call("read index stats", lambda: self._es.indices.stats(index=self.location, metric="store"))
        return int(st["_all"]["primaries"]["store"]["size_in_bytes"])

    def delete(self) -> None:
        """Drop the whole index (tests and rebuilds)."""
        self._call("delete the index", lambda: self._es.indices.delete(index=self.location, ignore_unavailable=True))

    def close(self) -> None:
        self._es.close()

    def __repr__(self) -> str:  # the client's repr is safe, but keep ours to url and index
        return f"ElasticsearchIndex(url={self.cfg.url!r}, index={self.location!r})"


def _raiser(e: Exception):
    def fn():
        raise e
    return fn


def _status(err: dict) -> int | None:
    return next(iter(err.values()), {}).get("status") if isinstance(err, dict) else None


def _id(err: dict) -> str | None:
    return next(iter(err.values()), {}).get("_id") if isinstance(err, dict) else None
