"""Alert subscriptions and webhook delivery, exactly once in effect.

A service subscribes to alerts with :func:`subscribe` (an
:class:`~modelog.models.events.AlertSubscriptionCreated` on the subscriptions
topic); :class:`DeliveryWorker` follows the subscriptions and monitoring topics
and POSTs every matching alert to every subscriber's webhook, then reports the
outcome as an :class:`~modelog.models.events.AlertDelivered` event.

The pure core -- no broker, no HTTP, no database:

* :class:`SubscriptionBook` folds subscription events (duplicates ignored,
  removal is final);
* :func:`matches` decides whether an alert goes to a subscription (model
  filter, kind filter, minimum severity, and no alert older than the
  subscription unless ``replay``);
* :func:`payload`, :func:`request_headers`, :func:`signature`,
  :func:`backoff_delay`, :func:`is_retryable` and :func:`delivered_event` say
  what is sent, when to retry and what is reported.

Exactly once *in effect*
------------------------
The worker keeps a local SQLite ledger (``<data_dir>/delivery.sqlite``). When a
POST ends (accepted, or given up after ``max_attempts``) one SQLite transaction
records the ``(subscription_id, alert_id)`` delivery, the ``AlertDelivered``
event to report (a transactional outbox) *and* the consumer positions, which
never pass a record whose deliveries are not all recorded. So:

* a restart never POSTs again a delivery the ledger recorded, and never skips
  an alert whose deliveries were not recorded;
* a crash *after* the receiver accepted a POST but *before* the transaction
  committed repeats that one POST on restart. HTTP has no two-phase commit, so
  this gap cannot be closed on the sending side: every request carries the
  alert's id in ``Modelog-Event-Id``, the idempotency key receivers dedupe on;
* ``AlertDelivered`` ids are derived from ``(alert time, subscription, alert)``
  so re-sending the outbox after a crash yields the same event id.

Alerts are the monitoring events :data:`ALERT_TYPES`; ``MonitorStatsReported``
and ``MonitorConfigured`` are not alerts. Records that are not valid events are
copied unchanged to the dead-letter topic (consumer ``delivery``) and delivery
carries on.

Ordering and slow receivers: deliveries run on a small pool of lanes; a
subscription always uses the same lane, so its alerts arrive in log order (per
monitoring partition, i.e. per model), and a slow or failing receiver only
delays the subscriptions sharing its lane.

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import http.client
import logging
import re
import signal
import sqlite3
import threading
import time
import typing
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeGuard

from modelog.config import Settings
from modelog.errors import ConfigurationError
from modelog.models import codec
from modelog.models.errors import EventDecodeError, EventValidationError
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
from modelog.streams.errors import DeliveryError, StreamsError
from modelog.streams.kafka import dead_letter_headers, offset_in_log
from modelog.streams.topics import Topics, ensure_topics

__all__ = [
    "ALERT_TYPES",
    "CONSUMER_NAME",
    "KNOWN_KINDS",
    "LEDGER_FILE",
    "SEVERITIES",
    "Alert",
    "DeliveryLedger",
    "DeliveryRecord",
    "DeliveryStats",
    "DeliveryWorker",
    "DeliveryWorkerError",
    "Outcome",
    "SubscriptionBook",
    "UnknownSubscriptionError",
    "WebhookSender",
    "alert_kinds",
    "alert_severity",
    "backoff_delay",
    "deliver_once",
    "delivered_event",
    "is_alert",
    "is_retryable",
    "list_subscriptions",
    "matches",
    "payload",
    "request_headers",
    "run_delivery",
    "signature",
    "stop_on_sigterm",
    "subscribe",
    "subscription_event",
    "unsubscribe",
]

log = logging.getLogger(__name__)

CONSUMER_NAME = "delivery"
"""Name recorded in the dead-letter headers of records this worker rejects."""
LEDGER_FILE = "delivery.sqlite"
"""The ledger's file name in ``settings.data_dir``."""

Alert = DriftDetected | DriftResolved | AnomalyDetected | SkewDetected | RetrainRequested
ALERT_TYPES: tuple[type[Event], ...] = (
    DriftDetected, DriftResolved, AnomalyDetected, SkewDetected, RetrainRequested,
)
"""The monitoring events that are alerts (statistics and configuration are not)."""
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
"""Severities in increasing order."""
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_IMPLIED_SEVERITY = {"DriftResolved": "info", "RetrainRequested": "warning"}
"""Severity of the alert types that carry none."""


