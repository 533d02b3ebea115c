"""Corpus ingest with Ray Data: formats, resumability, idempotent ids, and bad input."""

import json

import pytest

from ilp_ray.data.corpus_files import chunk_words, expand_inputs, read_documents
from ilp_ray.errors import DataError
from ilp_ray.evidence.config import ChunkConfig, IndexConfig, IngestConfig
from ilp_ray.evidence.index import open_index
from ilp_ray.evidence.ingest import ingest, manifest_path


def write_corpus(root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    (root / "a.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "fr", "text": "Paris is the capital of France."},
        {"id": 7, "text": "Tokyo is the capital of Japan."},
        {"text": "Bees make honey."}]) + "\n\n")
    (root / "b.txt").write_text("Rome is the capital\nof Italy.\n\n  \nMadrid is the capital of Spain.\n")
    pq.write_table(pa.table({"id": ["k"], "text": ["Nairobi is the capital of Kenya."]}), root / "c.parquet")
    return root


def run(inputs, loc, **kw):
    return ingest([str(i) for i in inputs], IndexConfig(location=str(loc)), ChunkConfig(words=8, overlap=2),
                  IngestConfig(), progress=False, **kw)


def test_chunk_rule():
    words = " ".join(str(i) for i in range(25))
    assert chunk_words(words, 10, 3) == ["0 1 2 3 4 5 6 7 8 9", "7 8 9 10 11 12 13 14 15 16",
                                         "14 15 16 17 18 19 20 21 22 23", "21 22 23 24"]
    assert chunk_words("one two", 10, 3) == ["one two"]
    assert chunk_words("   ", 10, 3) == []


def test_text_blocks_and_ids(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"Rome is\nthe capital.\n\n\n  \nMadrid.\n")
    (tmp_path / "x.jsonl").write_bytes(b'{"id": 3, "text": "t"}\n{"text": "t"}\n')
    docs = list(read_documents(str(tmp_path / "x.txt")))
    assert [t for _, t in docs] == ["Rome is\nthe capital.", "Madrid."]  # lines kept (CPT reads these too)
    ids = [i for i, _ in read_documents(str(tmp_path / "x.jsonl"))]
    assert ids[0] == "3" and len(ids[1]) == 16


