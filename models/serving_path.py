"""One serving event through every processor of the worker, in order (its hot path).

The monitoring worker (:class:`~modelog.streams.worker.RecordRouter`) decodes a
serving record and hands the event to :func:`process_serving`; the events it
returns are what the worker publishes. This module holds only that fan-out and
the check of what the worker can monitor (:func:`unusable`), so that the
per-record path runs compiled from end to end (see ``setup.py``): no broker, no
clock, no I/O, the same result compiled or not.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.early_labels import EarlyLabels
>>> from modelog.models.events import LabelObserved, PredictionMade
>>> from modelog.models.monitor import ServingMonitor
>>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
>>> monitor, early = ServingMonitor(), EarlyLabels()
>>> label = LabelObserved(id="l1", time=t, aggregate="churn", prediction_id="p1",
...                       model="churn", label=1)
>>> prediction = PredictionMade(id="e1", time=t, aggregate="churn", prediction_id="p1",
...                             model="churn", model_version=1, inputs={"x": 1.0}, output=1)
>>> process_serving(label, 0, 0, monitor, early), len(early)  # early: held
([], 1)
>>> process_serving(prediction, 0, 1, monitor, early), len(early)  # then joined
([], 0)
>>> monitor.counters("churn")["labels"], monitor.rolling_error("churn", 1)
(1, 0.0)
>>> unusable(label) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

import msgspec

from modelog.models import codec
from modelog.models.early_labels import EarlyLabels
from modelog.models.errors import EventDecodeError
from modelog.models.events import Event, LabelObserved, PredictionMade
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import OUTPUT
from modelog.models.processor import Processor
from modelog.models.validation import INT_MAX, INT_MIN, INT_RULE, RESERVED_RULE

__all__ = ["OnlineProcessor", "decode_serving", "decode_usable", "oversized_int",
           "process_serving", "serve_decoded", "unusable"]


class OnlineProcessor(Protocol):
    """The online learner's side of a processor: it also takes the record's position.

    :class:`~modelog.models.online_models.OnlineModelProcessor` is one.
    """

    def process(self, event: Event, partition: int | None = None,
                offset: int | None = None) -> list[Event]:
        """The events the learner derives from ``event`` (its checkpoints name the position)."""
        ...


_INT_MIN: Final = INT_MIN  # compiled: constants, not a lookup per use
_INT_MAX: Final = INT_MAX


def oversized_int(values: dict[str, Any] | None, name: str, value: object) -> str | None:
    """The path of the first integer beyond 64 bits among ``values`` and ``value``, if any.

    What the SDK refuses (:data:`~modelog.models.validation.INT_RULE`), checked again
    where events are consumed: a record from any other Kafka client may carry an
    integer too large for a float, which every numeric monitor would choke on.
    ``name`` is the path of ``value``.

    Examples
    --------
    >>> oversized_int({"age": 41, "plan": "pro"}, "output", 1)
    >>> oversized_int({"age": 10**30}, "output", 1), oversized_int({}, "label", -(2**64))
    ('inputs.age', 'label')
    """
    if values:
        for k, v in values.items():
            if type(v) is int and not _INT_MIN <= v <= _INT_MAX:
                return f"inputs.{k}"
    if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        return name
    return None


def unusable(event: Event) -> str | None:
    """Why the worker cannot monitor a decoded serving record (``None``: it can).

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import ModelVersionRegistered
    >>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    >>> print(unusable(PredictionMade(id="e", time=t, aggregate="m", prediction_id="p",
    ...                               model="m", model_version=1, inputs={"x": 2**70},
    ...                               output=0)))
    PredictionMade.inputs.x breaks the rule: integers must fit in 64 bits (-2**63 to 2**63 - 1)
    >>> print(unusable(ModelVersionRegistered(id="r", time=t, aggregate="m", model="m",
    ...       model_version=1, flavor="sklearn", artifact_uri="a", artifact_digest="0" * 64)))
    ModelVersionRegistered does not belong on the serving topic; the monitoring worker reads only \
