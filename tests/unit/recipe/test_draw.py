"""The draw: exact counts, eval and train disjoint by content (across sources), weights on train only, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from padprep.recipe.draw import content_key, draw_all
from padprep.recipe.spec import EvalSplit, RecipeError, Source


def _keys(n: int, repeats: int = 1, offset: int = 0) -> np.ndarray:
    return np.repeat(np.arange(offset, offset + n, dtype=np.uint64), repeats)


def test_count_fraction_and_weights_give_exact_numbers():
    sources = [
        Source(("a",), "sources[0]", count=30),
        Source(("b",), "sources[1]", fraction=0.5),
        Source(("c",), "sources[2]", weight=2.5),
    ]
    a, b, c = draw_all([_keys(100), _keys(40, offset=1000), _keys(10, offset=2000)], sources, None, seed=1)
    assert (a.sampled, int(a.train.sum()), int((a.train > 0).sum())) == (30, 30, 30)
    assert (b.sampled, int(b.train.sum())) == (20, 20)
    assert int(c.train.sum()) == 25 and sorted(np.bincount(c.train)[2:].tolist()) == [5, 5]  # 5 twice, 5 three times


def test_eval_is_disjoint_from_train_by_content_and_holds_each_once():
    dup = _keys(50, repeats=3)  # every conversation three times
    shared = np.concatenate([_keys(20), _keys(20, offset=500)])  # a second source that holds 20 of the first's
    draws = draw_all([dup, shared], [Source(("a",), "s0"), Source(("b",), "s1", weight=2)], EvalSplit(fraction=0.2), seed=7)
    train = {int(k) for d, keys in zip(draws, [dup, shared]) for k in keys[d.train > 0]}
    held = [int(k) for d, keys in zip(draws, [dup, shared]) for k in keys[d.eval > 0]]
    assert held and not train & set(held)
    assert len(held) == len(set(held))  # each held-out conversation once
    assert int(draws[1].train.max()) == 2 and int(draws[1].eval.max()) == 1  # weights never reach eval


def test_the_seed_changes_only_the_draw():
    keys, src = [_keys(200)], [Source(("a",), "s0", count=50)]
    one, same, other = (draw_all(keys, src, EvalSplit(count=5), seed=s)[0] for s in (1, 1, 2))
    assert np.array_equal(one.train, same.train) and np.array_equal(one.eval, same.eval)
    assert not np.array_equal(one.train, other.train)
    assert one.counts() == other.counts()


def test_the_split_follows_content_not_position():
    """The same conversations in another order are held out the same."""
    keys = _keys(60)
    first = draw_all([keys], [Source(("a",), "s0")], EvalSplit(count=6), seed=3)[0]
    moved = draw_all([keys[::-1].copy()], [Source(("a",), "s0")], EvalSplit(count=6), seed=3)[0]
    assert set(keys[first.eval > 0].tolist()) == set(keys[::-1][moved.eval > 0].tolist())


def test_counts_the_data_cannot_give_are_errors_naming_the_size():
    with pytest.raises(RecipeError, match=r"r.yaml: s0.count: 300 is more than the source holds \(110 records in a\)"):
        draw_all([_keys(110)], [Source(("a",), "s0", count=300)], None, 0, "r.yaml")
    with pytest.raises(RecipeError, match=r"r.yaml: eval: 10 held-out conversations is not less than the 10 distinct"):
        draw_all([_keys(10, repeats=4)], [Source(("a",), "s0")], EvalSplit(count=10), 0, "r.yaml")


def test_content_key_ignores_key_order_and_spacing():
    assert content_key('{"messages": [1, 2]}') == content_key('{ "messages":[1,2] }')
    assert content_key('{"messages": [1, 2]}') != content_key('{"messages": [2, 1]}')
    assert content_key("not json") == content_key("not json") and content_key(None, b"\xff") != content_key(None, b"\xfe")