def _kind_values() -> frozenset[str]:
    out: set[str] = set()
    for cls in ALERT_TYPES:
        out.add(cls.__name__)
        hint = typing.get_type_hints(cls).get("kind")
        if hint is not None:
            out.update(str(v) for v in typing.get_args(hint))
    return frozenset(out)


KNOWN_KINDS: frozenset[str] = _kind_values()
_NAME = re.compile(NAME_PATTERN)
"""What a subscription's ``kinds`` may name: alert type names and their ``kind`` values."""


class DeliveryWorkerError(StreamsError):
    """The delivery worker cannot go on (ledger, broker or a lane failed)."""


class UnknownSubscriptionError(StreamsError, LookupError):
    """No active subscription has this id."""


# -- the pure core ----------------------------------------------------------------------
def is_alert(event: Event) -> TypeGuard[Alert]:
    """Whether ``event`` is an alert (one of :data:`ALERT_TYPES`)."""
    return isinstance(event, ALERT_TYPES)


def alert_severity(alert: Alert) -> str:
    """The alert's ``severity``; ``info`` for DriftResolved, ``warning`` for RetrainRequested."""
    severity = getattr(alert, "severity", None)
    return str(severity) if severity is not None else _IMPLIED_SEVERITY[alert.type_name()]


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


# -- HTTP (the edge) ----------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Do not follow redirects: urllib would turn the POST into a GET without body."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSender:
    """POST an alert to a subscriber, retrying with exponential backoff.

    Parameters
    ----------
    timeout
        Seconds to wait for each answer.
    max_attempts
        POSTs before giving up.
    backoff
        ``(first, cap)`` delay in seconds between attempts, doubling each time.
        A ``Retry-After`` header (seconds) is honoured up to ``cap``.
    """

    def __init__(self, timeout: float = 5.0, max_attempts: int = 8,
                 backoff: tuple[float, float] = (0.5, 30.0)) -> None:
        if timeout <= 0:
            raise ConfigurationError(f"http_timeout={timeout} must be positive")
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts={max_attempts} must be at least 1")
        if len(backoff) != 2 or backoff[0] < 0 or backoff[1] < backoff[0]:
            raise ConfigurationError(
                f"backoff={backoff!r} must be (first, cap) with 0 <= first <= cap seconds"
            )
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self._opener = urllib.request.build_opener(_NoRedirect())

    def post(self, url: str, body: bytes,
             headers: dict[str, str]) -> tuple[int | None, str | None, float | None]:
        """One POST: ``(status code or None, error or None, Retry-After seconds or None)``."""
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(1 << 16)
                return int(response.status), None, None
        except urllib.error.HTTPError as exc:
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            with contextlib.suppress(Exception):
                exc.close()
            hint = " (redirects are not followed: subscribe the final URL)" if (
                300 <= exc.code < 400) else ""
            return exc.code, f"HTTP {exc.code} {exc.reason}{hint}", retry_after
        except urllib.error.URLError as exc:
            return None, f"cannot reach {url}: {exc.reason}", None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return None, f"cannot POST to {url}: {type(exc).__name__}: {exc}", None

    def send(self, subscription: AlertSubscriptionCreated, alert: Alert,
             stop: threading.Event | None = None) -> Outcome | None:
        """Deliver ``alert``; ``None`` when ``stop`` was set before the delivery ended."""
        body = payload(alert)
        headers = request_headers(subscription, alert, body)
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self.max_attempts + 1):
            if stop is not None and stop.is_set():
                return None
            status, error, retry_after = self.post(subscription.url, body, headers)
            if status is not None and 200 <= status < 300:
                return Outcome(True, status, attempt)
            if not is_retryable(status):
                return Outcome(False, status, attempt, error)
            if attempt == self.max_attempts:
                break
            delay = backoff_delay(attempt, self.backoff)
            if retry_after is not None:
                delay = min(self.backoff[1], max(delay, retry_after))
            if stop is not None:
                if stop.wait(delay):
                    return None
            else:
                time.sleep(delay)
        return Outcome(False, status, self.max_attempts,
                       f"gave up after {self.max_attempts} attempts: {error}")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    return None


