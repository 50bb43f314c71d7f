"""Explicit JSON (de)serialization of events, with upcasting on read.

The wire format is one UTF-8 JSON object per Kafka record: the envelope fields
(``type``, ``schema_version``, ``id``, ``time``, ``aggregate``, ``producer``)
next to the payload fields. JSON Schemas for every type come from
:func:`json_schemas`, so any Kafka client can produce valid events.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import LabelObserved
>>> ev = LabelObserved(id="0190d7a6-0000-7000-8000-000000000000",
...                    time=dt.datetime(2026, 3, 3, 14, 0, tzinfo=dt.timezone.utc),
...                    aggregate="churn", prediction_id="p-1", model="churn", label=1)
>>> raw = encode(ev)
>>> raw[:40]
b'{"type":"LabelObserved","id":"0190d7a6-0'
>>> decode(raw) == ev
True
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, get_type_hints

import msgspec

from modelog.models.errors import EventDecodeError, EventValidationError, UnknownEventTypeError
from modelog.models.event_base import MAX_NESTING, NAME_PATTERN, ServedName
from modelog.models.events import CATALOGUE, Event
from modelog.models.upcasters import UPCASTERS

__all__ = ["decode", "encode", "json_schemas", "name_violation", "to_record", "upcast",
           "validate"]

_encoder = msgspec.json.Encoder()


class Header(msgspec.Struct):
    """The envelope's type and version, read first (a record without a version is at 1)."""

    type: str
    schema_version: int = 1


#: Reads a record's :class:`Header` only (the rest is skipped, not decoded).
header_decoder: msgspec.json.Decoder[Header] = msgspec.json.Decoder(Header)
_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in CATALOGUE.items()
}
_current: dict[str, int] = {name: cls.current_version() for name, cls in CATALOGUE.items()}
_served_names: dict[type[Event], tuple[str, ...]] = {
    cls: names for cls in CATALOGUE.values()
    if (names := tuple(field for field, hint in get_type_hints(cls, include_extras=True).items()
                       if hint == ServedName))}
_NAME = re.compile(NAME_PATTERN)
_NAME_RULE = f"Expected `str` matching regex {NAME_PATTERN!r}"  # as msgspec words a pattern
#: Served names seen to pass :data:`~modelog.models.event_base.NAME_PATTERN` (a cache of
#: at most ``_NAMES_REMEMBERED``, emptied when full; the worker's fast path reads it).
valid_names: set[str] = set()
_NAMES_REMEMBERED = 4_096
_TOO_DEEP = (f"JSON nested too deeply to read (an event's lists and objects nest at most "
             f"{MAX_NESTING} levels)")


def encode(event: Event) -> bytes:
    """Serialize an event to its JSON wire form."""
    return _encoder.encode(event)


