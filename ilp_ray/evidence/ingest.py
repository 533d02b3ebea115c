"""Build a corpus index from files with Ray Data: read, split into documents, chunk, bulk-add.

Ray Data streams each file (``corpus_files.read_documents``) and parses and chunks it in a task; the driver
holds the one index writer and adds the passages in bulk. Each file's task ends its output with
a marker row carrying the file's passage count, so the driver knows a file is complete however
Ray interleaves the blocks of different files.

Resumable: after a commit, every file whose passages are all in the index is recorded in a
manifest (path, size, mtime; where it lives: ``manifest_path``). A re-run skips recorded files; a file that was half indexed when
the job died is re-read in full, and its content-derived ids overwrite what was already there.
A file edited since it was indexed is re-read too; its new passages are added, but passages of
text that no longer exists stay (ids come from text): rebuild the index to drop them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ilp_ray.data.corpus_files import chunk_words, expand_inputs, read_documents
from ilp_ray.errors import DataError, IlpError
from ilp_ray.evidence.index import Passage, open_index
from ilp_ray.storage import write_json_atomic

log = logging.getLogger(__name__)


def manifest_path(index_cfg) -> Path:
    """Where ingest records the files already in the index (``IndexConfig.state_dir``).

    - ``state_dir`` set: ``<state_dir>/<name>.<id>.manifest.json``, where ``<id>`` is a short hash
      of what names the index (a tantivy directory's absolute path; an Elasticsearch cluster's
      URL, without credentials, and the index name), so indexes that share a name never share a
      manifest;
    - tantivy, no ``state_dir``: beside the index, ``<dir>.manifest.json`` (never inside it, where
      tantivy's garbage collection owns the files);
    - Elasticsearch, no ``state_dir``: the same layout under ``$ILP_CACHE_DIR/ingest`` (default
      ``~/.cache/ilp-ray/ingest``); never the working directory.
    """
    import hashlib

    from ilp_ray.models import cache_dir

    name, ident = _index_identity(index_cfg)
    if index_cfg.backend == "tantivy" and index_cfg.state_dir is None:
        return Path(ident).parent / f"{name}.manifest.json"
    state = Path(index_cfg.state_dir).expanduser() if index_cfg.state_dir else cache_dir() / "ingest"
    digest = hashlib.sha1(f"{index_cfg.backend}\x00{ident}".encode()).hexdigest()[:10]
    return state / f"{name}.{digest}.manifest.json"


def _index_identity(index_cfg) -> tuple[str, str]:
    """(short name, what names the index uniquely): a tantivy index's absolute directory, or an
    Elasticsearch cluster's URL (credentials dropped) and the index name."""
    loc = index_cfg.location.rstrip("/")
    if index_cfg.backend == "tantivy":
        path = Path(loc).absolute()  # as open_index reads it: relative to the working directory
        return path.name, str(path)
    from ilp_ray.track import public_uri

    return loc, f"{public_uri(index_cfg.elasticsearch.url)}/{loc}"


def _file_key(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"files": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read the ingest manifest ({e}); delete it to re-ingest everything",
                        file=str(path)) from None
    return data if isinstance(data.get("files"), dict) else {"files": {}}


def _chunker(words: int, overlap: int):
    def fn(row: dict) -> list[dict]:
        path = row["path"]
        out, n_docs = [], 0
        try:
            for doc_id, text in read_documents(path):
                n_docs += 1
                for c, piece in enumerate(chunk_words(text, words, overlap)):
                    out.append({"id": Passage.make(doc_id, piece, c).id, "doc_id": doc_id, "text": piece,
                                "chunk": c, "source": path, "end": False, "n": 0, "error": ""})
        except DataError as e:
            # Ray drops the cause chain of a task failure; carry the message out as a row instead.
            return [{"id": "", "doc_id": "", "text": "", "chunk": 0, "source": path, "end": True,
                     "n": -1, "error": str(e)}]
        out.append({"id": "", "doc_id": "", "text": "", "chunk": n_docs, "source": path, "end": True,
                    "n": len(out), "error": ""})
        return out
    return fn


def unwrap(e: BaseException) -> BaseException:
    """The user-facing error inside a Ray task failure, if there is one."""
    stack, seen = [e], set()
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        # Ray's RayTaskError(X) subclasses X dynamically; only a plain ilp_ray error is the user's.
        if isinstance(cur, IlpError) and type(cur).__module__.startswith("ilp_ray"):
            return cur
        stack += [getattr(cur, "cause", None), cur.__cause__, cur.__context__]
    return e


def ingest(inputs: list[str], index_cfg, chunk_cfg, ingest_cfg, progress: bool = True) -> dict[str, Any]:
    """Index every input file not already in the manifest.

    Args:
        inputs: files, directories and globs (see ``ilp_ray.data.corpus_files``).
        index_cfg, chunk_cfg, ingest_cfg: the ``IndexConfig``, ``ChunkConfig``, ``IngestConfig``.
        progress: print a progress line to stderr every few seconds.

    Returns:
        A report: files indexed and skipped, documents, passages, seconds, docs/s, passages/s,
        the index's passage count and size in bytes.

    Raises:
        DataError: no input files, a bad file (named with its line), or an empty corpus.
        EvidenceError: the index backend cannot be reached.
    """
    import ray

    from ilp_ray.env import init_ray

    mpath = manifest_path(index_cfg)
    files = expand_inputs(inputs, exclude=(str(mpath.resolve()), os.path.abspath(index_cfg.location)))
    manifest = _load_manifest(mpath)
    manifest["index"] = {"backend": index_cfg.backend, "index": _index_identity(index_cfg)[1]}  # for people
    t0 = time.perf_counter()
    with open_index(index_cfg) as index:
        done = manifest["files"]
        if done and index.count() == 0:
            # Files recorded as done but an empty index: the index was deleted or rebuilt while
            # the manifest (which may live elsewhere, see state_dir) stayed. Start over.
            log.warning("ingest manifest %s lists %d files but the index is empty; re-indexing them",
                        mpath, len(done))
            done.clear()
        todo = [f for f in files if done.get(f, {}).get("key") != _file_key(f)]
        for f in todo:  # a changed file is done again only once all its new passages are in
            done.pop(f, None)
        report: dict[str, Any] = {"files": len(todo), "files_skipped": len(files) - len(todo), "docs": 0,
                                  "passages": 0, "manifest": str(mpath)}
        if todo:
            init_ray(None)
            # one task a file, which streams it (read_documents): no file is read whole
            ds = ray.data.from_items([{"path": f} for f in todo], override_num_blocks=len(todo)).flat_map(
                _chunker(chunk_cfg.words, chunk_cfg.overlap), num_cpus=ingest_cfg.read_cpus)
            expected: dict[str, tuple[int, int]] = {}
            got: dict[str, int] = {}
            last = t0
            try:
                for batch in ds.iter_batches(batch_size=ingest_cfg.batch_size, batch_format="pyarrow"):
                    rows = batch.to_pylist()
                    bad = next((r["error"] for r in rows if r["error"]), None)
                    if bad:
                        raise DataError(bad)
                    index.add(Passage(r["id"], r["doc_id"], r["text"], r["chunk"], r["source"])
                              for r in rows if not r["end"])
                    for r in rows:
                        if r["end"]:
                            expected[r["source"]] = (r["chunk"], r["n"])
                        else:
                            got[r["source"]] = got.get(r["source"], 0) + 1
                    finished = [f for f, (_, n) in expected.items() if got.get(f, 0) == n and f not in done]
                    # (todo files were dropped from ``done`` above, so each finishes exactly once)
                    if finished:
                        index.commit()  # only committed passages may be recorded as done
                        for f in finished:
                            d, n = expected[f]
                            done[f] = {"key": _file_key(f), "docs": d, "passages": n}
                            report["docs"] += d
                            report["passages"] += n
                        write_json_atomic(manifest, mpath)
                    now = time.perf_counter()
                    if progress and now - last > 5:
                        last = now
                        print(f"[corpus] {len(expected)}/{len(todo)} files, {sum(got.values())} passages, "
                              f"{sum(got.values()) / (now - t0):.0f} passages/s", file=sys.stderr)
            except DataError:
                raise
            except Exception as e:
                raise unwrap(e) from None
            index.commit()
        n_total = index.count()
        report.update(index_passages=n_total, index_bytes=index.size_bytes())
    dt = time.perf_counter() - t0
    if n_total == 0:
        raise DataError("empty corpus: the input files hold no documents", file=", ".join(inputs))
    report.update(seconds=round(dt, 3), docs_per_s=round(report["docs"] / dt, 1) if dt else 0.0,
                  passages_per_s=round(report["passages"] / dt, 1) if dt else 0.0)
    return report
