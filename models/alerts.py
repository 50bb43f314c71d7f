"""What an alert is, who gets it, what is sent and when to retry: the alert policy.

The single home of the alert event types (:data:`ALERT_TYPES`, their names in
:data:`ALERT_TYPE_NAMES`), their severities and the ``kinds`` a subscription may
filter on; the projection's ``alerts`` table, the dashboard and the delivery
worker all derive from them. Pure: imports only the standard library,
:mod:`modelog.errors` and :mod:`modelog.models` (no broker, no HTTP, no database).

* :class:`SubscriptionBook` folds subscription events (duplicates ignored,
  removal is final);
* :func:`matches` decides whether an alert goes to a subscription (model
  filter, kind filter, minimum severity, and no alert older than the
  subscription unless ``replay``);
* :func:`payload`, :func:`request_headers`, :func:`signature`,
  :func:`backoff_delay`, :func:`is_retryable` and :func:`delivered_event` say
  what is sent, when to retry and what is reported;
* :func:`subscription_event` builds and validates a subscription.

Alerts are the monitoring events :data:`ALERT_TYPES`; ``MonitorStatsReported``
and ``MonitorConfigured`` are not alerts.

Examples
--------
>>> import datetime as dt, msgspec
>>> t0 = dt.datetime(2026, 3, 3, 12, 0, tzinfo=dt.timezone.utc)
>>> sub = AlertSubscriptionCreated(
...     id="0190d7a6-0000-7000-8000-000000000001", time=t0, aggregate="s-1",
...     subscription_id="s-1", url="http://hooks.example/alerts", models=["churn"],
...     min_severity="warning")
>>> book = SubscriptionBook()
>>> book.apply(sub), book.apply(sub), len(book)
(True, False, 1)
>>> alert = DriftDetected(
...     id="0190d7a6-0000-7000-8000-000000000002", time=t0 + dt.timedelta(minutes=5),
...     aggregate="churn", model="churn", kind="concept", detector="adwin",
...     statistic=0.3, severity="critical")
>>> [s.subscription_id for s in book.matching(alert)]
['s-1']
>>> matches(sub, msgspec.structs.replace(alert, severity="info"))
False
>>> ALERT_TYPE_NAMES
('DriftDetected', 'DriftResolved', 'AnomalyDetected', 'SkewDetected', 'RetrainRequested')
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import typing
from collections.abc import Sequence
from typing import TypeAlias, TypeGuard

from modelog.models import codec
from modelog.models.errors import EventValidationError
from modelog.models.events import (
    NAME_PATTERN,
    AlertDelivered,
    AlertSubscriptionCreated,
    AlertSubscriptionRemoved,
    AnomalyDetected,
    DriftDetected,
    DriftResolved,
    Event,
    RetrainRequested,
    SkewDetected,
)
from modelog.models.ids import derived_id, new_id

__all__ = [
    "ALERT_TYPES",
    "ALERT_TYPE_NAMES",
    "IMPLIED_SEVERITY",
    "KNOWN_KINDS",
    "MONITOR_ALERT_TYPE_NAMES",
    "SEVERITIES",
    "Alert",
    "Outcome",
    "SubscriptionBook",
    "alert_kinds",
    "alert_severity",
    "backoff_delay",
    "delivered_event",
    "is_alert",
    "is_retryable",
    "matches",
    "payload",
    "request_headers",
    "signature",
    "subscription_event",
]

Alert: TypeAlias = (
    DriftDetected | DriftResolved | AnomalyDetected | SkewDetected | RetrainRequested
)
"""An alert event (any of :data:`ALERT_TYPES`)."""
ALERT_TYPES: tuple[type[Event], ...] = typing.get_args(Alert)
"""The monitoring events that are alerts (statistics and configuration are not)."""
ALERT_TYPE_NAMES: tuple[str, ...] = tuple(cls.type_name() for cls in ALERT_TYPES)
"""The type names of :data:`ALERT_TYPES`, in the same order (the ``alerts`` table's types)."""
MONITOR_ALERT_TYPE_NAMES: tuple[str, ...] = tuple(
    n for n in ALERT_TYPE_NAMES if n != RetrainRequested.type_name()
)
"""Alert types a serving monitor derives (``RetrainRequested`` comes from the retrain policy)."""
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
"""Severities in increasing order."""
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
IMPLIED_SEVERITY: dict[str, str] = {
    DriftResolved.type_name(): "info", RetrainRequested.type_name(): "warning",
}
"""Severity of the alert types that carry none, by type name."""


def _kind_values() -> frozenset[str]:
    out: set[str] = set()
    for cls in ALERT_TYPES:
        out.add(cls.type_name())
        hint = typing.get_type_hints(cls).get("kind")
        if hint is not None:
            out.update(str(v) for v in typing.get_args(hint))
    return frozenset(out)


KNOWN_KINDS: frozenset[str] = _kind_values()
"""What a subscription's ``kinds`` may name: alert type names and their ``kind`` values."""
_NAME = re.compile(NAME_PATTERN)


def is_alert(event: Event) -> TypeGuard[Alert]:
    """Whether ``event`` is an alert (one of :data:`ALERT_TYPES`)."""
    return isinstance(event, ALERT_TYPES)


def alert_severity(alert: Alert) -> str:
    """The alert's ``severity``; ``info`` for DriftResolved, ``warning`` for RetrainRequested."""
    severity = getattr(alert, "severity", None)
    return str(severity) if severity is not None else IMPLIED_SEVERITY[alert.type_name()]


def alert_kinds(alert: Alert) -> frozenset[str]:
    """The names a subscription's ``kinds`` filter matches: the type name and ``kind``."""
    kind = getattr(alert, "kind", None)
    return frozenset({alert.type_name()} | ({str(kind)} if kind is not None else set()))


def matches(subscription: AlertSubscriptionCreated, alert: Alert, *, replay: bool = False) -> bool:
    """Whether ``alert`` goes to ``subscription``.

    An empty ``models`` or ``kinds`` filter matches everything; ``kinds`` names
    alert type names (``DriftDetected``) or ``kind`` values (``concept``); the
    alert's severity must be at least ``min_severity`` (info < warning <
    critical). Alerts older than the subscription (event times) do not match
    unless ``replay``.

    Examples
    --------
    >>> import datetime as dt, msgspec
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> sub = AlertSubscriptionCreated(id="e1", time=t, aggregate="s", subscription_id="s",
    ...                                url="https://x.test/h", kinds=["SkewDetected"])
    >>> skew = SkewDetected(id="e2", time=t, aggregate="m", model="m", feature="age",
    ...                     kind="missing")
    >>> matches(sub, skew), matches(sub, msgspec.structs.replace(skew, time=t - dt.timedelta(1)))
    (True, False)
    """
    if not replay and alert.time < subscription.time:
        return False
    if subscription.models and alert.model not in subscription.models:
        return False
    if subscription.kinds and not alert_kinds(alert) & set(subscription.kinds):
        return False
    return _RANK[alert_severity(alert)] >= _RANK[subscription.min_severity]


class SubscriptionBook:
    """Active subscriptions, folded from subscription events.

    A duplicated creation is ignored (the first one wins) and a removal is
    final: a subscription id removed once never becomes active again. Other
    events are ignored.
    """

    def __init__(self) -> None:
        self._active: dict[str, AlertSubscriptionCreated] = {}
        self._removed: set[str] = set()

    def apply(self, event: Event) -> bool:
        """Fold one event; return whether the book changed."""
        if isinstance(event, AlertSubscriptionCreated):
            sid = event.subscription_id
            if sid in self._removed or sid in self._active:
                return False
            self._active[sid] = event
            return True
        if isinstance(event, AlertSubscriptionRemoved):
            sid = event.subscription_id
            if sid in self._removed:
                return False
            self._removed.add(sid)
            self._active.pop(sid, None)
            return True
        return False

    def get(self, subscription_id: str) -> AlertSubscriptionCreated | None:
        """The active subscription with this id, if any."""
        return self._active.get(subscription_id)

    def active(self) -> list[AlertSubscriptionCreated]:
        """Active subscriptions, oldest first."""
        return sorted(self._active.values(), key=lambda s: (s.time, s.subscription_id))

    def matching(self, alert: Alert, *, replay: bool = False) -> list[AlertSubscriptionCreated]:
        """Active subscriptions ``alert`` goes to (see :func:`matches`)."""
        return [s for s in self.active() if matches(s, alert, replay=replay)]

    def __contains__(self, subscription_id: object) -> bool:
        return subscription_id in self._active

    def __len__(self) -> int:
        return len(self._active)


def payload(alert: Alert) -> bytes:
    """The request body: the alert's own JSON wire record (valid against its JSON Schema)."""
    return codec.encode(alert)


def signature(secret: str, body: bytes) -> str:
    """The ``Modelog-Signature`` header value: ``sha256=`` + hex HMAC-SHA256 of ``body``.

    Examples
    --------
    A receiver recomputes it over the raw body and compares in constant time:

    >>> import hmac
    >>> header = signature("s3cret", b'{"type":"DriftDetected"}')
    >>> hmac.compare_digest(header, signature("s3cret", b'{"type":"DriftDetected"}'))
    True
    >>> header[:7], len(header)
    ('sha256=', 71)
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request_headers(
    subscription: AlertSubscriptionCreated, alert: Alert, body: bytes
) -> dict[str, str]:
    """Headers of the webhook request; ``Modelog-Event-Id`` is the idempotency key."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "modelog-delivery",
        "Modelog-Event-Id": alert.id,
        "Modelog-Event-Type": alert.type_name(),
        "Modelog-Subscription-Id": subscription.subscription_id,
    }
    if subscription.secret:
        headers["Modelog-Signature"] = signature(subscription.secret, body)
    return headers


