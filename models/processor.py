"""The two small protocols of the pure core: processors and detectors.

A **processor** turns events into events. It is a pure function of the events it
has processed so far: no broker, no database, no clock it was not given. The
Kafka edge (:mod:`modelog.streams`) decodes records, hands each event to
:meth:`Processor.process`, writes what comes back and commits its positions;
a rebuild replays the log through a fresh processor and gets the same events
(every derived event has an id derived from its cause). The monitor
(:class:`~modelog.models.monitor.ServingMonitor`), the retrain trigger
(:class:`~modelog.models.retrain.RetrainTrigger`), the registry's single writer
(:class:`~modelog.models.registry.RegistryDecider`) and the online learner
(:class:`~modelog.models.online_models.OnlineModelProcessor`) all follow it.

:meth:`Processor.snapshot` and :meth:`Processor.restore` carry the state between
runs of the same service (a restart, a partition moving to another worker), so a
rebuild need not replay the whole history. A snapshot is the service's own local
state, written and read by modelog's services only: it never goes on the broker,
and nothing read from the broker is ever restored as a snapshot.

A **detector** follows River's protocol (``river.base.DriftDetector``):
hyperparameters in the constructor, ``update(x)`` once per observation, then
``drift_detected`` says whether that observation completed a detection and
:attr:`Detector.findings` holds the evidence.

Examples
--------
A processor that counts predictions per model and reports every 2nd one:

>>> import datetime as dt
>>> from modelog.models.events import PredictionMade, Event
>>> class Every2nd(SnapshotByPickle):
...     def __init__(self) -> None:
...         self.seen: dict[str, int] = {}
...     def process(self, event: Event) -> list[Event]:
...         if not isinstance(event, PredictionMade):
...             return []
...         n = self.seen[event.model] = self.seen.get(event.model, 0) + 1
...         return [event] if n % 2 == 0 else []
>>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
>>> p = Every2nd()
>>> events = [PredictionMade(id=f"p{i}", time=t, aggregate="churn", prediction_id=f"p{i}",
...                          model="churn", model_version=1, inputs={"x": i}, output=0)
...           for i in range(5)]
>>> [e.id for e in p.process_many(events)]
['p1', 'p3']
>>> q = Every2nd()
>>> q.restore(p.snapshot())
>>> q.seen
{'churn': 5}
>>> isinstance(p, Processor)
True
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from modelog.models.events import Event
from modelog.models.pickled import assign_state, instance_state

__all__ = ["Detector", "Processor", "SnapshotByPickle", "process_all"]


@runtime_checkable
class Processor(Protocol):
    """Events in, events out, with a state that can be saved and restored."""

    def process(self, event: Event) -> list[Event]:
        """Take one event; return the events it causes (often none)."""
        ...

    def process_many(self, events: Iterable[Event]) -> list[Event]:
        """:meth:`process` each event in order; the outputs concatenated."""
        ...

    def snapshot(self) -> bytes:
        """The state, as bytes that :meth:`restore` of a fresh instance accepts."""
        ...

    def restore(self, data: bytes) -> None:
        """Continue from a :meth:`snapshot` (taken by the same kind of processor)."""
        ...


def process_all(processor: Processor, events: Iterable[Event]) -> list[Event]:
    """Feed ``events`` one by one; the concatenated outputs (the default ``process_many``)."""
    out: list[Event] = []
    for event in events:
        out.extend(processor.process(event))
    return out


class SnapshotByPickle:
    """``process_many``, ``snapshot`` and ``restore`` for a processor whose state is its attributes.

    The snapshot is a pickle of the instance's attributes (River estimators
    included) but those named in :attr:`not_state` (collaborators such as a
    clock, kept as they are on restore). It is local state of the service that
    took it -- written to the service's own data directory, never to the
    broker -- so no producer can make a processor load one.
    """

    not_state: ClassVar[tuple[str, ...]] = ()

    def process(self, event: Event) -> list[Event]:  # pragma: no cover - the subclass's
        raise NotImplementedError

    def process_many(self, events: Iterable[Event]) -> list[Event]:
        """:meth:`process` each event in order; the outputs concatenated."""
        out: list[Event] = []
        for event in events:
            out.extend(self.process(event))
        return out

    def snapshot(self) -> bytes:
        """The instance's attributes, pickled (local state only: never on the broker)."""
        state = {k: v for k, v in instance_state(self).items() if k not in self.not_state}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot` this service took itself."""
        state: dict[str, Any] = pickle.loads(data)  # the service's own snapshot only
        assign_state(self, {k: v for k, v in state.items() if k not in self.not_state})


@runtime_checkable
class Detector(Protocol):
    """River's drift-detector protocol: ``update`` one observation, then ask.

    ``drift_detected`` is true when the last :meth:`update` completed a
    detection; :attr:`findings` then holds its evidence (one entry per thing
    detected: a decision, a feature check, a skew finding), empty otherwise.
    """

    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` completed a detection."""
        ...

    @property
    def findings(self) -> Sequence[Any]:
        """The evidence of what the last :meth:`update` detected (empty if nothing)."""
        ...

    def update(self, x: Any) -> None:
        """Learn one observation."""
        ...
