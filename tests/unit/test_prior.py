"""Prior pseudo-items: every distinct option text scored once, none lost, two options at least."""

import pytest

from ilp_ray.scoring.prior import CHUNK, is_prior_id, option_priors, prior_items, prior_lookup


@pytest.mark.parametrize("n", [1, 2, CHUNK, CHUNK + 1, 2 * CHUNK + 1, 97])
def test_every_text_once_in_items_of_two_options_or_more(n):
    texts = [f"t{i}" for i in range(n)]
    items = prior_items([texts[i:i + 3] for i in range(0, n, 3)] + [texts[:2]])  # repeats across items
    flat = [o for it in items for o in it.options]
    assert sorted(set(flat)) == sorted(texts) and (len(flat) == n or n == 1)
    assert all(len(it.options) >= 2 and it.question == "" and is_prior_id(it.id) for it in items)
    assert len({it.id for it in items}) == len(items)


def test_lookup_maps_scores_back_to_each_items_options():
    items = prior_items([["a", "b"], ["b", "c", "a"]])
    lookup = prior_lookup(items, [[-float(ord(o)) for o in it.options] for it in items])
    assert option_priors([["c", "a"], ["b"]], lookup) == [[-99.0, -97.0], [-98.0]]
    with pytest.raises(KeyError):
        option_priors([["zzz"]], lookup)
