"""What an alert is, who gets it, what is sent and when to retry: the alert policy.

The single home of the alert event types (:data:`ALERT_TYPES`, their names in
:data:`ALERT_TYPE_NAMES`), their severities and the ``kinds`` a subscription may
filter on; the projection's ``alerts`` table, the dashboard and the delivery
worker all derive from them. Pure: imports only the standard library,
:mod:`modelog.errors` and :mod:`modelog.models` (no broker, no HTTP, no database).

* :class:`SubscriptionBook` folds subscription events (duplicates ignored,
  removal is final);
* :func:`matches` decides whether an alert goes to a subscription (model
  filter, kind filter, minimum severity, and no alert raised before the
  subscription unless ``replay``);
* :func:`payload`, :func:`request_headers`, :func:`signature`,
  :func:`backoff_delay`, :func:`is_retryable` and :func:`delivered_event` say
  what is sent, when to retry and what is reported (:func:`verify_signature`
  is the receivers' check);
* :func:`check_webhook_target` says which addresses a webhook may reach
  (resolving names is the caller's I/O); :func:`seal_secret` encrypts its
  signing secret with the deployment key (the log holds only ciphertext);
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
>>> ALERT_TYPE_NAMES[:5]
('DriftDetected', 'DriftResolved', 'AnomalyDetected', 'SkewDetected', 'RetrainRequested')
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import os
import re
import time
import typing
from collections.abc import Sequence
from typing import TypeAlias, TypeGuard

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelog.errors import ConfigurationError
from modelog.models import codec
from modelog.models import quality_events as qe
from modelog.models.errors import EventValidationError, WebhookSecretError, WebhookTargetError
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
from modelog.models.serving_events import ShadowScoringFailed
from modelog.models.upcasters import WITHHELD_V1_SECRET

__all__ = [
    "ALERT_TYPES",
    "ALERT_TYPE_NAMES",
    "CLOUD_METADATA_ADDRESSES",
    "IMPLIED_SEVERITY",
    "KNOWN_KINDS",
    "MONITOR_ALERT_TYPE_NAMES",
    "SEVERITIES",
    "SIGNATURE_TOLERANCE",
    "WEBHOOK_SCHEMES",
    "Alert",
    "Outcome",
    "SubscriptionBook",
    "address_rule",
    "alert_kinds",
    "alert_severity",
    "backoff_delay",
    "check_webhook_target",
    "delivered_event",
    "is_alert",
    "is_retryable",
    "matches",
    "open_secret",
    "payload",
    "request_headers",
    "seal_secret",
    "signature",
    "subscription_event",
    "verify_signature",
]

Alert: TypeAlias = (
    DriftDetected | DriftResolved | AnomalyDetected | SkewDetected | RetrainRequested
    | qe.PerformanceDropEstimated | qe.MultivariateDriftDetected | qe.SegmentDegraded
    | ShadowScoringFailed
)
"""An alert event (any of :data:`ALERT_TYPES`)."""
ALERT_TYPES: tuple[type[Event], ...] = typing.get_args(Alert)
"""The monitoring events that are alerts (statistics and configuration are not)."""
ALERT_TYPE_NAMES: tuple[str, ...] = tuple(cls.type_name() for cls in ALERT_TYPES)
"""The type names of :data:`ALERT_TYPES`, in the same order (the ``alerts`` table's types)."""
_OTHERS = (RetrainRequested, qe.PerformanceDropEstimated, qe.MultivariateDriftDetected,
           qe.SegmentDegraded, ShadowScoringFailed)
MONITOR_ALERT_TYPE_NAMES: tuple[str, ...] = tuple(
    n for n in ALERT_TYPE_NAMES if n not in {c.type_name() for c in _OTHERS})
"""Alert types a serving monitor derives (not the retrain policy's, nor the quality monitor's)."""
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


def matches(subscription: AlertSubscriptionCreated, alert: Alert, *, replay: bool = False,
            raised: dt.datetime | None = None) -> bool:
    """Whether ``alert`` goes to ``subscription``.

    An empty ``models`` or ``kinds`` filter matches everything; ``kinds`` names
    alert type names (``DriftDetected``) or ``kind`` values (``concept``); the
    alert's severity must be at least ``min_severity`` (info < warning <
    critical). An alert raised before the subscription was created does not
    match unless ``replay``: ``raised`` is when the alert was written to the log
    (its record's timestamp), else its event time. The two differ when the
    traffic that raised it was logged late or backfilled (an alert about
    predictions made hours ago, raised a second ago, is delivered).

    Examples
    --------
    >>> import datetime as dt, msgspec
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    >>> sub = AlertSubscriptionCreated(id="e1", time=t, aggregate="s", subscription_id="s",
    ...                                url="https://x.test/h", kinds=["SkewDetected"])
    >>> skew = SkewDetected(id="e2", time=t, aggregate="m", model="m", feature="age",
    ...                     kind="missing")
    >>> old = msgspec.structs.replace(skew, time=t - dt.timedelta(hours=2))
    >>> matches(sub, skew), matches(sub, old), matches(sub, old, raised=t)
    (True, False, True)
    """
    if not replay and (alert.time if raised is None else raised) < subscription.time:
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

    def matching(self, alert: Alert, *, replay: bool = False, raised: dt.datetime | None = None
                 ) -> list[AlertSubscriptionCreated]:
        """Active subscriptions ``alert`` goes to (see :func:`matches`)."""
        return [s for s in self.active() if matches(s, alert, replay=replay, raised=raised)]

    def __contains__(self, subscription_id: object) -> bool:
        return subscription_id in self._active

    def __len__(self) -> int:
        return len(self._active)


def payload(alert: Alert) -> bytes:
    """The request body: the alert's own JSON wire record (valid against its JSON Schema)."""
    return codec.encode(alert)


SIGNATURE_TOLERANCE = 300
"""Seconds a signed request stays valid (:func:`verify_signature`'s default)."""


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Modelog-Signature`` header value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``.

    The HMAC-SHA256, keyed with the subscription's secret, covers ``f"{timestamp}."``
    and the raw body: a captured request cannot be replayed later (see :func:`verify_signature`).

    Examples
    --------
    >>> mac = hmac.new(b"s3cret", b'1767225600.{"a":1}', hashlib.sha256).hexdigest()
    >>> signature("s3cret", b'{"a":1}', 1767225600) == f"t=1767225600,v1={mac}"
    True
    """
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(secret: str, header: str, body: bytes, *,
                     tolerance: float = SIGNATURE_TOLERANCE, now: float | None = None) -> bool:
    """Whether a request's ``Modelog-Signature`` header is valid and recent: the receiver's check.

    The recipe, for receivers written in any language:

    1. take the raw request body (the bytes, before any JSON parsing) and the
       ``Modelog-Signature`` header, ``t=<unix seconds>,v1=<hex>`` (split on
       ``,`` then on the first ``=``; there may be several ``v1`` entries);
    2. refuse the request if ``t`` is more than ``tolerance`` seconds (5
       minutes) away from your clock: this is what stops replays;
    3. compute the hex HMAC-SHA256 of ``t`` + ``"."`` + body with the
       subscription's secret as the key, and accept if it equals one of the
       ``v1`` values, comparing in constant time (``hmac.compare_digest``);
    4. deduplicate on ``Modelog-Event-Id``: an alert can arrive more than once
       (each retry is signed again with a fresh ``t``).

    ``secret`` is the ``--secret`` given when subscribing, ``header`` the
    ``Modelog-Signature`` value, ``body`` the raw body, ``tolerance`` the largest
    accepted distance in seconds between ``t`` and ``now`` (the receiver's clock
    in Unix seconds, default :func:`time.time`).

    Examples
    --------
    >>> body = b'{"type":"DriftDetected"}'
    >>> header = signature("s3cret", body, 1767225600)
    >>> verify_signature("s3cret", header, body, now=1767225660)
    True
    >>> verify_signature("s3cret", header, body + b" ", now=1767225660)  # altered body
    False
    >>> verify_signature("other", header, body, now=1767225660)  # wrong secret
    False
    >>> verify_signature("s3cret", header, body, now=1767225600 + 301)  # too old: a replay
    False
    >>> verify_signature("s3cret", "sha256=0123", body)  # not this scheme
    False
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates if c.isascii())


