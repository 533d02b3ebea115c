"""Elasticsearch backend errors that need no cluster: unreachable URL, secrets, config checks.

These test our client code's failure paths, not Elasticsearch; the backend's behaviour against a
cluster is the contract suite, which runs when ILP_ES_URL is set.
"""

import socket
import time

import pytest

from ilp_ray.errors import ConfigError, DataError
from ilp_ray.evidence.config import ElasticsearchConfig, EvidenceConfig, IndexConfig
from ilp_ray.evidence.index import EvidenceError, open_index

SECRET = "s3cr3t-api-key-DO-NOT-LOG"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


def es_cfg(**kw) -> IndexConfig:
    es = ElasticsearchConfig(url=f"http://127.0.0.1:{closed_port()}", request_timeout_s=1.0, **kw)
    return IndexConfig(backend="elasticsearch", location="corpus", elasticsearch=es)


def test_unreachable_cluster_fails_fast_naming_the_url(monkeypatch):
    monkeypatch.setenv("ILP_ES_API_KEY", SECRET)
    cfg = es_cfg()
    t0 = time.monotonic()
    with pytest.raises(EvidenceError) as e:
        open_index(cfg)
    assert time.monotonic() - t0 < 15  # a hang would be the bug; the limit is generous on purpose
    assert cfg.elasticsearch.url in str(e.value) and "unreachable" in str(e.value)
    assert SECRET not in str(e.value) and SECRET not in repr(e.value)


def test_secret_is_never_in_the_config_repr(monkeypatch, tmp_path):
    monkeypatch.setenv("ILP_ES_PASSWORD", SECRET)
    cred = tmp_path / "es.cred"
    cred.write_text(f"user:{SECRET}\n")
    cfg = EvidenceConfig(data="x.jsonl", index=es_cfg(credentials_file=str(cred)))
    for text in (repr(cfg), str(cfg), cfg.model_dump_json()):
        assert SECRET not in text


def test_credentials_file_errors_name_the_file_not_the_content(tmp_path):
    from ilp_ray.evidence.es_index import _auth

    cfg = ElasticsearchConfig(credentials_file=str(tmp_path / "missing"), api_key_env="NOPE_A",
                              user_env="NOPE_U", password_env="NOPE_P")
    with pytest.raises(DataError, match="missing"):
        _auth(cfg)
    f = tmp_path / "key"
    f.write_text(SECRET + "\n")
    assert _auth(cfg.model_copy(update={"credentials_file": str(f)})) == {"api_key": SECRET}
    f.write_text(f"elastic:{SECRET}\n")
    assert _auth(cfg.model_copy(update={"credentials_file": str(f)})) == {"basic_auth": ("elastic", SECRET)}


def test_env_api_key_wins(monkeypatch):
    from ilp_ray.evidence.es_index import _auth

    monkeypatch.setenv("ILP_ES_API_KEY", SECRET)
    monkeypatch.setenv("ILP_ES_USER", "u")
    monkeypatch.setenv("ILP_ES_PASSWORD", "p")
    assert _auth(ElasticsearchConfig()) == {"api_key": SECRET}


def test_config_checks_name_the_field(tmp_path):
    from ilp_ray.config import load_config

    p = tmp_path / "ev.yaml"
    p.write_text("data: x.jsonl\nindex:\n  elasticsearch:\n    url: localhost:9200\n")
    with pytest.raises(ConfigError) as e:
        load_config(EvidenceConfig, p)
    assert "index.elasticsearch.url" in str(e.value) and ":4" in str(e.value)
    with pytest.raises(ConfigError, match=r"chunk\.overlap"):
        from ilp_ray.evidence.config import CorpusConfig

        load_config(CorpusConfig, None, {"chunk.words": 10, "chunk.overlap": 10})


def test_bad_index_name_is_rejected_before_connecting():
    cfg = es_cfg().model_copy(update={"location": "Bad_Name"})
    with pytest.raises(DataError, match="index name"):
        open_index(cfg)


def test_unknown_backend_suggests():
    from ilp_ray.evidence.index import INDEXES

    with pytest.raises(KeyError, match=r"Did you mean 'tantivy'\?"):
        INDEXES.get("tantivi")
