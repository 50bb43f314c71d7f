"""Events of serving through aliases, and the pure rate limit of shadow-failure alerts.

:class:`ShadowScoringFailed` is an alert (see :data:`modelog.models.alerts.ALERT_TYPES`):
a predictor's shadow alias raised while scoring a request (the caller got its
answer regardless). :class:`ShadowFailureLimiter` decides when a predictor
emits one: at most one per (model, alias, version) per ``period`` seconds, each
carrying the number of failures counted since the previous one.

Builds on :mod:`modelog.models.event_base` only; the catalogue
(:data:`modelog.models.events.CATALOGUE`) gathers :data:`EVENTS`.

Examples
--------
>>> import datetime as dt
>>> t0 = dt.datetime(2026, 3, 3, 12, 0, tzinfo=dt.timezone.utc)
>>> limiter = ShadowFailureLimiter(period=60.0)
>>> first = limiter.record("churn", "shadow", 2, "KeyError", "'age'", t0, producer="app")
>>> first.failures, first.error_type, first.severity
(1, 'KeyError', 'warning')
>>> later = [limiter.record("churn", "shadow", 2, "KeyError", "'age'",
...                         t0 + dt.timedelta(seconds=s)) for s in (1, 30, 59)]
>>> later                                    # within the minute: counted, not alerted
[None, None, None]
>>> limiter.due(t0 + dt.timedelta(seconds=60))[0].failures   # the period's count, once
3
>>> limiter.due(t0 + dt.timedelta(seconds=61))
[]
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from modelog.models.event_base import Event, Id, Name, Scalar, Severity, Version, Window
from modelog.models.ids import new_id

__all__ = ["ERROR_TEXT_LIMIT", "EVENTS", "ShadowFailureLimiter", "ShadowScoringFailed"]

ERROR_TEXT_LIMIT = 500
"""Characters of an exception's message kept in :class:`ShadowScoringFailed`."""


class ShadowScoringFailed(Event, frozen=True, kw_only=True):
    """Alert: a shadow alias of a predictor failed to score requests (callers unaffected).

    ``failures`` counts the failures of this (model, alias, version) since the
    previous such alert (also in ``statistic``); ``window`` spans them;
    ``error_type`` and ``error`` (truncated) are the latest one's, raised on the
    inputs of prediction ``paired_with``.
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version
    alias: Name
    error_type: str
    error: str = ""
    failures: int = 1
    paired_with: Id | None = None
    window: Window = Window()
    detector: str = "predictor"
    statistic: float = 1.0
    params: dict[str, Scalar] = {}
    severity: Severity = "warning"
    message: str = ""


EVENTS: tuple[type[Event], ...] = (ShadowScoringFailed,)
"""The event types of this module, in the order the catalogue lists them."""


class _Pending:
    __slots__ = ("count", "error", "error_type", "first", "last_alert", "paired_with")

    def __init__(self) -> None:
        self.count = 0
        self.first: dt.datetime | None = None
        self.last_alert: dt.datetime | None = None
        self.error_type = ""
        self.error = ""
        self.paired_with: str | None = None


class ShadowFailureLimiter:
    """Count shadow failures; say when to alert: at most once per key per ``period`` seconds.

    :meth:`record` counts a failure and returns the alert to emit now, if any
    (the first failure of a key alerts at once); :meth:`due` returns the alerts
    of keys whose period is over with failures still unreported. Not
    thread-safe: the caller serialises the calls.
    """

    def __init__(self, period: float = 60.0) -> None:
        if not period > 0:
            raise ValueError(f"period = {period!r}: must be > 0 seconds")
        self.period = dt.timedelta(seconds=period)
        self._keys: dict[tuple[str, str, int], _Pending] = {}
        self.producer = ""

    def record(self, model: str, alias: str, version: int, error_type: str, error: str,
               now: dt.datetime, *, paired_with: str | None = None,
               producer: str | None = None) -> ShadowScoringFailed | None:
        """Count one failure of shadow ``alias`` at ``version``; the alert to emit now, if any."""
        if producer is not None:
            self.producer = producer
        p = self._keys.setdefault((model, alias, version), _Pending())
        p.count += 1
        p.first = p.first or now
        p.error_type, p.error, p.paired_with = error_type, error[:ERROR_TEXT_LIMIT], paired_with
        if p.last_alert is None or now - p.last_alert >= self.period:
            return self._alert((model, alias, version), p, now)
        return None

    def due(self, now: dt.datetime) -> list[ShadowScoringFailed]:
        """Alerts of keys whose period is over and that counted failures since their last."""
        return [self._alert(key, p, now) for key, p in self._keys.items()
                if p.count and p.last_alert is not None and now - p.last_alert >= self.period]

    def _alert(self, key: tuple[str, str, int], p: _Pending, now: dt.datetime
               ) -> ShadowScoringFailed:
        model, alias, version = key
        n = p.count
        event = ShadowScoringFailed(
            id=new_id(), time=now, aggregate=model, producer=self.producer, model=model,
            model_version=version, alias=alias, error_type=p.error_type[:128], error=p.error,
            failures=n, paired_with=p.paired_with, window=Window(start=p.first, end=now, size=n),
            statistic=float(n), params={"alias": alias, "error_type": p.error_type[:128],
                                        "failures": n},
            message=(f"shadow {alias} (v{version}) of {model} failed {n} time(s) "
                     f"(callers got their answers): {p.error_type}: {p.error}"[:1000]))
        p.count, p.first, p.last_alert = 0, None, now
        return event