def is_retryable(status_code: int | None) -> bool:
    """Retry connection errors (``None``), 5xx and 429; other answers are final."""
    return status_code is None or status_code == 429 or status_code >= 500


def backoff_delay(attempt: int, backoff: tuple[float, float]) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): doubling, capped.

    Examples
    --------
    >>> [backoff_delay(n, (0.5, 3.0)) for n in range(1, 6)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    """
    base, cap = backoff
    return float(min(cap, base * 2 ** min(attempt - 1, 62)))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a delivery ended: accepted (``ok``) or given up, after ``attempts`` POSTs."""

    ok: bool
    status_code: int | None
    attempts: int
    error: str | None = None


def delivered_event(
    subscription_id: str, alert: Alert, outcome: Outcome, *, producer: str = "",
    now: dt.datetime | None = None,
) -> AlertDelivered:
    """The report of a delivery, with an id derived from the alert (same on every retry).

    Examples
    --------
    >>> import datetime as dt
    >>> a = RetrainRequested(id="a-1", aggregate="m", model="m", reason="drift",
    ...                      time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    >>> ev = delivered_event("s-1", a, Outcome(True, 204, 2))
    >>> ev.id == delivered_event("s-1", a, Outcome(True, 204, 2)).id, ev.aggregate, ev.attempts
    (True, 's-1', 2)
    """
    alert_ms = int(alert.time.timestamp() * 1000)
    return AlertDelivered(
        id=derived_id(alert_ms, "delivered", subscription_id, alert.id),
        time=now or codec.utcnow(), aggregate=subscription_id, producer=producer,
        subscription_id=subscription_id, alert_id=alert.id, status_code=outcome.status_code,
        attempts=outcome.attempts, ok=outcome.ok, error=outcome.error,
    )


def subscription_event(
    url: str, *, models: Sequence[str] = (), kinds: Sequence[str] = (),
    min_severity: str = "info", secret: str | None = None, producer: str = "",
    subscription_id: str | None = None, now: dt.datetime | None = None,
) -> AlertSubscriptionCreated:
    """Build and validate an :class:`AlertSubscriptionCreated` (no I/O).

    Raises
    ------
    EventValidationError
        Naming the field, value and rule (URL scheme, model name, unknown kind,
        severity).

    Examples
    --------
    >>> subscription_event("ftp://x", kinds=["concept"])
    Traceback (most recent call last):
    ...
    modelog.models.errors.EventValidationError: invalid AlertSubscriptionCreated: field 'url' ...
    """
    name = AlertSubscriptionCreated.type_name()
    for model in models:
        if not isinstance(model, str) or not _NAME.match(model):
            raise EventValidationError(name, "models", model, f"must match {NAME_PATTERN}")
    for kind in kinds:
        if kind not in KNOWN_KINDS:
            raise EventValidationError(
                name, "kinds", kind, f"must be one of {', '.join(sorted(KNOWN_KINDS))}"
            )
    if min_severity not in _RANK:
        raise EventValidationError(
            name, "min_severity", min_severity, f"must be one of {', '.join(SEVERITIES)}"
        )
    if secret is not None and not secret:
        raise EventValidationError(name, "secret", secret, "must be non-empty (or None)")
    sid = subscription_id or new_id()
    event = AlertSubscriptionCreated(
        id=new_id(), time=now or codec.utcnow(), aggregate=sid, producer=producer,
        subscription_id=sid, url=url, models=list(models), kinds=list(kinds),
        min_severity=min_severity,  # type: ignore[arg-type]  # checked above
        secret=secret,
    )
    codec.validate(event)
    return event
