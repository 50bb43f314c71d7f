"""Inline input validation of the SDK's calls: cheap checks that name field, value and rule.

The SDK's hot path (``log_prediction``, ``log_label``, metrics, params) does
not run the full :func:`~modelog.models.codec.validate` on every event: it
runs these checks instead. Each failure raises an
:class:`~modelog.models.errors.EventValidationError` naming the event type,
the field, the offending value and the rule it broke.

Pure: imports only :mod:`modelog.models` (and the standard library).

Examples
--------
>>> check_scalars({"age": 42, "plan": "pro"}, "PredictionMade", "inputs")
{'age': 42, 'plan': 'pro'}
>>> check_name("churn", "PredictionMade", "model"), artifact_suffix("pkl")
('churn', '.pkl')
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

from modelog.models.errors import EventValidationError
from modelog.models.event_base import MAX_CLASSES
from modelog.models.events import NAME_PATTERN

__all__ = [
    "FINITE_RULE",
    "INT_MAX",
    "INT_MIN",
    "INT_RULE",
    "MAX_EVENT_BYTES",
    "PLAIN_TYPES",
    "RESERVED_RULE",
    "SCALAR_RULE",
    "SIZE_RULE",
    "Scalar",
    "artifact_suffix",
    "check_id",
    "check_name",
    "check_output",
    "check_probabilities",
    "check_scalars",
    "check_time",
    "finite_float",
]

Scalar = str | int | float | bool | None
"""A parameter, input feature or scalar output value."""

PLAIN_TYPES = frozenset({str, int, bool, type(None)})
"""Scalar types that need no check at all (``float`` must be finite)."""
SCALAR_RULE = "must be a str, int, float, bool or None"
FINITE_RULE = "numbers must be finite (no NaN or infinity)"
INT_RULE = "integers must fit in 64 bits (-2**63 to 2**63 - 1)"
RESERVED_RULE = "is reserved: prediction drift reports the output under this name"
MAX_EVENT_BYTES = 1_000_000
"""Most bytes an encoded event may take: a Kafka message's default limit (librdkafka's
``message.max.bytes``; Apache Kafka's broker allows ~1 MiB)."""
SIZE_RULE = (f"an event must encode to at most {MAX_EVENT_BYTES:,} bytes (a Kafka message's "
             "limit): log large data as a dataset or an artifact, and its id or digest here")
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""The integers every event field takes (64-bit, what a float and the views can hold)."""
_NAME_RULE = (
    "1-128 characters: letters, digits, '.', '_', '-', starting with a letter or digit"
)
_NAME = re.compile(NAME_PATTERN)
_SUFFIX_OK = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _coerce(value: Any, event_type: str, field: str) -> Scalar:
    """A scalar of an unusual type (numpy scalar, float/int subclass) as a plain one."""
    if isinstance(value, bool | str):
        return bool(value) if isinstance(value, bool) else str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return _int64(int(value), event_type, field)
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            raise EventValidationError(event_type, field, value, FINITE_RULE)
        return f
    if value is None or type(value) in PLAIN_TYPES:
        return value  # type: ignore[no-any-return]
    raise EventValidationError(event_type, field, value, SCALAR_RULE)


def check_scalars(values: Any, event_type: str, field: str) -> dict[str, Scalar]:
    """A copy of ``values`` checked as a mapping of ``str`` -> finite scalar.

    numpy scalars become plain Python values.

    Raises
    ------
    EventValidationError
        Naming ``field`` (or ``field.<key>``), the value and the rule broken.

    Examples
    --------
    >>> check_scalars({"age": 42, "plan": "pro"}, "PredictionMade", "inputs")
    {'age': 42, 'plan': 'pro'}
    >>> try:
    ...     check_scalars({"age": float("nan")}, "PredictionMade", "inputs")
    ... except EventValidationError as e:
    ...     print(e.field, e.value, e.rule, sep=" | ")
    inputs.age | nan | numbers must be finite (no NaN or infinity)
    """
    if type(values) is dict:
        out: dict[str, Any] = values.copy()
    elif isinstance(values, Mapping):
        out = dict(values)
    else:
        raise EventValidationError(
            event_type, field, values, f"must be a mapping of str -> scalar ({SCALAR_RULE})"
        )
    chars = 0  # of the str values: with 5 bytes a feature, less than the encoded size
    for k, v in out.items():
        t = type(v)
        if t is float:
            if v - v:  # NaN or +-inf (x - x is 0.0 for every finite float)
                raise EventValidationError(event_type, f"{field}.{k}", v, FINITE_RULE)
        elif t is int:
            if not INT_MIN <= v <= INT_MAX:
                raise EventValidationError(event_type, f"{field}.{k}", v, INT_RULE)
        elif t is str:
            chars += len(v)
        elif t is not bool and v is not None:
            out[k] = _coerce(v, event_type, f"{field}.{k}")
        if type(k) is not str:
            raise EventValidationError(event_type, field, k, "keys must be str")
    if chars + 5 * len(out) > MAX_EVENT_BYTES:  # surely too big (the sender checks the rest)
        raise EventValidationError(event_type, field, f"<{len(out):,} features, "
                                   f"{chars:,} characters of text>", SIZE_RULE)
    return out


def check_output(value: Any, event_type: str, field: str) -> Any:
    """``value`` checked as a prediction output or label.

    Allowed: a scalar (str, int, float, bool, None), a list of floats (class
    probabilities, embeddings; numpy arrays are converted) or a dict of str ->
    float; every number finite.

    Examples
    --------
    >>> check_output([0.2, 0.8], "PredictionMade", "output")
    [0.2, 0.8]
    >>> try:
    ...     check_output({"a": float("inf")}, "PredictionMade", "output")
    ... except EventValidationError as e:
    ...     print(e.field, e.value, e.rule, sep=" | ")
    output.a | inf | numbers must be finite (no NaN or infinity)
    """
    t = type(value)
    if t is float:
        if value - value != 0.0:
            raise EventValidationError(event_type, field, value, FINITE_RULE)
        return value
    if t is int:
        return _int64(value, event_type, field)
    if t is str and len(value) > MAX_EVENT_BYTES:
        raise EventValidationError(event_type, field, f"<{len(value):,} characters>", SIZE_RULE)
    if t in PLAIN_TYPES:
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise EventValidationError(event_type, field, k, "keys must be str")
            out[k] = finite_float(v, event_type, f"{field}.{k}")
        return out
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) >= 1:
        value = value.tolist()  # numpy arrays, tensors
    if isinstance(value, list | tuple):
        if 2 * len(value) > MAX_EVENT_BYTES:  # at least "0," each
            raise EventValidationError(event_type, field, f"<a list of {len(value):,} numbers>",
                                       SIZE_RULE)
        return [finite_float(v, event_type, f"{field}[{i}]") for i, v in enumerate(value)]
    return _coerce(value, event_type, field)


PROBABILITY_SUM_TOLERANCE = 0.01
"""How far from 1 the probabilities of a prediction may sum (float32 models, rounding)."""


def _class_key(key: Any, event_type: str, field: str) -> str:
    if hasattr(key, "item") and callable(key.item) and getattr(key, "ndim", 0) == 0:
        key = key.item()  # numpy classes (scikit-learn's classes_)
    if type(key) is str:
        text = key
    elif isinstance(key, bool | int | float) and not (isinstance(key, float)
                                                     and not math.isfinite(key)):
        text = str(key)
    else:
        raise EventValidationError(event_type, field, key,
                                   "classes must be str, int, float or bool")
    if not 1 <= len(text) <= 256:
        raise EventValidationError(event_type, field, key,
                                   "a class must be 1 to 256 characters as text")
    return text


def check_probabilities(value: Any, output: Any, event_type: str = "PredictionMade",
                        field: str = "probabilities") -> dict[str, float]:
    """``value`` checked as a classifier's class probabilities for the answer ``output``.

    A mapping of class -> probability (numpy values and classes are converted;
    classes become text, as JSON keys are): 2 to 10,000 classes, each
    probability a finite number in [0, 1], summing to 1 within 0.01. A
    scalar ``output`` (the class answered) must be one of the classes;
    ``None`` means the most probable one.

    Examples
    --------
    >>> check_probabilities({0: 0.25, 1: 0.75}, 1)
    {'0': 0.25, '1': 0.75}
    >>> try:
    ...     check_probabilities({"no": 0.6, "yes": 0.6}, "yes")
    ... except EventValidationError as e:
    ...     print(e.field, e.value, e.rule, sep=" | ")
    probabilities | 1.2 | must sum to 1 (within 0.01)
    >>> try:
    ...     check_probabilities({"no": 0.4, "yes": 0.6}, "maybe")
    ... except EventValidationError as e:
    ...     print(e.field, e.value, e.rule, sep=" | ")
    output | maybe | must be one of the classes of probabilities (no, yes)
    """
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()  # a pandas Series indexed by class
    if not isinstance(value, Mapping):
        raise EventValidationError(event_type, field, value,
                                   "must be a mapping of class -> probability")
    if not 2 <= len(value) <= MAX_CLASSES:
        raise EventValidationError(event_type, field, f"<{len(value):,} classes>",
                                   f"must name 2 to {MAX_CLASSES:,} classes")
    out: dict[str, float] = {}
    total = 0.0
    for k, v in value.items():
        key = _class_key(k, event_type, field)
        p = finite_float(v, event_type, f"{field}.{key}")
        if not 0.0 <= p <= 1.0:
            raise EventValidationError(event_type, f"{field}.{key}", v,
                                       "must be a probability in [0, 1]")
        if key in out:
            raise EventValidationError(event_type, field, k,
                                       "names a class twice (classes compare as text)")
        out[key] = p
        total += p
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise EventValidationError(event_type, field, round(total, 6),
                                   f"must sum to 1 (within {PROBABILITY_SUM_TOLERANCE})")
    if output is not None:
        if isinstance(output, list | dict):
            raise EventValidationError(
                event_type, "output", output,
                "must be the class answered (a str, int, float or bool) when probabilities "
                "are logged")
        if str(output) not in out:
            shown = ", ".join(list(out)[:10]) + (", ..." if len(out) > 10 else "")
            raise EventValidationError(event_type, "output", output,
                                       f"must be one of the classes of probabilities ({shown})")
    return out


def _int64(value: int, event_type: str, field: str) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise EventValidationError(event_type, field, value, INT_RULE)
    return value


def finite_float(v: Any, event_type: str, field: str) -> float:
    """``v`` as a finite ``float`` (a bool is not a number here).

    Examples
    --------
    >>> finite_float(1, "MetricsLogged", "metrics.auc")
    1.0
    """
    if type(v) is float and math.isfinite(v):  # the common case, without the ABC check
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise EventValidationError(event_type, field, v, "must be a number")
    f = float(v)
    if not math.isfinite(f):
        raise EventValidationError(event_type, field, v, FINITE_RULE)
    return f


def check_name(value: Any, event_type: str, field: str) -> str:
    """``value`` checked as a model, dataset or experiment name (:data:`NAME_PATTERN`)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise EventValidationError(event_type, field, value, _NAME_RULE)
    return value


def check_id(value: Any, event_type: str, field: str) -> str:
    """``value`` checked as an id given by the caller (a prediction id): 1-128 characters."""
    if type(value) is not str or not 0 < len(value) <= 128:
        raise EventValidationError(event_type, field, value, "must be a str of 1-128 characters")
    return value


def check_time(value: Any, event_type: str) -> None:
    """Refuse an event ``time`` that is not a timezone-aware ``datetime``."""
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise EventValidationError(
            event_type, "time", value, "must be a timezone-aware datetime (UTC)"
        )


def artifact_suffix(ext: str) -> str:
    """``.<ext>`` for a safe file extension of a stored artifact, else ``""``.

    Examples
    --------
    >>> artifact_suffix("png"), artifact_suffix("../x")
    ('.png', '')
    """
    return f".{ext}" if _SUFFIX_OK.fullmatch(ext) else ""
