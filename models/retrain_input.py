"""A retrain policy as people write it, turned into the flat keys a ``RetrainPolicySet`` carries.

The event's ``policy`` holds the keys of
:meth:`~modelog.models.retrain.RetrainPolicy.as_params` (durations in seconds:
``cooldown_s``...). People write durations as ``timedelta`` (SDK) or text such as
``30m``, ``2h``, ``7d`` (CLI), and may use the friendlier names ``cooldown``,
``schedule``, ``window_margin`` and ``data_drift_sustained`` (a count of checks,
or a duration). This module turns either into the event's keys; the one
validator is :func:`~modelog.models.retrain.parse_retrain_policy`.

* :func:`parse_duration` -- ``"90"``, ``"45s"``, ``"30m"``, ``"1.5h"``, ``"7d"`` to seconds;
* :func:`parse_assignments` -- ``key=value`` words (CLI) to typed values:
  ``none`` -> ``None``, ``true``/``false``, durations for duration keys,
  whole numbers, numbers, else text;
* :func:`policy_input` -- SDK keyword arguments (``timedelta`` allowed) to the
  event's keys.

Examples
--------
>>> parse_assignments(["cooldown=2h", "on_concept_drift=false", "metric_floor=0.3",
...                    "gate_metric=f1", "schedule_s=none", "data_drift_sustained=3"])
{'cooldown_s': 7200.0, 'on_concept_drift': False, 'metric_floor': 0.3, 'gate_metric': 'f1', \
'schedule_s': None, 'data_drift_checks': 3}
>>> import datetime as dt
>>> policy_input("churn", {"cooldown": dt.timedelta(minutes=30), "data_drift_sustained":
...                        dt.timedelta(hours=2), "gate_margin": 0.02})
{'cooldown_s': 1800.0, 'data_drift_s': 7200.0, 'gate_margin': 0.02}

Pure; imports only :mod:`modelog.models`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping

from modelog.models.errors import RetrainPolicyError
from modelog.models.events import Scalar

__all__ = ["ALIASES", "parse_assignments", "parse_duration", "policy_input"]

ALIASES = {"cooldown": "cooldown_s", "schedule": "schedule_s",
           "window_margin": "window_margin_s", "data_drift": "data_drift_s"}
"""Friendly names of the duration keys."""

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SUSTAINED = "data_drift_sustained"


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number of seconds, or a number with a unit s, m, h, d or w.

    Raises
    ------
    ValueError
        ``text`` is not a duration.

    Examples
    --------
    >>> parse_duration("30m"), parse_duration("1.5h"), parse_duration("7d"), parse_duration("90")
    (1800.0, 5400.0, 604800.0, 90.0)
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 90, 45s, 30m, 2h, 7d, 1w)")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def _is_duration_key(key: str) -> bool:
    return key.endswith("_s") or key in ALIASES


def _scalar(key: str, text: str) -> Scalar:
    word = text.strip()
    low = word.lower()
    if low in ("none", "null", ""):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if _is_duration_key(key) or (key == _SUSTAINED and not word.isdigit()):
        try:
            return parse_duration(word)
        except ValueError:
            return word  # the validator names the key and the rule
    if re.fullmatch(r"[+-]?\d+", word):
        return int(word)
    try:
        return float(word)
    except ValueError:
        return word


def parse_assignments(items: Iterable[str], model: str = "?") -> dict[str, Scalar]:
    """``key=value`` words as the event's policy keys with typed values (see the module).

    Raises
    ------
    RetrainPolicyError
        A word without ``=``.
    """
    out: dict[str, Scalar] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RetrainPolicyError(model, key or item, item,
                                     "write key=value (e.g. cooldown=2h, gate_metric=f1)")
        if key == _SUSTAINED:
            value = _scalar(key, text)
            out.update(_sustained(value))
        else:
            out[ALIASES.get(key, key)] = _scalar(key, text)
    return out


def _sustained(value: object) -> dict[str, Scalar]:
    """``data_drift_sustained`` as ``data_drift_checks`` (a count) or ``data_drift_s``."""
    if value is None:
        return {"data_drift_checks": None, "data_drift_s": None}
    if isinstance(value, dt.timedelta):
        return {"data_drift_s": value.total_seconds()}
    if isinstance(value, float):
        return {"data_drift_s": value}
    return {"data_drift_checks": value}  # type: ignore[dict-item]  # checked by the parser


def policy_input(model: str, values: Mapping[str, object]) -> dict[str, Scalar]:
    """SDK keyword arguments as the event's policy keys (``timedelta`` to seconds).

    Values that are not scalars stay as they are, for
    :func:`~modelog.models.retrain.parse_retrain_policy` to refuse with the key named.
    """
    out: dict[str, object] = {}
    for key, value in values.items():
        if key == _SUSTAINED:
            out.update(_sustained(value))
            continue
        if isinstance(value, dt.timedelta):
            value = value.total_seconds()
        out[ALIASES.get(key, key)] = value
    return out  # type: ignore[return-value]  # checked by parse_retrain_policy