def request_headers(
    subscription: AlertSubscriptionCreated, alert: Alert, body: bytes, *,
    secret: str | None = None, now: float | None = None,
) -> dict[str, str]:
    """Headers of the webhook request; ``Modelog-Event-Id`` is the idempotency key.

    With the subscription's opened ``secret`` (:func:`open_secret`) the request
    is signed (:func:`signature`) at ``now`` (default: the clock).
    """
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "modelog-delivery",
        "Modelog-Event-Id": alert.id,
        "Modelog-Event-Type": alert.type_name(),
        "Modelog-Subscription-Id": subscription.subscription_id,
    }
    if secret:
        timestamp = int(time.time() if now is None else now)
        headers["Modelog-Signature"] = signature(secret, body, timestamp)
    return headers


# -- where a webhook may go ---------------------------------------------------------------
WEBHOOK_SCHEMES: tuple[str, ...] = ("http", "https")
"""URL schemes a webhook may use."""
_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
CLOUD_METADATA_ADDRESSES: frozenset[_Address] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254",  # most clouds, AWS ECS, AWS IPv6
    "100.100.100.200", "168.63.129.16", "192.0.0.192"))  # Alibaba, Azure wire server, Oracle
"""Cloud metadata endpoints: they hand out the machine's credentials, so never a webhook."""
_METADATA = "a cloud metadata endpoint"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ALLOW = ("For a receiver on this machine or a private network, set "
          "MODELOG_WEBHOOK_ALLOW_PRIVATE=1 (and pass --allow-private to subscribe)")


