"""The envelope every event shares, and the constrained scalar types of payloads.

:mod:`modelog.models.events` holds the catalogue; the event families that grew
later live in their own modules (:mod:`modelog.models.policy_events`,
:mod:`modelog.models.quality_events`) and build on this module only, so the
catalogue can gather them without an import cycle.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from modelog.models.errors import EventValidationError

__all__ = [
    "MAX_CLASSES",
    "MAX_NESTING",
    "MAX_VERSION",
    "NAME_PATTERN",
    "Digest",
    "Event",
    "Features",
    "Id",
    "Name",
    "Output",
    "Probabilities",
    "Scalar",
    "ServedName",
    "Severity",
    "Version",
    "Window",
    "check_nesting",
]

# -- constrained scalar types (they become JSON Schema constraints) ---------
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$(?!\n)"
"""A model, dataset or experiment name. ``(?!\\n)``: Python's ``$`` also matches before a final
newline (``"churn\\n"`` would pass); JSON Schema's does not, and the lookahead is valid in both."""
_NAME_DESCRIPTION = "1-128 chars: letters, digits, '.', '_', '-'; starts with a letter or digit"
Name = Annotated[
    str,
    msgspec.Meta(
        pattern=NAME_PATTERN,
        description=_NAME_DESCRIPTION,
    ),
]
ServedName = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=128, extra_json_schema={"pattern": NAME_PATTERN},
        description=_NAME_DESCRIPTION,
    ),
]
"""A :data:`Name` on the serving events, whose pattern the codec checks after decoding
(:func:`modelog.models.codec.name_violation`) rather than msgspec while decoding.

The same rule and JSON Schema: one such field comes with every prediction and label, and
a pattern checked by msgspec calls Python's ``re`` each time (~0.4 µs a record), where the
codec remembers the names it has seen pass."""
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
MAX_VERSION = 2**31 - 1
"""The highest model version number (the views store versions as 32-bit integers)."""
Version = Annotated[int, msgspec.Meta(
    ge=1, le=MAX_VERSION, description="model version number, from 1 (at most 2**31 - 1)")]
Digest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16,128}$(?!\n)")]
Scalar = str | int | float | bool | None
Features = dict[str, Scalar]
Output = str | int | float | bool | None | list[float] | dict[str, float]
MAX_CLASSES = 10_000
"""Most classes a prediction's ``probabilities`` may name."""
Probabilities = Annotated[
    dict[Annotated[str, msgspec.Meta(min_length=1, max_length=256)],
         Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]],
    msgspec.Meta(min_length=2, max_length=MAX_CLASSES,
                 description="class -> predicted probability (a classifier's predict_proba)"),
]
Severity = Literal["info", "warning", "critical"]

MAX_NESTING = 32
"""Most levels of lists and objects in an event's free-form fields (a dataset profile, a
monitor configuration, MLflow inputs): deeper structures are refused, as they would
exhaust the recursion of whoever reads, stores or snapshots them."""


def check_nesting(event_type: str, field: str, value: Any) -> None:
    """Raise :class:`EventValidationError` if ``value`` nests more than :data:`MAX_NESTING` deep.

    The walk is iterative, so any depth is measured safely.

    Examples
    --------
    >>> check_nesting("DatasetVersionCreated", "profile", {"columns": {"x": {"count": 3}}})
    >>> deep: Any = 1
    >>> for _ in range(40):
    ...     deep = [deep]
    >>> try:
    ...     check_nesting("DatasetVersionCreated", "profile", {"a": deep})
    ... except EventValidationError as e:
    ...     print(e.field, "|", e.rule)
    profile.a | lists and objects nest at most 32 levels
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, field)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            children: Any = ((f"{path}.{k}" if depth == 1 else path, v) for k, v in item.items())
        elif isinstance(item, list | tuple):
            children = ((f"{path}[{i}]" if depth == 1 else path, v) for i, v in enumerate(item))
        else:
            continue
        for where, child in children:
            if isinstance(child, dict | list | tuple):
                if depth >= MAX_NESTING:  # named by the top-level entry it is under
                    raise EventValidationError(event_type, where[:200], "...",
                                               f"lists and objects nest at most {MAX_NESTING} "
                                               "levels")
                stack.append((child, depth + 1, where))


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """The envelope shared by every event.

    Parameters
    ----------
    id
        Unique, time-sortable id (UUIDv7).
    time
        When the fact happened (event time, UTC).
    aggregate
        What the event is about; the Kafka key, which keeps one aggregate's
        events in order on one partition.
    producer
        Who wrote the event (application, worker, user).
    schema_version
        Version of this event type's schema the record was written with.
    """

    #: Topic family the event type lives on (see :mod:`modelog.streams.topics`).
    stream: ClassVar[str] = ""

    id: Id
    time: Annotated[dt.datetime, msgspec.Meta(tz=True, description="UTC event time")]
    aggregate: Id
    producer: Annotated[str, msgspec.Meta(max_length=256)] = ""
    schema_version: int = 1

    @classmethod
    def type_name(cls) -> str:
        """The ``type`` tag written to the log."""
        return cls.__name__

    @classmethod
    def current_version(cls) -> int:
        """The schema version this code writes and reads natively."""
        default = msgspec.structs.fields(cls)
        for f in default:
            if f.name == "schema_version":
                return int(f.default)
        raise AssertionError("every event has schema_version")  # pragma: no cover


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """The span of data a detection looked at."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    size: int = 0
