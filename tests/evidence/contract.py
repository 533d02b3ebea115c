"""The ``CorpusIndex`` contract, run against every backend.

Each test takes ``make_index``: a factory ``make_index() -> CorpusIndex`` that opens the *same*
location every time it is called within one test (so reopening is tested), supplied by the
backend-parametrised fixture in ``test_contract.py``.
"""

import pytest

from ilp_ray.evidence.index import CorpusIndex, Hit, Passage

DOCS = [
    ("paris", "Paris is the capital and largest city of France."),
    ("tokyo", "Tokyo is the capital of Japan and its most populous city."),
    ("honey", "Bees make honey from the nectar of flowers."),
    ("mars", "Mars is called the red planet because of iron oxide on its surface."),
    ("gold", "The chemical symbol for gold is Au, from the Latin aurum."),
]
PASSAGES = [Passage.make(d, t) for d, t in DOCS]


def _filled(make_index) -> CorpusIndex:
    ix = make_index()
    assert ix.add(PASSAGES) == len(PASSAGES)
    ix.commit()
    return ix


def test_add_commit_count(make_index):
    ix = _filled(make_index)
    assert ix.count() == len(PASSAGES)
    assert ix.exists()
    ix.close()


def test_search_ranks_the_relevant_passage_first(make_index):
    ix = _filled(make_index)
    res = ix.search(["capital of Japan", "what do bees make", "symbol for gold"], k=3)
    assert [r[0].doc_id for r in res] == ["tokyo", "honey", "gold"]
    top = res[0][0]
    assert isinstance(top, Hit) and top.id == PASSAGES[1].id and top.text == DOCS[1][1]
    for hits in res:
        assert 1 <= len(hits) <= 3
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    ix.close()


def test_batch_semantics_empty_and_syntax_queries(make_index):
    ix = _filled(make_index)
    res = ix.search(["", "?!", 'capital AND ("France" OR field:x) [', "zzzqqq"], k=2)
    assert len(res) == 4
    assert res[0] == [] and res[1] == [] and res[3] == []
    assert res[2][0].doc_id == "paris"  # operators and quotes are plain words, not syntax
    assert ix.search([], k=5) == []
    with pytest.raises(ValueError, match="k must be >= 1"):
        ix.search(["paris"], k=0)
    ix.close()


def test_readding_is_idempotent(make_index):
    ix = _filled(make_index)
    assert ix.add(PASSAGES[:3]) == 3  # re-sent, as a resumed ingest does
    ix.commit()
    assert ix.count() == len(PASSAGES)
    hits = ix.search(["capital of France"], k=10)[0]
    assert sum(h.doc_id == "paris" for h in hits) == 1
    ix.close()


def test_reopening_sees_committed_data(make_index):
    _filled(make_index).close()
    again = make_index()
    assert again.exists() and again.count() == len(PASSAGES)
    assert again.search(["red planet"], k=1)[0][0].doc_id == "mars"
    again.add([Passage.make("new", "Nairobi is the capital of Kenya.")])
    again.commit()
    assert again.count() == len(PASSAGES) + 1
    again.close()


def test_passage_ids_come_from_content():
    a = Passage.make("d", "same text", 0)
    assert a.id == Passage.make("d", "same text", 0, source="elsewhere.jsonl").id
    assert a.id != Passage.make("d", "same text", 1).id
    assert a.id != Passage.make("e", "same text", 0).id
    assert len(a.id) == 40