def address_rule(address: str) -> str | None:
    """Why a webhook must not reach ``address`` (``"a loopback address"``, ...); ``None``: public.

    IPv4 addresses embedded in IPv6 ones (IPv4-mapped ``::ffff:a.b.c.d``,
    6to4, NAT64) are judged as the IPv4 address they reach.

    Examples
    --------
    >>> [address_rule(a) for a in ("93.184.216.34", "10.1.2.3", "::1", "169.254.169.254")]
    [None, 'a private address', 'a loopback address', 'a cloud metadata endpoint']
    >>> address_rule("::ffff:127.0.0.1")
    'a loopback address (IPv4 127.0.0.1 in IPv6)'
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if inner is not None:
            rule = address_rule(str(inner))
            return None if rule is None else f"{rule} (IPv4 {inner} in IPv6)"
    checks = ((ip in CLOUD_METADATA_ADDRESSES, _METADATA),
              (ip.is_unspecified, "the unspecified address"),
              (ip.is_loopback, "a loopback address"), (ip.is_link_local, "a link-local address"),
              (ip.is_multicast, "a multicast address"), (ip.is_reserved, "a reserved address"),
              (ip.is_private, "a private address"),
              (not ip.is_global, "an address that is not globally routable"))
    return next((rule for hit, rule in checks if hit), None)


def check_webhook_target(url: str, scheme: str, host: str, addresses: Sequence[str], *,
                         allow_private: bool = False) -> None:
    """Refuse a webhook whose ``host`` resolved to ``addresses`` unless every one is allowed.

    Allowed: public addresses; private, loopback, link-local, multicast and
    reserved ones only with ``allow_private``; cloud metadata endpoints
    (:data:`CLOUD_METADATA_ADDRESSES`) never. One forbidden address among
    several refuses the URL.

    Raises :class:`WebhookTargetError`, naming the URL, address, rule and how to allow it.

    Examples
    --------
    >>> check_webhook_target("http://127.0.0.1:9/x", "http", "127.0.0.1", ["127.0.0.1"])
    Traceback (most recent call last):
    ...
    modelog.models.errors.WebhookTargetError: refusing http://127.0.0.1:9/x: 127.0.0.1 is a \
loopback address; webhooks may only reach public addresses. For a receiver on this machine \
or a private network, set MODELOG_WEBHOOK_ALLOW_PRIVATE=1 (and pass --allow-private to subscribe)
    """
    if scheme not in WEBHOOK_SCHEMES:
        raise WebhookTargetError(url, None, "scheme", f"refusing {url}: webhooks use http:// "
                                 "or https:// only")
    if not addresses:
        raise WebhookTargetError(url, None, "no address", f"refusing {url}: {host or 'the host'}"
                                 " has no address; check the URL")
    for address in addresses:
        rule = address_rule(address)
        if rule is None or (allow_private and not rule.startswith(_METADATA)):
            continue
        literal = host.strip("[]").lower() == address.split("%", 1)[0].lower()
        what = f"{address} is {rule}" if literal else f"{host} resolves to {address}, {rule}"
        if rule.startswith(_METADATA):
            advice = ("webhooks never reach it (it hands out this machine's credentials), "
                      "whatever MODELOG_WEBHOOK_ALLOW_PRIVATE says")
        else:
            advice = f"webhooks may only reach public addresses. {_ALLOW}"
        raise WebhookTargetError(url, address, rule, f"refusing {url}: {what}; {advice}")


# -- the signing secret, encrypted with the deployment key ---------------------------------
_SEALED = "v1."
_NO_KEY = ("set MODELOG_SECRET_KEY (a long random string, e.g. the output of `python -c "
           "'import secrets; print(secrets.token_urlsafe(32))'`) to the same value for "
           "`modelog alerts subscribe` and `modelog deliver`")


@functools.lru_cache(maxsize=4)
def _cipher(secret_key: str) -> AESGCM:
    """AES-256-GCM keyed by HKDF-SHA256 of the deployment key (any passphrase)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"modelog webhook secret v1").derive(secret_key.encode())
    return AESGCM(key)


