"""The one contract suite (``contract.py``) on every backend.

Elasticsearch runs only against a live cluster named by ``ILP_ES_URL``; nothing fakes it.
"""

import os
import uuid

import pytest

from tests.evidence.contract import *  # noqa: F403  (the contract tests themselves)

ES_SKIP = "set ILP_ES_URL to run against a live Elasticsearch cluster"


@pytest.fixture(params=["tantivy", "elasticsearch"])
def make_index(request, tmp_path):
    from ilp_ray.evidence.config import ElasticsearchConfig, IndexConfig
    from ilp_ray.evidence.index import open_index

    if request.param == "elasticsearch":
        url = os.environ.get("ILP_ES_URL")
        if not url:
            pytest.skip(ES_SKIP)
        cfg = IndexConfig(backend="elasticsearch", location=f"ilp-test-{uuid.uuid4().hex[:12]}",
                          elasticsearch=ElasticsearchConfig(url=url))
    else:
        cfg = IndexConfig(location=str(tmp_path / "index"))
    opened = []

    def make():
        ix = open_index(cfg)
        opened.append(ix)
        return ix

    yield make
    for ix in opened:
        ix.close()
    if request.param == "elasticsearch":
        cleanup = open_index(cfg)
        cleanup.delete()
        cleanup.close()