PredictionMade and LabelObserved
    """
    if type(event) is PredictionMade:  # a pointer test: events are not subclassed
        if OUTPUT in event.inputs:
            return f"PredictionMade.inputs.{OUTPUT} {RESERVED_RULE}"
        path = oversized_int(event.inputs, "output", event.output)
    elif type(event) is LabelObserved:
        path = oversized_int(None, "label", event.label)
    else:
        return (f"{event.type_name()} does not belong on the serving topic; "
                f"the monitoring worker reads only PredictionMade and LabelObserved")
    if path is None:
        return None
    return f"{event.type_name()}.{path} breaks the rule: {INT_RULE}"


# Both serving types at their current versions, in one pass (the union is tagged by ``type``).
_SERVING: Final = msgspec.json.Decoder(PredictionMade | LabelObserved)
_PREDICTION_VERSION: Final = PredictionMade.current_version()
_LABEL_VERSION: Final = LabelObserved.current_version()


def decode_serving(raw: bytes) -> Event:
    """:func:`~modelog.models.codec.decode` of a serving record, in one pass when it can.

    A prediction or label written at its current schema version, whose model name
    has passed the name rule before (:data:`~modelog.models.codec.valid_names`),
    is decoded by one decoder of both types (and a prediction's header read). Any
    other record (another type, an older version, a new name, malformed or invalid
    input) goes through :func:`~modelog.models.codec.decode`, which upcasts it or
    raises :class:`~modelog.models.errors.EventDecodeError` with the reason. The
    result is the same either way; the fast path takes about 40 % less time.

    Examples
    --------
    >>> import datetime as dt
    >>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    >>> label = LabelObserved(id="l1", time=t, aggregate="churn", prediction_id="p1",
    ...                       model="churn", label=1)
    >>> decode_serving(codec.encode(label)) == label
    True
    >>> decode_serving(b'{"type": "LabelObserved", "id": "l2"}')
    Traceback (most recent call last):
    ...
    modelog.models.errors.EventDecodeError: invalid LabelObserved: Object missing required \
field `time`
    """
    try:
        event: PredictionMade | LabelObserved = _SERVING.decode(raw)
    except Exception:  # the full path says what is wrong, or decodes it
        return codec.decode(raw)
    current = _PREDICTION_VERSION if type(event) is PredictionMade else _LABEL_VERSION
    if event.schema_version != current:
        return codec.decode(raw)
    if current != 1 and codec.header_decoder.decode(raw).schema_version != current:
        # A record without a version is at version 1, which the union cannot tell from
        # the current version (its default): the header can.
        return codec.decode(raw)
    if event.model not in codec.valid_names:
        return codec.decode(raw)
    return event


def decode_usable(records: Sequence[tuple[Any, int]]) -> dict[int, Event]:
    """Offset -> event of the serving records ``(value, offset)`` that decode and are usable.

    The others are left out: the worker decodes them again one by one and
    dead-letters each with its reason.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import LabelObserved
    >>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    >>> label = codec.encode(LabelObserved(id="l1", time=t, aggregate="churn",
    ...                                    prediction_id="p1", model="churn", label=1))
    >>> sorted(decode_usable([(label, 7), (b"{not json", 8), (None, 9)]))
    [7]
    """
    decoded: dict[int, Event] = {}
    for value, offset in records:
        try:
            event = decode_serving(value if value is not None else b"")
        except EventDecodeError:
            continue
        if unusable(event) is None:
            decoded[offset] = event
    return decoded


def process_serving(event: Event, partition: int, offset: int, monitor: ServingMonitor,
                    early: EarlyLabels, retrain: Processor | None = None,
                    online: OnlineProcessor | None = None, rollout: Processor | None = None,
                    quality: Processor | None = None) -> list[Event]:
    """The events every processor derives from a usable serving ``event``, in order.

    A label whose prediction has not come yet is held in ``early`` and
    processed right after its prediction, or as an orphan once pushed out
    (:class:`~modelog.models.early_labels.EarlyLabels`). ``partition`` and
    ``offset`` locate the record (the online learner's checkpoints use them).
    The monitor, first and busiest, is called directly when compiled; the
    others (retrain trigger, online learner, rollout and quality processors)
    as any object with their methods.
    """
    if type(event) is LabelObserved and monitor.awaits_prediction(event):
        out: list[Event] = []
        for orphan in early.hold(event):
            out.extend(_derive(orphan, partition, offset, monitor, retrain, online, rollout,
                               quality))
        return out
    out = _derive(event, partition, offset, monitor, retrain, online, rollout, quality)
    if type(event) is PredictionMade and len(early) and not event.shadow:
        label = early.release(event)
        if label is not None:
            out.extend(_derive(label, partition, offset, monitor, retrain, online, rollout,
                               quality))
    return out


def serve_decoded(records: Sequence[tuple[Any, str, int, int, Any, Any]], start: int,
                  serving: str, decoded: dict[int, Event], partition: int,
                  monitor: ServingMonitor, early: EarlyLabels, retrain: Processor | None,
                  online: OnlineProcessor | None, rollout: Processor | None,
                  quality: Processor | None, derived: list[Event],
                  ) -> tuple[int, Event | None, Exception | None]:
    """:func:`process_serving` of ``records[start:]`` in order, while they are decoded ahead.

    ``records`` are ``(timestamp, topic, partition, offset, key, value)`` of one
    partition; a record is taken while its topic is ``serving`` and its offset is
    in ``decoded`` (:func:`decode_usable`; it is removed from there). The events
    derived are appended to ``derived``, in order. The loop stops at the first
    record not taken, or right after a record on which a processor failed.

    Returns ``(next, last, error)``: the index of the first record not taken, the
    last event taken (``None``: none), and the exception a processor raised on it
    (``None``: none did). The caller routes ``records[next]`` itself (after
    dead-lettering ``records[next - 1]`` if ``error``) and calls again from there.

    Examples
    --------
    >>> import datetime as dt
    >>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    >>> label = codec.encode(LabelObserved(id="l1", time=t, aggregate="churn",
    ...                                    prediction_id="p1", model="churn", label=1))
    >>> records = [(0, "s", 0, 7, b"churn", label), (0, "m", 0, 3, b"churn", b"{}")]
    >>> decoded, derived = decode_usable([(label, 7)]), []
    >>> serve_decoded(records, 0, "s", decoded, 0, ServingMonitor(), EarlyLabels(), None,
    ...               None, None, None, derived)
    (1, LabelObserved(id='l1', ...), None)
    """
    i = start
    n = len(records)
    last: Event | None = None
    while i < n:
        record = records[i]
        if record[1] != serving:
            break
        offset = record[3]
        event = decoded.pop(offset, None)
        if event is None:
            break
        i += 1
        last = event
        try:
            out = process_serving(event, partition, offset, monitor, early, retrain, online,
                                  rollout, quality)
        except Exception as exc:  # the caller logs and dead-letters the record
            return i, last, exc
        if out:
            derived.extend(out)
    return i, last, None


def _derive(event: Event, partition: int, offset: int, monitor: ServingMonitor,
            retrain: Processor | None, online: OnlineProcessor | None,
            rollout: Processor | None, quality: Processor | None) -> list[Event]:
    """What every processor derives from ``event``."""
    derived = monitor.process(event)
    if retrain is not None and derived:
        derived.extend(retrain.process_many(derived))
    if online is not None:
        derived.extend(online.process(event, partition, offset))
    if rollout is not None:  # comparisons, decisions and their alias commands
        derived.extend(rollout.process(event))
    if quality is not None:  # performance estimation, multivariate drift, segments
        derived.extend(quality.process(event))
    return derived