def seal_secret(secret_key: str | None, secret: str, subscription_id: str) -> str:
    """Encrypt a signing secret for ``subscription_id`` (AES-GCM; the id is authenticated).

    Raises :class:`ConfigurationError` when no deployment key is set (``MODELOG_SECRET_KEY``).

    Examples
    --------
    >>> sealed = seal_secret("deployment key", "s3cret", "s-1")
    >>> "s3cret" in sealed, open_secret("deployment key", sealed, "s-1")
    (False, 's3cret')
    """
    if not secret_key:
        raise ConfigurationError(f"a webhook secret is stored encrypted and no key is set: "
                                 f"{_NO_KEY}; nothing was subscribed")
    nonce = os.urandom(12)
    sealed = _cipher(secret_key).encrypt(nonce, secret.encode(), subscription_id.encode())
    return _SEALED + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_secret(secret_key: str | None, ciphertext: str, subscription_id: str) -> str:
    """Decrypt what :func:`seal_secret` made for ``subscription_id``.

    Raises :class:`WebhookSecretError` (saying what to do) for no key, the wrong
    key, another subscription's ciphertext, or a v1 secret that was withheld.

    Examples
    --------
    >>> open_secret("another key", seal_secret("deployment key", "s3cret", "s-1"), "s-1")
    Traceback (most recent call last):
    ...
    modelog.models.errors.WebhookSecretError: cannot decrypt the signing secret of subscription \
's-1': MODELOG_SECRET_KEY is not the key it was subscribed with; ...
    """
    sid = repr(subscription_id)
    if ciphertext == WITHHELD_V1_SECRET:
        raise WebhookSecretError(
            f"subscription {sid} was made by an older modelog that stored its signing secret "
            "in clear; that secret is not used any more: unsubscribe it and subscribe again "
            "with --secret (and MODELOG_SECRET_KEY set)")
    if not secret_key:
        raise WebhookSecretError(f"subscription {sid} signs its requests and no key is set "
                                 f"to decrypt its secret: {_NO_KEY}")
    try:
        if not ciphertext.startswith(_SEALED):
            raise ValueError(ciphertext[:8])
        raw = base64.urlsafe_b64decode(ciphertext[len(_SEALED):])
        plain = _cipher(secret_key).decrypt(raw[:12], raw[12:], subscription_id.encode())
        return plain.decode()
    except (InvalidTag, ValueError):
        raise WebhookSecretError(
            f"cannot decrypt the signing secret of subscription {sid}: MODELOG_SECRET_KEY is "
            "not the key it was subscribed with; set the same MODELOG_SECRET_KEY for `modelog "
            "alerts subscribe` and `modelog deliver`, or unsubscribe and subscribe again"
        ) from None


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
    min_severity: str = "info", secret: str | None = None, secret_key: str | None = None,
    producer: str = "", subscription_id: str | None = None, now: dt.datetime | None = None,
) -> AlertSubscriptionCreated:
    """Build and validate an :class:`AlertSubscriptionCreated` (no I/O).

    A ``secret`` is stored only encrypted with ``secret_key`` (the deployment
    key, ``MODELOG_SECRET_KEY``; see :func:`seal_secret`). Where the URL may
    lead is checked by the caller (:func:`check_webhook_target` needs the
    resolved addresses).

    Raises
    ------
    EventValidationError
        Naming the field, value and rule (URL scheme, model name, unknown kind,
        severity).
    ConfigurationError
        A ``secret`` without a ``secret_key``.

    Examples
    --------
    >>> subscription_event("ftp://x", kinds=["concept"])
    Traceback (most recent call last):
    ...
    modelog.models.errors.EventValidationError: invalid AlertSubscriptionCreated: field 'url' ...
    """
    name = AlertSubscriptionCreated.type_name()
    for model in models:
        if not isinstance(model, str) or not _NAME.fullmatch(model):
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
        secret_ciphertext=None if secret is None else seal_secret(secret_key, secret, sid),
    )
    codec.validate(event)
    return event
