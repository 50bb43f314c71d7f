"""Labels that arrive before their prediction, held until it comes.

Two services often log one model's traffic: the application logs the prediction,
another system the ground truth. Keyed by model, both land on one partition in the
order they were produced -- and a label produced a moment before its prediction
(a race between the two, a backfill that loads the labels first) would find no
prediction to join and count as an orphan, its information lost.

:class:`EarlyLabels` holds such labels, per model, until their prediction comes
(:meth:`release`); the monitoring worker then processes the label right after the
prediction, as if it had come second. What is held is bounded: at most ``max_held``
labels per model and none more than ``ttl`` (event time) older than the newest held
one; a label pushed out (:meth:`hold` returns it) goes on as an orphan, counted where
it is processed. Pure state, ordered by arrival: a replay holds and releases the same
labels at the same points, so a rebuilt worker equals the live one.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import LabelObserved, PredictionMade
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> early = EarlyLabels(max_held=2)
>>> def label(i):
...     return LabelObserved(id=f"l{i}", time=t0, aggregate="churn", prediction_id=f"p{i}",
...                          model="churn", label=1)
>>> [early.hold(label(i)) for i in range(2)], len(early)
([[], []], 2)
>>> [lab.prediction_id for lab in early.hold(label(2))]  # the oldest is pushed out: an orphan
['p0']
>>> p1 = PredictionMade(id="e1", time=t0, aggregate="churn", prediction_id="p1",
...                     model="churn", model_version=1, inputs={}, output=1)
>>> early.release(p1).id, early.release(p1), len(early)
('l1', None, 1)
"""

from __future__ import annotations

import collections
import datetime as dt

from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError
from modelog.models.events import LabelObserved, PredictionMade

__all__ = ["EarlyLabels"]


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class EarlyLabels:
    """Labels held, per model, until their prediction comes (see the module).

    Parameters
    ----------
    max_held
        Most labels held per model; the oldest is pushed out first.
    ttl
        A held label more than this (event time) older than the newest one held for
        its model is pushed out.
    """

    def __init__(self, max_held: int = 10_000,
                 ttl: dt.timedelta = dt.timedelta(days=1)) -> None:
        if max_held < 1:
            raise InvalidParameterError("EarlyLabels", "max_held", max_held, "must be >= 1")
        self.max_held = max_held
        self.ttl = ttl
        self._held: dict[str, collections.OrderedDict[str, LabelObserved]] = {}
        self._count = 0
        #: Labels released to their prediction so far.
        self.released = 0

    def __len__(self) -> int:
        return self._count

    def hold(self, label: LabelObserved) -> list[LabelObserved]:
        """Hold ``label``; the labels pushed out by it, oldest first (orphans from now on).

        A second label for a prediction id already held is not held: it is returned
        (it goes on as the duplicate or orphan it is).
        """
        held = self._held.get(label.model)
        if held is None:
            held = self._held[label.model] = collections.OrderedDict()
        if label.prediction_id in held:
            return [label]
        held[label.prediction_id] = label
        self._count += 1
        out: list[LabelObserved] = []
        while len(held) > self.max_held:
            out.append(held.popitem(last=False)[1])
        newest = label.time
        while held:
            first = next(iter(held.values()))
            if newest - first.time <= self.ttl:
                break
            out.append(held.popitem(last=False)[1])
        self._count -= len(out)
        return out

    def release(self, prediction: PredictionMade) -> LabelObserved | None:
        """The held label of ``prediction``, if any (no longer held)."""
        held = self._held.get(prediction.model)
        if not held:
            return None
        label = held.pop(prediction.prediction_id, None)
        if label is not None:
            self._count -= 1
            self.released += 1
        return label