def test_ingest_resume_and_idempotent(ray_session, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    loc = tmp_path / "idx"
    r1 = run([corpus / "a.jsonl", str(corpus / "*.txt"), corpus / "c.parquet"], loc)
    assert (r1["files"], r1["docs"], r1["index_passages"]) == (3, 6, 6)
    assert r1["passages_per_s"] > 0 and r1["index_bytes"] > 0
    with open_index(IndexConfig(location=str(loc)), must_exist=True) as ix:
        assert ix.search(["capital of Italy"], 1)[0][0].text == "Rome is the capital of Italy."
    r2 = run([corpus], loc)  # the directory: same three files, all done
    assert (r2["files"], r2["files_skipped"], r2["index_passages"]) == (0, 3, 6)
    # A job killed after indexing but before the manifest: everything is redone, nothing doubles.
    manifest_path(IndexConfig(location=str(loc))).unlink()
    r3 = run([corpus], loc)
    assert (r3["files"], r3["index_passages"]) == (3, 6)
    # A changed file is re-read; only its new passages are added.
    with open(corpus / "a.jsonl", "a") as f:
        f.write(json.dumps({"id": "pe", "text": "Lima is the capital of Peru."}) + "\n")
    r4 = run([corpus], loc)
    assert (r4["files"], r4["files_skipped"], r4["index_passages"]) == (1, 2, 7)
    assert run([corpus], loc)["files_skipped"] == 3  # the changed file is recorded again


def test_bad_line_names_file_and_line(ray_session, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": 3}\n')
    with pytest.raises(DataError) as e:
        run([bad], tmp_path / "idx")
    assert str(e.value).startswith(f"{bad}:3: field 'text'")
    bad.write_text('{"text": "fine"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        run([bad], tmp_path / "idx")


def test_corpus_files_are_streamed_under_the_loaders_limits(tmp_path, monkeypatch):
    """A corpus (or CPT) file is read a line at a time: a gzip bomb stops at the decompressed cap,
    a line past the line cap and a duplicate key are errors naming the file and line, a bad
    UTF-8 byte names its line, and a Parquet file is read a batch at a time."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ilp_ray.data import sources
    from ilp_ray.train.cpt_data import read_documents as cpt_documents

    monkeypatch.setattr(sources, "MAX_INPUT_BYTES", 100_000)
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(b'{"text": "x"}\n' * 20_000))  # 280 kB decompressed from ~1 kB
    assert bomb.stat().st_size < 5_000
    with pytest.raises(DataError, match=r"bomb\.jsonl\.gz: limit max_input_bytes=100000 exceeded"):
        list(read_documents(str(bomb)))
    with pytest.raises(DataError, match="max_input_bytes"):
        cpt_documents(bomb)
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1000)
    long = tmp_path / "long.txt"
    long.write_text("short\n\n" + "y" * 2000 + "\n")
    with pytest.raises(DataError, match=r"long\.txt:3: limit max_line_bytes=1000"):
        list(read_documents(str(long)))
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"text": "a"}\n{"text": "a", "text": "b"}\n')
    with pytest.raises(DataError, match=r"dup\.jsonl:2: .*duplicate key"):
        list(read_documents(str(dup)))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\nok \xff here\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: invalid UTF-8"):
        list(read_documents(str(bad)))
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(3000)], "other": ["z" * 100] * 3000}),
                   tmp_path / "c.parquet", row_group_size=1000)
    seen = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *a, **kw):
        seen.append(kw.get("columns"))
        yield from real(self, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    docs = list(read_documents(str(tmp_path / "c.parquet")))
    assert len(docs) == 3000 and docs[2999][1] == "doc 2999"
    assert seen == [["text"]]  # only the columns the reader needs, a batch at a time


def test_empty_corpus_and_missing_input(ray_session, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="empty corpus"):
        run([tmp_path / "empty.txt"], tmp_path / "idx")
    with pytest.raises(DataError, match="no corpus files found"):
        expand_inputs([str(tmp_path / "nope-*.jsonl")])
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(DataError, match="unsupported corpus file type"):
        expand_inputs([str(tmp_path / "x.csv")])


def test_reading_a_missing_index_is_an_error(tmp_path):
    from ilp_ray.evidence.index import EvidenceError

    with pytest.raises(EvidenceError, match="no tantivy index"):
        open_index(IndexConfig(location=str(tmp_path / "typo")), must_exist=True)
    assert not (tmp_path / "typo").exists()


def test_manifest_location(tmp_path, monkeypatch):
    """Beside a tantivy index by default; Elasticsearch's under the cache, never the working dir;
    ``state_dir`` puts either where it says, one file per index even when names repeat."""
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("ILP_CACHE_DIR", str(cache))
    assert manifest_path(IndexConfig(location="runs/idx")) == work / "runs" / "idx.manifest.json"
    es = manifest_path(IndexConfig(backend="elasticsearch", location="corpus"))
    assert es.parent == cache / "ingest" and es.name.startswith("corpus.") and work not in es.parents
    other = manifest_path(IndexConfig.model_validate(
        {"backend": "elasticsearch", "location": "corpus", "elasticsearch": {"url": "https://es2:9200"}}))
    assert other.parent == es.parent and other != es  # same index name on another cluster
    keyed = IndexConfig.model_validate({"backend": "elasticsearch", "location": "corpus",
                                        "elasticsearch": {"url": "https://elastic:s3cret@es2:9200"}})
    assert manifest_path(keyed) == other  # credentials in the URL do not change (or leak into) it
    state = tmp_path / "state"
    a = manifest_path(IndexConfig(location=str(tmp_path / "a" / "idx"), state_dir=str(state)))
    b = manifest_path(IndexConfig(location=str(tmp_path / "b" / "idx"), state_dir=str(state)))
    assert a.parent == b.parent == state and a != b


def test_manifest_in_state_dir_and_a_deleted_index(ray_session, tmp_path):
    """With ``state_dir`` the manifest lives there; if the index is deleted while the manifest
    stays, the next ingest indexes every file again instead of skipping them all."""
    import shutil

    corpus = write_corpus(tmp_path / "corpus")
    loc, state = tmp_path / "idx", tmp_path / "state"
    index = IndexConfig(location=str(loc), state_dir=str(state))

    def go():
        return ingest([str(corpus)], index, ChunkConfig(words=8, overlap=2), IngestConfig(), progress=False)

    r1 = go()
    assert r1["manifest"] == str(manifest_path(index)) and manifest_path(index).parent == state
    assert not (tmp_path / "idx.manifest.json").exists()
    assert set(json.loads(manifest_path(index).read_text())["files"]) == {str(corpus / n) for n in
                                                                           ("a.jsonl", "b.txt", "c.parquet")}
    shutil.rmtree(loc)
    r2 = go()
    assert (r2["files"], r2["files_skipped"], r2["index_passages"]) == (3, 0, 6)