# -- the ledger ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeliveryRecord:
    """A delivery the ledger recorded."""

    subscription_id: str
    alert_id: str
    ok: bool
    status_code: int | None
    attempts: int
    error: str | None


Position = tuple[int, str | None]
"""``(next offset, cluster id)`` of a partition."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    subscription_id TEXT NOT NULL, alert_id TEXT NOT NULL, ok INTEGER NOT NULL,
    status_code INTEGER, attempts INTEGER NOT NULL, error TEXT, recorded_at TEXT NOT NULL,
    PRIMARY KEY (subscription_id, alert_id));
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    cluster_id TEXT, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS book_events (id TEXT PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL);
"""
_UPSERT_POSITION = """
INSERT INTO positions VALUES (?, ?, ?, ?) ON CONFLICT (topic, partition) DO UPDATE SET
    next_offset = CASE WHEN cluster_id IS excluded.cluster_id
                       THEN max(next_offset, excluded.next_offset)
                       ELSE excluded.next_offset END,
    cluster_id = excluded.cluster_id"""


class DeliveryLedger:
    """The worker's SQLite ledger: deliveries, positions, subscription events, outbox.

    Thread-safe (one connection behind a lock). Every write is one transaction.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with DeliveryLedger(pathlib.Path(tempfile.mkdtemp()) / "d.sqlite") as ledger:
    ...     ledger.save_positions({("m.monitoring", 0): 5}, "c1")
    ...     ledger.positions()
    {('m.monitoring', 0): (5, 'c1')}
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._con = sqlite3.connect(self.path, check_same_thread=False,
                                        isolation_level=None, timeout=30)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise DeliveryWorkerError(
                f"cannot open the delivery ledger {self.path}: {exc}; check the data "
                "directory (MODELOG_DATA_DIR) is writable and not used by another worker"
            ) from None

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._con.execute(sql, params)
                self._con.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._con.execute("ROLLBACK")
                raise DeliveryWorkerError(
                    f"writing the delivery ledger {self.path} failed: {exc}; nothing of it "
                    "was kept, restart the delivery worker"
                ) from None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    @staticmethod
    def _position_rows(positions: dict[tuple[str, int], int],
                       cluster_id: str | None) -> list[tuple[str, Sequence[Any]]]:
        return [(_UPSERT_POSITION, (t, p, o, cluster_id)) for (t, p), o in positions.items()]

    def positions(self) -> dict[tuple[str, int], Position]:
        """Stored ``(topic, partition) -> (next offset, cluster id)``."""
        rows = self._read("SELECT topic, partition, next_offset, cluster_id FROM positions")
        return {(t, int(p)): (int(o), c) for t, p, o, c in rows}

    def save_positions(self, positions: dict[tuple[str, int], int], cluster_id: str | None,
                       *, reset: bool = False) -> None:
        """Move positions forward (``reset``: set them as given)."""
        if reset:
            self._write([("INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?)",
                          (t, p, o, cluster_id)) for (t, p), o in positions.items()])
        else:
            self._write(self._position_rows(positions, cluster_id))

    def is_recorded(self, subscription_id: str, alert_id: str) -> bool:
        """Whether this delivery is recorded (accepted or given up)."""
        return bool(self._read("SELECT 1 FROM deliveries WHERE subscription_id = ? AND "
                               "alert_id = ?", (subscription_id, alert_id)))

    def record(self, report: AlertDelivered, topic: str,
               positions: dict[tuple[str, int], int], cluster_id: str | None) -> None:
        """In one transaction: the delivery, its report in the outbox, and positions."""
        self._write([
            ("INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)",
             (report.subscription_id, report.alert_id, int(report.ok), report.status_code,
              report.attempts, report.error, report.time.isoformat())),
            ("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?)",
             (report.id, topic, report.aggregate.encode(), codec.encode(report))),
            *self._position_rows(positions, cluster_id),
        ])

    def add_book_events(self, events: Sequence[Event],
                        positions: dict[tuple[str, int], int], cluster_id: str | None) -> None:
        """In one transaction: subscription events (deduplicated by id) and positions."""
        self._write([
            *(("INSERT OR IGNORE INTO book_events VALUES (?, ?)", (e.id, codec.encode(e)))
              for e in events),
            *self._position_rows(positions, cluster_id),
        ])

    def book(self) -> SubscriptionBook:
        """The subscription book folded from the stored subscription events."""
        book = SubscriptionBook()
        for (record,) in self._read("SELECT record FROM book_events ORDER BY rowid"):
            book.apply(codec.decode(record))
        return book

    def outbox(self) -> list[tuple[str, str, bytes, bytes]]:
        """Reports not yet acknowledged by the broker: ``(id, topic, key, value)``."""
        return [(i, t, bytes(k), bytes(v)) for i, t, k, v in
                self._read("SELECT id, topic, key, value FROM outbox ORDER BY rowid")]

    def sent(self, event_id: str) -> None:
        """The broker acknowledged a report: drop it from the outbox."""
        self._write([("DELETE FROM outbox WHERE id = ?", (event_id,))])

    def deliveries(self) -> list[DeliveryRecord]:
        """Every recorded delivery, in recording order."""
        return [DeliveryRecord(s, a, bool(ok), c, n, e) for s, a, ok, c, n, e in self._read(
            "SELECT subscription_id, alert_id, ok, status_code, attempts, error "
            "FROM deliveries ORDER BY rowid")]

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._con.close()

    def __enter__(self) -> DeliveryLedger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- the worker ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeliveryStats:
    """Counters of a worker since it started."""

    records: int
    delivered: int
    failed: int
    dead_lettered: int
    pending: int


@dataclasses.dataclass(frozen=True)
class _Job:
    subscription_id: str
    alert: Alert
    tp: tuple[str, int]
    offset: int


class DeliveryWorker:
    """Follow subscriptions and alerts; deliver every matching alert to its webhooks.

    Parameters
    ----------
    settings
        Broker, topic prefix and data directory (the ledger is
        ``<data_dir>/delivery.sqlite``; one worker per data directory).
    http_timeout, max_attempts, backoff
        See :class:`WebhookSender`.
    replay
        Also deliver alerts older than the subscription.
    lanes
        Delivery threads; a subscription always uses the same lane.
    batch_size
        Records read per poll.
    max_pending
        Deliveries queued before the worker stops reading alerts.

    Use :meth:`start` (or ``with``), then :meth:`poll_once` in a loop, or
    :meth:`run`; :func:`run_delivery` and :func:`deliver_once` wrap both.
    """

    def __init__(
        self, settings: Settings, *, http_timeout: float = 5.0, max_attempts: int = 8,
        backoff: tuple[float, float] = (0.5, 30.0), replay: bool = False, lanes: int = 4,
        batch_size: int = 500, max_pending: int = 1000,
    ) -> None:
        if lanes < 1 or batch_size < 1 or max_pending < 1:
            raise ConfigurationError("lanes, batch_size and max_pending must be at least 1")
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.sender = WebhookSender(http_timeout, max_attempts, backoff)
        self.replay = replay
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.ledger_path = settings.data_dir / LEDGER_FILE
        self._n_lanes = lanes
        self._stop = threading.Event()
        self._state = threading.Lock()
        self._pending: dict[tuple[str, int], dict[int, int]] = {}
        self._read_to: dict[tuple[str, int], int] = {}
        self._inflight: set[tuple[str, str]] = set()
        self._subs_next: dict[int, int] = {}
        self._failure: BaseException | None = None
        self._counts = {"records": 0, "delivered": 0, "failed": 0, "dead_lettered": 0}
        self._ledger: DeliveryLedger | None = None
        self._lanes: list[ThreadPoolExecutor] = []
        self._alerts: Any = None
        self._subs: Any = None
        self._producer: Any = None
        self._cluster_id: str | None = None
        self.book = SubscriptionBook()

    # -- life cycle --------------------------------------------------------------
    @property
    def ledger(self) -> DeliveryLedger:
        if self._ledger is None:
            raise DeliveryWorkerError("the delivery worker is not started; call start() first")
        return self._ledger

    def start(self) -> DeliveryWorker:
        """Open the ledger, re-send unacknowledged reports and assign the partitions."""
        from confluent_kafka import Consumer, KafkaException, Producer

        from modelog.streams.kafka import producer_config

        self._ledger = DeliveryLedger(self.ledger_path)
        self.book = self._ledger.book()
        ensure_topics(self.settings)
        conf = {
            **self.settings.kafka_config(),
            "group.id": f"{self.settings.topic_prefix}delivery",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50,
        }
        self._alerts = Consumer({**conf, "client.id": "modelog-delivery"})
        self._subs = Consumer({**conf, "client.id": "modelog-delivery-subscriptions"})
        self._producer = Producer({**producer_config(self.settings, linger_ms=5, bulk=True),
                                   "delivery.report.only.error": False,
                                   "client.id": "modelog-delivery-producer"})
        try:
            self._assign()
        except KafkaException as exc:
            self.close()
            raise DeliveryWorkerError(
                f"cannot read topics from {self.settings.bootstrap_servers} ({exc}); is the "
                "broker running?"
            ) from None
        for event_id, topic, key, value in self._ledger.outbox():
            self._produce_report(event_id, topic, key, value)
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"modelog-delivery-{i}")
                       for i in range(self._n_lanes)]
        log.info("delivery: %d active subscriptions, ledger %s", len(self.book),
                 self.ledger_path)
        return self

    def _assign(self) -> None:
        from confluent_kafka import TopicPartition

        metadata = self._alerts.list_topics(timeout=10)
        self._cluster_id = metadata.cluster_id
        stored = self.ledger.positions()
        restarts: dict[tuple[str, int], int] = {}
        for topic, consumer in ((self.topics.monitoring, self._alerts),
                                (self.topics.subscriptions, self._subs)):
            tmeta = metadata.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                raise DeliveryWorkerError(f"topic {topic} is missing on the broker")
            assignment = []
            for partition in sorted(tmeta.partitions):
                tp = (topic, partition)
                offset = self._start_offset(consumer, tp, stored.get(tp))
                if offset == 0 and tp in stored:
                    restarts[tp] = 0
                assignment.append(TopicPartition(topic, partition, offset))
                if topic == self.topics.monitoring:
                    self._read_to[tp] = offset
                else:
                    self._subs_next[partition] = offset
            consumer.assign(assignment)
        if restarts:
            self.ledger.save_positions(restarts, self._cluster_id, reset=True)

    def _start_offset(self, consumer: Any, tp: tuple[str, int], stored: Position | None) -> int:
        from confluent_kafka import TopicPartition

        if stored is None:
            return 0
        offset, cluster_id = stored
        if cluster_id != self._cluster_id:
            log.warning("delivery: %s[%d] was read from cluster %s, the broker is now %s; "
                        "reading it again from the beginning (the ledger skips recorded "
                        "deliveries)", tp[0], tp[1], cluster_id, self._cluster_id)
            return 0
        _low, high = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)
        # (a broker may under-report the end: Tansu does for multi-record batches)
        if offset > high and not offset_in_log(self.settings, tp[0], tp[1], offset - 1):
            log.warning("delivery: %s[%d] position %d is beyond the partition's end %d; "
                        "reading it again from the beginning", tp[0], tp[1], offset, high)
            return 0
        return offset

    def close(self, timeout: float = 30.0) -> None:
        """Stop the lanes (in-flight POSTs finish and are recorded), flush reports, close."""
        self._stop.set()
        for lane in self._lanes:
            lane.shutdown(wait=True, cancel_futures=True)
        self._lanes = []
        if self._producer is not None:
            remaining = self._producer.flush(timeout)
            if remaining:
                log.warning("delivery: %d AlertDelivered reports not acknowledged; they stay "
                            "in the outbox and are sent at the next start", remaining)
            self._producer = None
        for consumer in (self._alerts, self._subs):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()
        self._alerts = self._subs = None
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def __enter__(self) -> DeliveryWorker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------
    def poll_once(self, timeout: float = 0.2) -> int:
        """Read a batch of alerts (after catching up on subscriptions) and queue deliveries.

        Returns the number of alert-topic records read.

        Raises
        ------
        DeliveryWorkerError
            A lane or the ledger failed.
        """
        if self._failure is not None:
            raise DeliveryWorkerError(f"a delivery lane failed: {self._failure}; restart "
                                      "the delivery worker") from self._failure
        self._producer.poll(0)
        if self.pending >= self.max_pending:
            self._stop.wait(min(timeout, 0.05))
            return 0
        messages = _records(self._alerts.consume(self.batch_size, timeout))
        self.catch_up_subscriptions()
        if not messages:
            return 0
        decoded: list[tuple[tuple[str, int], int, Event | None]] = []
        invalid: list[tuple[Any, str]] = []
        for msg in messages:
            tp = (msg.topic(), msg.partition())
            event = _decode(msg, invalid)
            decoded.append((tp, msg.offset(), event))
        self._dead_letter(invalid)
        jobs: list[_Job] = []
        with self._state:
            for tp, offset, event in decoded:
                self._read_to[tp] = max(self._read_to.get(tp, 0), offset + 1)
                if event is None or not is_alert(event):
                    continue
                for sub in self.book.matching(event, replay=self.replay):
                    key = (sub.subscription_id, event.id)
                    if key in self._inflight or self.ledger.is_recorded(*key):
                        continue
                    self._inflight.add(key)
                    slots = self._pending.setdefault(tp, {})
                    slots[offset] = slots.get(offset, 0) + 1
                    jobs.append(_Job(sub.subscription_id, event, tp, offset))
            positions = self._positions()
            self._counts["records"] += len(messages)
        self.ledger.save_positions(positions, self._cluster_id)
        for job in jobs:
            lane = self._lanes[zlib.crc32(job.subscription_id.encode()) % len(self._lanes)]
            lane.submit(self._run_job, job)
        return len(messages)

    def catch_up_subscriptions(self, timeout: float = 10.0) -> None:
        """Read the subscriptions topic up to its current end into the book and ledger."""
        from confluent_kafka import TopicPartition

        topic = self.topics.subscriptions
        ends = {p: self._subs.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                                    cached=False)[1]
                for p in self._subs_next}
        deadline = time.monotonic() + timeout
        while (missing := sum(max(0, end - self._subs_next[p]) for p, end in ends.items())):
            if time.monotonic() > deadline:
                log.warning("delivery: could not read %s to its end within %.0f s", topic,
                            timeout)
                return
            # asking for exactly what is missing returns as soon as it arrived
            messages = _records(self._subs.consume(min(missing, 500), 0.2))
            invalid: list[tuple[Any, str]] = []
            events: list[Event] = []
            for msg in messages:
                event = _decode(msg, invalid)
                if isinstance(event, AlertSubscriptionCreated | AlertSubscriptionRemoved):
                    events.append(event)
                    self.book.apply(event)
            self._dead_letter(invalid)
            for msg in messages:
                self._subs_next[msg.partition()] = max(self._subs_next[msg.partition()],
                                                       msg.offset() + 1)
            if messages:
                self.ledger.add_book_events(
                    events, {(topic, p): o for p, o in self._subs_next.items()},
                    self._cluster_id)

    def _dead_letter(self, invalid: Sequence[tuple[Any, str]]) -> None:
        """Copy records unchanged to the dead-letter topic; wait until the broker has them."""
        if not invalid:
            return
        failures: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for msg, reason in invalid:
            self._producer.produce(
                self.topics.dead_letter, key=msg.key(), value=msg.value(),
                headers=dead_letter_headers(reason, msg.topic(), msg.partition(), msg.offset(),
                                            CONSUMER_NAME),
                on_delivery=on_delivery)
        remaining = self._producer.flush(30)
        if remaining or failures:
            raise DeliveryWorkerError(
                f"could not dead-letter {len(invalid)} records to {self.topics.dead_letter} "
                f"({failures[:1] or 'timeout'}); restart the delivery worker"
            )
        with self._state:
            self._counts["dead_lettered"] += len(invalid)
        for msg, reason in invalid:
            log.warning("delivery: dead-lettered %s[%d]@%d: %s", msg.topic(), msg.partition(),
                        msg.offset(), reason)

    # -- delivering (lane threads) ------------------------------------------------------
    def _positions(self) -> dict[tuple[str, int], int]:
        """Next offset to read per alert partition: no record with pending work is passed.

        Call with ``self._state`` held.
        """
        out = {}
        for tp, read_to in self._read_to.items():
            waiting = [o for o, n in self._pending.get(tp, {}).items() if n > 0]
            out[tp] = min(waiting) if waiting else read_to
        return out

    def _run_job(self, job: _Job) -> None:
        try:
            if self._stop.is_set():
                return  # abandoned: not recorded, the position stays before it
            sub = self.book.get(job.subscription_id)
            outcome: Outcome | None = None
            if sub is not None and not self.ledger.is_recorded(job.subscription_id,
                                                               job.alert.id):
                outcome = self.sender.send(sub, job.alert, self._stop)
                if outcome is None:
                    return
            self._finish(job, outcome)
        except BaseException as exc:
            log.exception("delivery: lane failed on %s -> %s", job.alert.id,
                          job.subscription_id)
            self._failure = exc

    def _finish(self, job: _Job, outcome: Outcome | None) -> None:
        with self._state:
            slots = self._pending[job.tp]
            slots[job.offset] -= 1
            if slots[job.offset] <= 0:
                del slots[job.offset]
            self._inflight.discard((job.subscription_id, job.alert.id))
            positions = self._positions()
        if outcome is None:  # unsubscribed meanwhile, or already recorded
            self.ledger.save_positions(positions, self._cluster_id)
            return
        report = delivered_event(job.subscription_id, job.alert, outcome,
                                 producer=self.settings.producer_name)
        topic = self.topics.for_event(report)
        self.ledger.record(report, topic, positions, self._cluster_id)
        with self._state:
            self._counts["delivered" if outcome.ok else "failed"] += 1
        if not outcome.ok:
            log.warning("delivery: gave up on %s -> %s: %s", job.alert.id, job.subscription_id,
                        outcome.error)
        self._produce_report(report.id, topic, report.aggregate.encode(), codec.encode(report))

    def _produce_report(self, event_id: str, topic: str, key: bytes, value: bytes) -> None:
        ledger = self.ledger

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                ledger.sent(event_id)
            else:
                log.warning("delivery: report %s not acknowledged (%s); it stays in the "
                            "outbox and is sent at the next start", event_id, err)

        self._producer.produce(topic, key=key, value=value, on_delivery=on_delivery)

    # -- state -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Deliveries queued or in progress."""
        with self._state:
            return sum(sum(s.values()) for s in self._pending.values())

    def monitoring_ends(self) -> dict[tuple[str, int], int]:
        """High watermarks of the alert partitions, now."""
        from confluent_kafka import TopicPartition

        return {tp: self._alerts.get_watermark_offsets(TopicPartition(*tp), timeout=10,
                                                       cached=False)[1]
                for tp in list(self._read_to)}

    def reached(self, ends: dict[tuple[str, int], int]) -> bool:
        """Whether every record below ``ends`` was read and all its deliveries ended."""
        with self._state:
            positions = self._positions()
        return all(positions.get(tp, 0) >= end for tp, end in ends.items())

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker acknowledged the reports produced so far."""
        if self._producer is not None and self._producer.flush(timeout):
            raise DeliveryError(f"AlertDelivered reports not acknowledged within {timeout} s; "
                                "they stay in the outbox")

    def stats(self) -> DeliveryStats:
        """Counters since :meth:`start`."""
        pending = self.pending
        with self._state:
            return DeliveryStats(pending=pending, **self._counts)

    def run(self, stop: threading.Event | None = None) -> None:
        """Deliver until ``stop`` is set (or SIGTERM/Ctrl-C in the main thread), then close."""
        stop = stop or threading.Event()
        try:
            with stop_on_sigterm(stop):
                if self._ledger is None:
                    self.start()
                while not stop.is_set():
                    self.poll_once(0.2)
        except KeyboardInterrupt:
            log.info("delivery: interrupted, stopping")
        finally:
            self.close()


@contextlib.contextmanager
def stop_on_sigterm(stop: threading.Event) -> Iterator[threading.Event]:
    """Within the block, SIGTERM sets ``stop`` (only in the main thread; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _records(messages: Sequence[Any]) -> list[Any]:
    """The records among consumed ``messages``; transient errors are librdkafka's to retry."""
    out = []
    for msg in messages:
        err = msg.error()
        if err is None:
            out.append(msg)
        elif err.fatal():
            raise DeliveryWorkerError(f"the Kafka consumer failed: {err}; restart the worker")
        else:
            log.debug("delivery: consumer notice %s", err)
    return out


def _decode(msg: Any, invalid: list[tuple[Any, str]]) -> Event | None:
    value = msg.value()
    try:
        if value is None:
            raise EventDecodeError("empty record (no value): not a modelog event")
        return codec.decode(value)
    except EventDecodeError as exc:
        invalid.append((msg, exc.reason))
        return None


# -- entry points -------------------------------------------------------------------------
def run_delivery(settings: Settings, stop: threading.Event | None = None,
                 **options: Any) -> None:
    """Run the delivery worker until ``stop`` is set, SIGTERM or Ctrl-C (``modelog deliver``).

    ``options`` are :class:`DeliveryWorker` keyword arguments.
    """
    DeliveryWorker(settings, **options).run(stop)


def deliver_once(settings: Settings, *, timeout: float = 60.0, **options: Any) -> DeliveryStats:
    """Deliver every alert on the log now, wait until each delivery ended, and stop.

    ``options`` are :class:`DeliveryWorker` keyword arguments.

    Raises
    ------
    DeliveryWorkerError
        When the deliveries did not end within ``timeout`` seconds.
    """
    with DeliveryWorker(settings, **options) as worker:
        worker.catch_up_subscriptions()
        ends = worker.monitoring_ends()
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise DeliveryWorkerError(
                    f"deliveries did not end within {timeout} s ({worker.pending} pending); "
                    "raise the timeout or check the receivers"
                )
            read = worker.poll_once(0.1)
            # Done when the end was reached, nothing is pending and a poll found nothing
            # more: some brokers (Tansu) under-report the high watermark of a
            # multi-record batch (its first offset + 1), so the end alone is not enough.
            if read == 0 and worker.pending == 0 and worker.reached(ends):
                break
        worker.flush()
        return worker.stats()


def _emit(settings: Settings, event: Event) -> None:
    """Produce one event and wait for the broker's acknowledgement."""
    from confluent_kafka import Producer

    from modelog.streams.kafka import producer_config

    ensure_topics(settings)
    errors: list[str] = []
    producer = Producer({**producer_config(settings, linger_ms=0, bulk=True),
                         "delivery.report.only.error": False})
    producer.produce(Topics.from_settings(settings).for_event(event),
                     key=event.aggregate.encode(), value=codec.encode(event),
                     on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
    if producer.flush(15) or errors:
        raise DeliveryError(
            f"the broker at {settings.bootstrap_servers} did not acknowledge the "
            f"{event.type_name()} ({errors[:1] or 'timeout'}); nothing changed, try again"
        )


def subscribe(
    settings: Settings, url: str, *, models: Sequence[str] = (), kinds: Sequence[str] = (),
    min_severity: str = "info", secret: str | None = None,
) -> str:
    """Subscribe ``url`` to alerts; return the new subscription id.

    Alerts from now on are delivered (alerts older than the subscription are
    not). Raises :class:`EventValidationError` for a bad URL, model, kind or
    severity.
    """
    event = subscription_event(url, models=models, kinds=kinds, min_severity=min_severity,
                               secret=secret, producer=settings.producer_name)
    _emit(settings, event)
    return event.subscription_id


def list_subscriptions(settings: Settings, timeout: float = 30.0) -> list[AlertSubscriptionCreated]:
    """Active subscriptions, read from the subscriptions topic (oldest first)."""
    from modelog.streams.registry_agent import LogTail

    book = SubscriptionBook()
    with LogTail(settings, Topics.from_settings(settings).subscriptions) as tail:
        for _p, _o, _k, value in tail.read_to_end(timeout):
            with contextlib.suppress(EventDecodeError):
                book.apply(codec.decode(value))
    return book.active()


def unsubscribe(settings: Settings, subscription_id: str, *, check: bool = True) -> None:
    """Cancel a subscription: no further alert is delivered to it.

    Raises
    ------
    UnknownSubscriptionError
        With ``check``, when no active subscription has this id.
    """
    if check and subscription_id not in {s.subscription_id for s in list_subscriptions(settings)}:
        raise UnknownSubscriptionError(
            f"no active alert subscription {subscription_id!r}; list them with "
            "`modelog alerts subscriptions`"
        )
    event = AlertSubscriptionRemoved(id=new_id(), time=codec.utcnow(), aggregate=subscription_id,
                                     producer=settings.producer_name,
                                     subscription_id=subscription_id)
    _emit(settings, codec.validate(event))


if __name__ == "__main__":  # pragma: no cover - `python -m modelog.streams.delivery`
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_delivery(Settings.from_env())
