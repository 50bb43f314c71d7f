"""Half-Space Trees laid out as flat arrays: score and learn one input or many at once.

Half-Space Trees (Tan, Ting & Liu, IJCAI 2011; the algorithm behind River's
``anomaly.HalfSpaceTrees``) are random binary trees over the unit cube. Each
node counts the inputs that reached it during the current *mass window*
(``l_mass``) and during the previous one (``r_mass``, the reference); an
input's score is the reference mass along its path, each depth weighted by
``2 ** depth``, stopping below a size limit, normalised and flipped so that
inputs in sparse regions score close to 1.

:class:`HalfSpaceForest` keeps the trees as arrays (complete binary trees in
heap order: the children of node ``i`` are ``2i + 1`` and ``2i + 2``), so a
batch of inputs is scored with a few numpy operations per depth and learned
with one ``bincount``; a single input walks Python lists, as cheaply as River
does. Learning is buffered: masses are only ever read at a window pivot, so
the buffered inputs are counted when the window fills (or on :meth:`flush`)
and every score is exactly what learning input by input would give.

The trees are grown as River grows them, so for the same seed and inputs
that have every feature, the scores are exactly River's
(``tests/test_hst.py`` checks it). A split on a feature the input lacks
(``NaN``) follows the child with the larger reference mass (the left one on a
tie), where River follows the larger mass of the current window: scores then
do not depend on what the current window has learned so far.

This module imports only numpy and :mod:`modelog.models.errors`.

Examples
--------
>>> import random
>>> rng = random.Random(0)
>>> forest = HalfSpaceForest(n_trees=10, height=6, window_size=100, seed=1)
>>> forest.build(["x", "y"])
>>> for _ in range(300):
...     _ = forest.learn_one([rng.random() * 0.2 + 0.4, rng.random() * 0.2 + 0.4])
>>> forest.first_window
False
>>> inside = forest.score_one([0.5, 0.5])
>>> outside = forest.score_one([0.95, 0.05])
>>> inside < 0.5 < outside
True
>>> batch = forest.score_many(np.array([[0.5, 0.5], [0.95, 0.05]]))
>>> [round(s, 12) for s in batch.tolist()] == [round(inside, 12), round(outside, 12)]
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError
from modelog.models.pickled import assign_state, instance_state

__all__ = ["MAX_NODES", "HalfSpaceForest"]

MAX_NODES = 2 ** 20
"""Most nodes of a forest, all trees together (the default, 10 trees of height 8, has
5,110): the arrays and the Python build grow with them."""


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class HalfSpaceForest:
    """Half-Space Trees over a fixed list of features scaled to ``[0, 1]``.

    Parameters
    ----------
    n_trees
        Number of trees.
    height
        Depth of every tree (a tree has ``2 ** (height + 1) - 1`` nodes).
    window_size
        Inputs learned per mass window; the reference masses pivot when it fills.
    seed
        Seed of the trees' random splits.
    padding
        Share of a node's range on either side where no split falls (River's 0.15).

    Examples
    --------
    >>> f = HalfSpaceForest(n_trees=2, height=3, window_size=4, seed=0)
    >>> f.build(["a"])
    >>> f.score_one([0.5])  # no reference window yet
    0.0
    >>> for v in (0.1, 0.2, 0.3, 0.4):
    ...     _ = f.learn_one([v])
    >>> f.first_window, f.counter
    (False, 0)
    """

    def __init__(self, n_trees: int = 10, height: int = 8, window_size: int = 250,
                 seed: int | None = None, padding: float = 0.15) -> None:
        for name, value, ok, rule in (
                ("n_trees", n_trees, n_trees >= 1, "must be >= 1"),
                ("height", height, 1 <= height <= 20, "must be between 1 and 20"),
                ("window_size", window_size, window_size >= 1, "must be >= 1"),
                ("padding", padding, 0.0 <= padding < 0.5, "must be in [0, 0.5)")):
            if not ok:
                raise InvalidParameterError("HalfSpaceForest", name, value, rule)
        if n_trees * (2 ** (height + 1) - 1) > MAX_NODES:
            raise InvalidParameterError(
                "HalfSpaceForest", "n_trees", n_trees,
                f"with height {height}, n_trees x (2^(height+1) - 1) nodes must be at most "
                f"{MAX_NODES:,} (memory and build time); use fewer or shallower trees")
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.padding = padding
        self.features: tuple[str, ...] = ()
        self.counter = 0  # inputs learned in the current window, the buffered ones included
        self.first_window = True
        self.n_nodes: int = 2 ** (height + 1) - 1
        size = n_trees * self.n_nodes
        self._offsets = np.arange(n_trees, dtype=np.int64) * self.n_nodes
        self._feature = np.zeros(size, dtype=np.int64)
        self._threshold = np.zeros(size, dtype=float)
        self._r_mass = np.zeros(size, dtype=np.int64)
        self._l_mass = np.zeros(size, dtype=np.int64)
        #: The trees as lists for :meth:`score_one` (``None``: made on its next call).
        self._lists: tuple[list[int], list[float], list[int]] | None = None
        #: Path mass sums per node for :meth:`score_many` (``None``: made on its next call).
        self._totals: np.ndarray | None = None
        self._buffer: list[Sequence[float]] = []

    @property
    def built(self) -> bool:
        """Whether the trees exist (:meth:`build` was called)."""
        return bool(self.features)

    @property
    def size_limit(self) -> float:
        """Reference mass under which a path stops counting (a tenth of the window)."""
        return 0.1 * self.window_size

    @property
    def max_score(self) -> int:
        """The largest mass sum a path can collect (the score's normaliser)."""
        return self.n_trees * self.window_size * self.n_nodes

    def build(self, features: Sequence[str]) -> None:
        """Grow the random trees over ``features`` (once; each ranges over ``[0, 1]``)."""
        if self.built:
            return
        if not features:
            raise InvalidParameterError("HalfSpaceForest", "features", list(features),
                                        "needs at least one feature")
        self.features = tuple(features)
        rng = random.Random(self.seed)
        n = len(self.features)
        for t in range(self.n_trees):
            self._grow(rng, int(self._offsets[t]), 0, 0, [(0.0, 1.0)] * n)
        self._lists = self._totals = None

    def _grow(self, rng: random.Random, base: int, node: int, depth: int,
              limits: list[tuple[float, float]]) -> None:
        if depth == self.height:
            return
        on = rng.choices(range(len(limits)), weights=[b - a for a, b in limits])[0]
        a, b = limits[on]
        at = rng.uniform(a + self.padding * (b - a), b - self.padding * (b - a))
        self._feature[base + node] = on
        self._threshold[base + node] = at
        left = list(limits)
        left[on] = (a, at)
        self._grow(rng, base, 2 * node + 1, depth + 1, left)
        right = list(limits)
        right[on] = (at, b)
        self._grow(rng, base, 2 * node + 2, depth + 1, right)

    # -- scoring -------------------------------------------------------------------------
    def score_one(self, row: Sequence[float]) -> float:
        """Score of one scaled input (``row`` in :attr:`features` order, NaN if missing)."""
        if self.first_window:
            return 0.0
        lists = self._lists
        if lists is None:
            lists = self._lists = (self._feature.tolist(), self._threshold.tolist(),
                                   self._r_mass.tolist())
        feature, threshold, r_mass = lists
        limit = self.size_limit
        height = self.height
        total = 0
        for base in range(0, self.n_trees * self.n_nodes, self.n_nodes):
            node = 0
            weight = 1
            for _ in range(height):
                r = r_mass[base + node]
                total += r * weight
                if r < limit:
                    break
                i = base + node
                v = row[feature[i]]
                if v < threshold[i]:
                    node = 2 * node + 1
                elif v >= threshold[i]:
                    node = 2 * node + 2
                else:  # NaN: the heavier reference side
                    node = 2 * node + (1 if r_mass[base + 2 * node + 1]
                                       >= r_mass[base + 2 * node + 2] else 2)
                weight <<= 1
            else:
                total += r_mass[base + node] * weight
        return 1.0 - total / self.max_score

    def score_many(self, rows: np.ndarray) -> np.ndarray:
        """Scores of scaled inputs (inputs x features, NaN if missing), as :meth:`score_one`."""
        n = rows.shape[0]
        if self.first_window or n == 0:
            return np.zeros(n)
        sums: np.ndarray = self._leaf_totals().take(self.leaves(rows)).sum(axis=0)
        return 1.0 - sums / self.max_score

    def leaves(self, rows: np.ndarray) -> np.ndarray:
        """Each input's leaf in each tree (trees x inputs; node numbers of the forest).

        A missing value (NaN) goes to the side the reference window holds more
        of, so the leaves of such inputs depend on the current reference.
        """
        rows = np.ascontiguousarray(rows, dtype=float)
        n, width = rows.shape
        flat = rows.ravel()
        starts = (np.arange(n, dtype=np.int64) * width)[None, :]
        offsets = self._offsets[:, None]
        feature, threshold = self._feature, self._threshold
        missing = bool(np.isnan(flat).any())
        node = np.zeros((self.n_trees, n), dtype=np.int64)
        for _ in range(self.height):
            at = offsets + node
            values = flat.take(starts + feature.take(at))
            right = values >= threshold.take(at)
            if missing:
                gaps = np.isnan(values)
                if gaps.any():
                    r_mass = self._r_mass
                    heavier_right = r_mass.take(at + node + 1) < r_mass.take(at + node + 2)
                    right = np.where(gaps, heavier_right, right)
            node = 2 * node + 1 + right
        leaves: np.ndarray = offsets + node
        return leaves

    def _leaf_totals(self) -> np.ndarray:
        """Per node, the mass sum of the path from its tree's root to it (leaves only are read).

        A path collects ``r_mass * 2**depth`` at each node and stops after the
        first node whose reference mass is under :attr:`size_limit`, as
        :meth:`score_one` walks it. Made once per reference window.
        """
        totals = self._totals
        if totals is None:
            r_mass = self._r_mass
            limit = self.size_limit
            height = self.height
            first_leaf = 2 ** height - 1
            leaf = np.arange(first_leaf, 2 * first_leaf + 1, dtype=np.int64)[None, :]
            offsets = self._offsets[:, None]
            total = np.zeros((self.n_trees, leaf.shape[1]), dtype=np.int64)
            alive = np.ones(total.shape, dtype=bool)
            for depth in range(height + 1):
                r = r_mass.take(offsets + ((leaf + 1) >> (height - depth)) - 1)
                total += np.where(alive, r << depth, 0)
                alive &= r >= limit
            totals = np.zeros_like(r_mass)
            totals[(offsets + leaf).ravel()] = total.ravel()
            self._totals = totals
        return totals

    # -- learning ------------------------------------------------------------------------
    def learn_one(self, row: Sequence[float]) -> bool:
        """Learn one scaled input; whether the window pivoted (the reference changed)."""
        self._buffer.append(row)
        self.counter += 1
        if self.counter < self.window_size:
            return False
        self._pivot()
        return True

    def learn_many(self, rows: np.ndarray) -> int:
        """Learn scaled inputs in order; how many window pivots happened."""
        pivots = 0
        start = 0
        while start < rows.shape[0]:
            take = min(rows.shape[0] - start, self.window_size - self.counter)
            self._buffer.extend(rows[start:start + take])
            self.counter += take
            start += take
            if self.counter == self.window_size:
                self._pivot()
                pivots += 1
        return pivots

    def flush(self) -> None:
        """Count the buffered inputs into the current window's masses now."""
        if not self._buffer:
            return
        rows = np.asarray(self._buffer, dtype=float).reshape(len(self._buffer), -1)
        self._buffer = []
        leaves = self.leaves(rows)
        offsets = self._offsets[:, None]
        height = self.height
        # every node on each path: the ancestors of its leaf (heap order: (i + 1) >> k, - 1)
        local = leaves - offsets + 1
        visited = [offsets + (local >> (height - depth)) - 1 for depth in range(height + 1)]
        self._l_mass += np.bincount(np.concatenate([v.ravel() for v in visited]),
                                    minlength=self._l_mass.size)

    def _pivot(self) -> None:
        self.flush()
        self._r_mass = self._l_mass
        self._l_mass = np.zeros_like(self._r_mass)
        self.counter = 0
        self.first_window = False
        self._lists = self._totals = None

    def __getstate__(self) -> dict[str, object]:
        self.flush()
        state = instance_state(self)
        state["_lists"] = state["_totals"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        assign_state(self, state)
        self._lists = self._totals = None

    def __repr__(self) -> str:
        return (f"HalfSpaceForest(n_trees={self.n_trees}, height={self.height}, "
                f"window_size={self.window_size}, seed={self.seed})")
