"""The corpus-index contract: a bulk-loaded BM25 index of pretraining passages, and its registry.

Modelled on lm-eval's ``api/model.py``: one small ABC whose methods state their batch semantics.
Backends live in ``INDEXES`` as lazy ``"module:attr"`` entries, so choosing ``tantivy`` never
imports the Elasticsearch client and vice versa.

Ids are derived from content (``passage_id``), never assigned by the index, so adding the same
passage twice leaves one copy: a re-run of a half-finished ingest is safe.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ilp_ray.errors import IlpError
from ilp_ray.registry import Registry


class EvidenceError(IlpError, RuntimeError):
    """A corpus index cannot be reached or used. Names the URL or index, never a credential."""


def passage_id(doc_id: str, chunk: int, text: str) -> str:
    """The content-derived id of a passage: sha1 of its document id, chunk number and text.

    The chunk number keeps two identical chunks of one document apart; the text makes an edited
    document's passages new ones rather than silently overwriting under an old id.
    """
    h = hashlib.sha1()
    for part in (doc_id, str(chunk), text):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


@dataclass(frozen=True)
class Passage:
    """One chunk of one corpus document.

    Attributes:
        id: ``passage_id(doc_id, chunk, text)``.
        doc_id: the document's id (the input's ``id`` field, else a hash of its text).
        text: the passage text.
        chunk: 0-based position of the passage within its document.
        source: the input file it came from (provenance only; not part of the id).
    """

    id: str
    doc_id: str
    text: str
    chunk: int = 0
    source: str = ""

    @classmethod
    def make(cls, doc_id: str, text: str, chunk: int = 0, source: str = "") -> Passage:
        return cls(passage_id(doc_id, chunk, text), doc_id, text, chunk, source)


@dataclass(frozen=True)
class Hit:
    """One retrieved passage; ``score`` is the backend's BM25 score (higher is better, unbounded)."""

    id: str
    doc_id: str
    text: str
    score: float


class CorpusIndex(ABC):
    """A BM25 full-text index of corpus passages.

    Lifecycle: construct (opening or creating the index), ``add`` in bulk, ``commit`` to make the
    adds durable and searchable, ``search``, ``close``. Usable as a context manager (``close`` on
    exit). One writer per index at a time; any number of readers.

    Args:
        cfg: the backend's section of ``IndexConfig`` (see ``ilp_ray.evidence.config``).
        location: where the index lives: a directory (embedded backends) or an index name (servers).
    """

    name: str = ""

    def __init__(self, cfg: Any, location: str):
        self.cfg = cfg
        self.location = location

    @abstractmethod
    def add(self, passages: Iterable[Passage]) -> int:
        """Add passages in bulk; a passage whose id is already indexed replaces the old copy.

        Args:
            passages: any number; the backend batches internally (one writer, bulk requests).

        Returns:
            How many passages were sent (re-sent duplicates included). They become visible to
            ``search`` and ``count`` after ``commit``.
        """

    @abstractmethod
    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """BM25 search for a batch of free-text queries.

        Queries are plain text, not a query language: punctuation and operators are ignored,
        every word is an optional term (a disjunction ranked by BM25).

        Args:
            queries: the queries, any number.
            k: hits per query, >= 1.

        Returns:
            One list per query, in query order, of at most ``k`` hits by descending score; an
            empty list for a query with no words or no match.
        """

    @abstractmethod
    def count(self) -> int:
        """Number of committed passages (each id once)."""

    @abstractmethod
    def commit(self) -> None:
        """Make every ``add`` so far durable and searchable."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the index exists at ``location`` (with committed data or an empty schema)."""

    def size_bytes(self) -> int | None:
        """On-disk size of the index, when the backend knows it; None otherwise."""
        return None

    def close(self) -> None:  # noqa: B027  (optional hook: a backend may hold nothing to release)
        """Release writers and connections. Uncommitted adds are committed first."""

    def __enter__(self) -> CorpusIndex:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


INDEXES: Registry[CorpusIndex] = Registry("corpus index", CorpusIndex)
INDEXES.register("tantivy", "ilp_ray.evidence.tantivy_index:TantivyIndex")
INDEXES.register("elasticsearch", "ilp_ray.evidence.es_index:ElasticsearchIndex")


def open_index(cfg, location: str | None = None, backend: str | None = None,
               must_exist: bool = False) -> CorpusIndex:
    """Open (or create) the configured index.

    Args:
        cfg: an ``IndexConfig``.
        location: overrides ``cfg.location``.
        backend: overrides ``cfg.backend``.
        must_exist: for readers: raise instead of creating an empty index at a mistyped location.

    Raises:
        EvidenceError: ``must_exist`` and there is no index there, or the backend is unreachable.
    """
    from pathlib import Path

    name = backend or cfg.backend
    cls = INDEXES.get(name)
    section = getattr(cfg, name.replace("-", "_"), None)
    loc = location or cfg.location
    if must_exist and name == "tantivy" and not (Path(loc) / "meta.json").exists():
        raise EvidenceError(f"no tantivy index at {loc}; build it with `ilp corpus index`")
    index = cls(section, loc)
    if must_exist and not index.exists():
        index.close()
        raise EvidenceError(f"no {name} index {loc!r}; build it with `ilp corpus index`")
    return index
