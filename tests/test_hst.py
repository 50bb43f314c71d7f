"""Half-Space Trees as arrays: one input or many give the same scores and the same trees."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from modelog.models.errors import InvalidParameterError
from modelog.models.hst import HalfSpaceForest


def _rows(n: int, seed: int, missing: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.clip(rng.normal(0.5, 0.12, size=(n, 3)), 0.0, 1.0)
    rows[rng.random(size=rows.shape) < missing] = np.nan
    return rows


def test_batch_scores_equal_one_by_one_scores_missing_features_included() -> None:
    forest = HalfSpaceForest(n_trees=8, height=7, window_size=200, seed=3)
    forest.build(["a", "b", "c"])
    forest.learn_many(_rows(450, seed=1))
    assert not forest.first_window
    probe = _rows(300, seed=2, missing=0.2)
    probe[:5] = [[0.99, 0.01, 0.5], [np.nan] * 3, [0.5, 0.5, 0.5], [0.0, 1.0, np.nan],
                 [0.2, np.nan, 0.8]]
    batch = forest.score_many(probe).tolist()
    one = [forest.score_one(row.tolist()) for row in probe]
    assert batch == one
    assert min(one) >= 0.0 and max(one) <= 1.0
    assert one[0] > one[2]  # a corner of the cube is sparser than its centre


def test_learning_in_batches_equals_learning_one_by_one() -> None:
    rows = _rows(1_337, seed=4)
    one = HalfSpaceForest(n_trees=5, height=6, window_size=128, seed=9)
    many = HalfSpaceForest(n_trees=5, height=6, window_size=128, seed=9)
    one.build(["a", "b", "c"])
    many.build(["a", "b", "c"])
    pivots = sum(one.learn_one(row.tolist()) for row in rows)
    assert pivots == 1_337 // 128
    assert sum(many.learn_many(rows[i:i + 300]) for i in range(0, 1_337, 300)) == pivots
    one.flush()
    many.flush()
    assert one.counter == many.counter == 1_337 % 128
    probe = _rows(200, seed=5)
    assert one.score_many(probe).tolist() == many.score_many(probe).tolist()
    assert np.array_equal(one._l_mass, many._l_mass) and np.array_equal(one._r_mass,
                                                                        many._r_mass)
    # every learned input adds one to a root and to one node per depth
    assert int(one._l_mass[0]) == 1_337 % 128
    assert int(one._r_mass.sum()) == 5 * 128 * 7


def test_a_pickled_forest_keeps_what_it_buffered() -> None:
    forest = HalfSpaceForest(n_trees=4, height=5, window_size=100, seed=1)
    forest.build(["a", "b", "c"])
    rows = _rows(250, seed=6)
    forest.learn_many(rows[:150])
    copy = pickle.loads(pickle.dumps(forest))
    forest.learn_many(rows[150:])
    copy.learn_many(rows[150:])
    probe = _rows(50, seed=7)
    assert copy.score_many(probe).tolist() == forest.score_many(probe).tolist()
    assert [copy.score_one(r.tolist()) for r in probe] == forest.score_many(probe).tolist()


def test_same_seed_same_trees_and_a_clear_error_for_bad_parameters() -> None:
    a, b = HalfSpaceForest(seed=11), HalfSpaceForest(seed=11)
    a.build(["x", "y"])
    b.build(["x", "y"])
    assert np.array_equal(a._threshold, b._threshold)
    assert a.features == ("x", "y") and a.built
    thresholds = a._threshold[a._threshold > 0]
    assert ((thresholds > 0.0) & (thresholds < 1.0)).all()
    for kwargs in ({"n_trees": 0}, {"height": 0}, {"height": 21}, {"window_size": 0},
                   {"padding": 0.5}):
        with pytest.raises(InvalidParameterError) as info:
            HalfSpaceForest(**kwargs)  # type: ignore[arg-type]
        assert next(iter(kwargs)) in str(info.value)
    with pytest.raises(InvalidParameterError, match="features"):
        HalfSpaceForest().build([])


def test_scores_separate_a_shifted_cluster_like_rivers_trees() -> None:
    rng = random.Random(0)
    forest = HalfSpaceForest(n_trees=10, height=8, window_size=250, seed=0)
    forest.build(["x", "y"])
    for _ in range(1_000):
        forest.learn_one([rng.gauss(0.3, 0.05), rng.gauss(0.3, 0.05)])
    normal = forest.score_many(np.array([[rng.gauss(0.3, 0.05), rng.gauss(0.3, 0.05)]
                                         for _ in range(200)]))
    shifted = forest.score_many(np.array([[rng.gauss(0.8, 0.05), rng.gauss(0.8, 0.05)]
                                          for _ in range(200)]))
    assert float(np.median(shifted)) > float(np.quantile(normal, 0.95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_trees_and_scores_as_rivers_half_space_trees(seed: int) -> None:
    """For the same seed and complete inputs, River's HalfSpaceTrees and these agree exactly."""
    from river import anomaly

    river = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=seed)
    forest = HalfSpaceForest(n_trees=10, height=8, window_size=250, seed=seed)
    forest.build(["a", "b", "c"])
    rng = random.Random(seed)
    for _ in range(1_600):
        x = {"a": rng.random(), "b": rng.gauss(0.5, 0.1), "c": rng.random()}
        river.learn_one(x)
        forest.learn_one([x["a"], x["b"], x["c"]])
    probe = [{"a": rng.random(), "b": rng.random(), "c": rng.random()} for _ in range(300)]
    rows = np.array([[x["a"], x["b"], x["c"]] for x in probe])
    expected = [river.score_one(x) for x in probe]
    assert [forest.score_one(r.tolist()) for r in rows] == expected
    assert forest.score_many(rows).tolist() == expected