def upcast(record: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a decoded record, step by step, to its type's current schema version."""
    name = record.get("type")
    if not isinstance(name, str) or name not in _current:
        raise UnknownEventTypeError(f"unknown event type {name!r}")
    version = record.get("schema_version", 1)
    target = _current[name]
    if not isinstance(version, int) or version < 1:
        raise EventDecodeError(f"{name}: schema_version {version!r} is not a positive integer")
    if version > target:
        raise EventDecodeError(
            f"{name} schema_version {version} is newer than this modelog understands "
            f"({target}); upgrade modelog on this consumer"
        )
    while version < target:
        step = UPCASTERS.get((name, version))
        if step is None:
            raise EventDecodeError(f"{name}: no upcaster from schema_version {version}")
        record = step(record)
        version = record["schema_version"]
    return record


def name_violation(event: Event) -> tuple[str, str] | None:
    """``(field, value)`` of the first :data:`~modelog.models.event_base.ServedName` field of
    ``event`` that breaks :data:`~modelog.models.event_base.NAME_PATTERN`, if any.

    Decoding checks these names here, not in msgspec (see ``ServedName``); the names
    seen to pass are remembered (a few thousand), so a stream's few model names are
    matched once.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import LabelObserved
    >>> t = dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc)
    >>> name_violation(LabelObserved(id="l", time=t, aggregate="a", prediction_id="p",
    ...                              model="churn", label=1))
    >>> name_violation(LabelObserved(id="l", time=t, aggregate="a", prediction_id="p",
    ...                              model="no spaces!", label=1))
    ('model', 'no spaces!')
    """
    fields = _served_names.get(type(event))
    if fields is None:
        return None
    for field in fields:
        value: str = getattr(event, field)
        if value not in valid_names:
            if _NAME.fullmatch(value) is None:
                return field, value
            if len(valid_names) >= _NAMES_REMEMBERED:
                valid_names.clear()
            valid_names.add(value)
    return None


def decode(raw: bytes | memoryview | str) -> Event:
    """Parse one wire record into its current event class, upcasting old versions.

    Raises :class:`EventDecodeError` (never anything else) with a reason that
    the dead-letter topic records. The worker's one-pass decode of serving records
    (:func:`~modelog.models.serving_path.decode_serving`) takes a record only when
    these rules would read it as it does (current version, a name seen to pass);
    a rule added here must be added there.
    """
    try:
        header = header_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"not a modelog event: {exc}") from None
    except RecursionError:  # skipping a field nested thousands deep
        raise EventDecodeError(_TOO_DEEP) from None
    current = _current.get(header.type)
    if current is None:
        raise UnknownEventTypeError(f"unknown event type {header.type!r}")
    try:
        if header.schema_version == current:
            # msgspec's JSON decoder rejects NaN/Infinity tokens and out-of-range
            # numbers, so a directly decoded event is finite: no walk needed (the
            # walk costs ~10x the decode and would cap the projector's throughput).
            event: Event = _decoders[header.type].decode(raw)
            _check_names(event)
            return event
        record = upcast(msgspec.json.decode(raw))
        event = msgspec.convert(record, CATALOGUE[header.type])
        _check_names(event)
    except msgspec.ValidationError as exc:
        rule = exc.__cause__
        if isinstance(rule, EventValidationError):  # an event's own check (__post_init__)
            raise EventDecodeError(f"invalid {header.type}: field {rule.field!r} breaks the "
                                   f"rule: {rule.rule}") from None
        raise EventDecodeError(f"invalid {header.type}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"malformed {header.type}: {exc}") from None
    except RecursionError:
        raise EventDecodeError(f"{header.type}: {_TOO_DEEP}") from None
    _check_finite(event)  # upcasters are code: their output is checked
    return event


def _check_names(event: Event) -> None:
    bad = name_violation(event)
    if bad is not None:
        raise EventDecodeError(f"invalid {event.type_name()}: {_NAME_RULE} - at `$.{bad[0]}`")


def to_record(event: Event) -> dict[str, Any]:
    """The event as plain JSON-compatible builtins (what is on the wire)."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out


_PATH = re.compile(r"- at `\$(?P<path>[^`]*)`")


def _get_path(record: Any, path: str) -> Any:
    cur = record
    for part in re.findall(r"\.([^.\[]+)|\[(\d+|'[^']*'|\"[^\"]*\")\]", path):
        key = part[0] or part[1]
        if key.startswith(("'", '"')):
            key = key[1:-1]
        try:
            cur = cur[int(key)] if isinstance(cur, list) else cur[key]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return cur


def _field_name(path: str) -> str:
    return re.sub(r"\[(['\"])(.*?)\1\]", r".\2", path).lstrip(".")


def _non_finite(value: Any, path: str) -> tuple[str, float] | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        for k, v in value.items():
            hit = _non_finite(v, f"{path}.{k}" if path else str(k))
            if hit:
                return hit
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            hit = _non_finite(v, f"{path}[{i}]")
            if hit:
                return hit
    elif isinstance(value, msgspec.Struct):
        for f in value.__struct_fields__:
            hit = _non_finite(getattr(value, f), f"{path}.{f}" if path else f)
            if hit:
                return hit
    return None


def _check_finite(event: Event) -> None:
    hit = _non_finite(event, "")
    if hit is not None:
        raise EventDecodeError(
            f"invalid {event.type_name()}: field {hit[0]!r} is {hit[1]}; "
            "numbers must be finite (NaN and infinity are not allowed)"
        )


def validate(event: Event) -> Event:
    """Check every field constraint of ``event``; return it unchanged when valid.

    Raises
    ------
    EventValidationError
        Naming the field, its value and the rule it breaks.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import LabelObserved
    >>> bad = LabelObserved(id="x", time=dt.datetime.now(dt.timezone.utc),
    ...                     aggregate="churn", prediction_id="p-1", model="no spaces!", label=1)
    >>> validate(bad)
    Traceback (most recent call last):
    ...
    modelog.models.errors.EventValidationError: invalid LabelObserved: field 'model' ...
    """
    name = event.type_name()
    if event.time.tzinfo is None:
        raise EventValidationError(name, "time", event.time, "must be timezone-aware (UTC)")
    hit = _non_finite(event, "")
    if hit is not None:
        raise EventValidationError(name, hit[0], hit[1], "numbers must be finite")
    record = msgspec.to_builtins(event)
    try:
        msgspec.convert(record, type(event))
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = _PATH.search(text)
        path = m.group("path") if m else ""
        rule = _PATH.sub("", text).strip()
        raise EventValidationError(
            name, _field_name(path) or "?", _get_path(record, path), rule
        ) from None
    bad = name_violation(event)
    if bad is not None:
        raise EventValidationError(name, bad[0], bad[1], _NAME_RULE)
    return event


def json_schemas() -> dict[str, dict[str, Any]]:
    """A standalone JSON Schema (draft 2020-12) per event type, keyed by type name."""
    out: dict[str, dict[str, Any]] = {}
    for name, cls in CATALOGUE.items():
        schema = msgspec.json.schema(cls)
        defs = schema.get("$defs", {})
        body = defs.get(name, {})
        body["properties"]["schema_version"] = {
            "const": cls.current_version(),
            "description": "schema version of this event type; older versions are upcast",
        }
        body["properties"]["time"] = {
            "type": "string",
            "format": "date-time",
            "description": "event time, RFC 3339 with a UTC offset",
        }
        body["properties"]["id"]["description"] = "unique id, UUIDv7 recommended"
        body["properties"]["aggregate"]["description"] = (
            "the aggregate the event belongs to; use it as the Kafka record key"
        )
        required = set(body.get("required", []))
        required.add("schema_version")
        body["required"] = sorted(required)
        body["description"] = (cls.__doc__ or "").strip().splitlines()[0]
        out[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"modelog/{name}/v{cls.current_version()}.json",
            **schema,
            "x-modelog-topic": cls.stream,
        }
    return out


def utcnow() -> dt.datetime:
    """Current time, UTC, timezone-aware."""
    return dt.datetime.now(dt.UTC)
