"""Our Elasticsearch client code against a tiny local HTTP stub: bulk backoff and item retries,
the missing-index error, msearch parsing. This tests our code's handling of the responses, not
Elasticsearch; the backend's real behaviour is the contract suite (``ILP_ES_URL``)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from ilp_ray.evidence.config import ElasticsearchConfig, IndexConfig
from ilp_ray.evidence.index import EvidenceError, Passage, open_index


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bulk_calls: ClassVar[list] = []
    reject_first: ClassVar[int] = 0  # how many first bulk items get a 429 on the first call
    index_exists: ClassVar[bool] = True
    bodies: ClassVar[list] = []  # (method, path, body text) of every request with a body

    def _send(self, code, obj=None):
        out = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(code)
        self.send_header("X-Elastic-Product", "Elasticsearch")  # the 9.x client checks it
        self.send_header("Content-Type", "application/vnd.elasticsearch+json; compatible-with=9")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_HEAD(self):
        self._send(200 if type(self).index_exists else 404)

    def do_GET(self):
        if self.path == "/":
            return self._send(200, {"version": {"number": "9.0.0"}, "tagline": "You Know, for Search"})
        if not type(self).index_exists:
            return self._send(404, {"error": {"type": "index_not_found_exception"}, "status": 404})
        self._send(200, {"count": 2})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        type(self).bodies.append((self.command, self.path, body))
        if "/_count" in self.path:
            return self.do_GET()
        if "/_bulk" in self.path:
            lines = [json.loads(x) for x in body.splitlines() if x.strip()]
            ids = [a["index"]["_id"] for a in lines[::2]]
            type(self).bulk_calls.append(ids)
            first = len(type(self).bulk_calls) == 1
            items = [{"index": {"_id": i, "status": 429 if first and n < type(self).reject_first else 201,
                                **({"error": {"type": "es_rejected_execution_exception"}}
                                   if first and n < type(self).reject_first else {})}}
                     for n, i in enumerate(ids)]
            return self._send(200, {"errors": any(x["index"]["status"] >= 300 for x in items), "items": items})
        if "/_msearch" in self.path:
            hit = {"_id": "p1", "_score": 2.5, "_source": {"doc_id": "d1", "text": "Paris is the capital."}}
            return self._send(200, {"responses": [{"hits": {"hits": [hit]}, "status": 200}]})
        self._send(200, {"acknowledged": True})

    do_PUT = do_POST  # the client sends bulk as PUT

    def log_message(self, *a):
        pass


@pytest.fixture
def stub():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Stub.bulk_calls, _Stub.reject_first, _Stub.index_exists, _Stub.bodies = [], 0, True, []
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def cfg(url, **kw):
    return IndexConfig(backend="elasticsearch", location="corpus",
                       elasticsearch=ElasticsearchConfig(url=url, backoff_s=0.01, **kw))


def test_bulk_resends_only_rejected_items_with_content_ids(stub):
    _Stub.reject_first = 2
    ps = [Passage.make(f"d{i}", f"text {i}") for i in range(5)]
    with open_index(cfg(stub)) as ix:
        assert ix.add(ps) == 5
    assert _Stub.bulk_calls[0] == [p.id for p in ps]
    assert _Stub.bulk_calls[1] == [p.id for p in ps[:2]]  # only the two 429s, same _id


def test_bulk_gives_up_after_retries(stub):
    _Stub.reject_first = 5
    with open_index(cfg(stub, bulk_retries=0)) as ix, pytest.raises(EvidenceError, match="kept failing after 0"):
        ix.add([Passage.make("d", "t")])


def test_search_parses_msearch_and_skips_empty_queries(stub):
    with open_index(cfg(stub)) as ix:
        res = ix.search(["capital of France", "??"], k=3)
    assert res[1] == [] and res[0][0].doc_id == "d1" and res[0][0].score == 2.5


def test_missing_index_is_named(stub):
    _Stub.index_exists = False
    with pytest.raises(EvidenceError, match="no elasticsearch index 'corpus'"):
        open_index(cfg(stub), must_exist=True)
    with open_index(cfg(stub)) as ix, pytest.raises(EvidenceError, match="'corpus' does not exist"):
        ix.count()


def test_dense_mapping_and_knn_clause(stub):
    """dense: a dense_vector mapping at creation, vectors in bulk, a kNN clause beside multi_match."""
    _Stub.index_exists = False
    with open_index(cfg(stub, dense=True, analyzer="standard", shards=2)) as ix:
        ix.add([Passage.make("d1", "Paris is the capital of France.")])
        ix.search(["capital of France"], k=7)
    create = next(json.loads(b) for m, p, b in _Stub.bodies if m == "PUT" and p.startswith("/corpus"))
    assert create["mappings"]["properties"]["vector"] == {"type": "dense_vector", "dims": 384, "index": True,
                                                          "similarity": "cosine"}
    assert create["mappings"]["properties"]["text"]["analyzer"] == "standard"
    assert create["settings"]["number_of_shards"] == 2
    bulk = next(b for m, p, b in _Stub.bodies if "/_bulk" in p).splitlines()
    assert len(json.loads(bulk[1])["vector"]) == 384
    search = [json.loads(x) for x in next(b for m, p, b in _Stub.bodies if "/_msearch" in p).splitlines()]
    assert search[1]["query"]["multi_match"]["query"] == "capital of france" and search[1]["size"] == 7
    assert search[1]["knn"]["k"] == 7 and len(search[1]["knn"]["query_vector"]) == 384
