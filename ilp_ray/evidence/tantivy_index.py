"""The embedded default index: tantivy, in-process, on disk.

Passage ids are stored in a ``raw``-tokenised text field so that a re-added passage can be
deleted by exact term before it is added again (idempotent ingest). The chunk number is an i64
field: tantivy 0.27's u64 fields reject plain Python ints given through ``Document(...)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ilp_ray.errors import DataError
from ilp_ray.evidence.index import CorpusIndex, Hit, Passage

_WORD = re.compile(r"\w+", re.UNICODE)


def _schema():
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("pid", stored=True, tokenizer_name="raw")
    sb.add_text_field("doc_id", stored=True, tokenizer_name="raw")
    sb.add_text_field("text", stored=True, tokenizer_name="en_stem")
    sb.add_integer_field("chunk", stored=True, indexed=False)
    return sb.build()


def query_terms(text: str) -> str:
    """Free text → a tantivy query of lower-cased words only, so user text can never be read as
    query syntax (``AND``, ``field:``, quotes, brackets)."""
    return " ".join(w.lower() for w in _WORD.findall(text))


class TantivyIndex(CorpusIndex):
    """A tantivy index in the directory ``location`` (created if missing, reopened if present).

    Args:
        cfg: ``TantivyConfig`` (writer heap and threads).
        location: the index directory.
    """

    name = "tantivy"

    def __init__(self, cfg, location: str):
        import tantivy

        from ilp_ray.evidence.config import TantivyConfig

        super().__init__(cfg or TantivyConfig(), location)
        path = Path(location)
        if path.exists() and not path.is_dir():
            raise DataError("the tantivy index location is a file, not a directory", file=location)
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._index = tantivy.Index(_schema(), path=str(path), reuse=True)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot open tantivy index: {e}", file=location) from e
        self._writer = None
        self._pending = False

    def _w(self):
        if self._writer is None:
            # The heap is split between the threads, and tantivy needs >= 3 MB per thread.
            heap = max(self.cfg.heap_mb, 3 * self.cfg.threads) * 1024 * 1024
            self._writer = self._index.writer(heap, self.cfg.threads)
        return self._writer

    def add(self, passages: Iterable[Passage]) -> int:
        import tantivy

        w, n = self._w(), 0
        for p in passages:
            # Delete-then-add: tantivy applies the delete (at commit) only to documents added
            # before it, so exactly the new copy survives.
            w.delete_documents_by_term("pid", p.id)
            doc = tantivy.Document()
            doc.add_text("pid", p.id)
            doc.add_text("doc_id", p.doc_id)
            doc.add_text("text", p.text)
            doc.add_integer("chunk", int(p.chunk))
            w.add_document(doc)
            n += 1
        self._pending = self._pending or n > 0
        return n

    def commit(self) -> None:
        if self._writer is not None and self._pending:
            self._writer.commit()
            self._pending = False
        self._index.reload()

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self._index.reload()
        searcher = self._index.searcher()
        out: list[list[Hit]] = []
        for q in queries:
            terms = query_terms(q)
            if not terms:
                out.append([])
                continue
            query = self._index.parse_query(terms, ["text"])
            hits = []
            for score, addr in searcher.search(query, k).hits:
                d = searcher.doc(addr)
                hits.append(Hit(d["pid"][0], d["doc_id"][0], d["text"][0], float(score)))
            out.append(hits)
        return out

    def count(self) -> int:
        self._index.reload()
        return int(self._index.searcher().num_docs)

    def exists(self) -> bool:
        import tantivy

        return bool(tantivy.Index.exists(str(self.location)))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in Path(self.location).rglob("*") if p.is_file())

    def close(self) -> None:
        if self._writer is not None:
            if self._pending:
                self._writer.commit()
            self._writer.wait_merging_threads()  # releases the writer lock for the next process
            self._writer = None
            self._pending = False
