"""The HTTP edge of alert delivery: POST an alert to a subscriber's webhook, with retries.

:class:`WebhookSender` sends what :mod:`modelog.models.alerts` says to send
(:func:`~modelog.models.alerts.payload`, :func:`~modelog.models.alerts.request_headers`,
signed with the subscription's secret, decrypted with the deployment key) over
``httpx``, never follows a redirect (subscribe the final URL), retries
connection errors, 5xx and 429 with capped exponential backoff (honouring
``Retry-After``) and reports an :class:`~modelog.models.alerts.Outcome`.

Where a request may go (server-side request forgery): before every attempt
:func:`resolve_webhook` resolves the URL's host and refuses it unless every
address is allowed (:func:`~modelog.models.alerts.check_webhook_target`), and
the request is then sent to the address that was checked (the URL's host stays
in the ``Host`` header, the TLS SNI and the certificate check): a name that
resolves elsewhere a moment later (DNS rebinding) cannot redirect it. Imports
:mod:`modelog.errors`, :mod:`modelog.models` and ``httpx``; no broker, no database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import socket
import threading
import time
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx

from modelog.errors import ConfigurationError
from modelog.models.alerts import (
    WEBHOOK_SCHEMES,
    Alert,
    Outcome,
    backoff_delay,
    check_webhook_target,
    is_retryable,
    open_secret,
    payload,
    request_headers,
)
from modelog.models.errors import WebhookSecretError, WebhookTargetError
from modelog.models.events import AlertSubscriptionCreated

__all__ = ["UNRESOLVED", "WebhookSender", "WebhookTarget", "resolve_webhook"]

UNRESOLVED = "unresolved"
"""The :attr:`~modelog.models.errors.WebhookTargetError.rule` of a host that did not resolve."""


@dataclasses.dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL and the addresses its host resolved to, all of them checked."""

    url: httpx.URL
    addresses: tuple[str, ...]

    def pinned(self, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """``(URL with the host replaced by address, Host header, request extensions)``."""
        extensions: dict[str, Any] = {}
        if self.url.scheme == "https":
            extensions["sni_hostname"] = self.url.raw_host.decode("ascii")
        return (self.url.copy_with(host=address.split("%", 1)[0]),
                {"Host": self.url.netloc.decode("ascii")}, extensions)


def resolve_webhook(url: str, *, allow_private: bool = False) -> WebhookTarget:
    """Resolve a webhook URL's host and check every address it resolves to.

    Raises
    ------
    WebhookTargetError
        The URL is not http(s), does not resolve (rule :data:`UNRESOLVED`) or
        reaches an address webhooks must not reach
        (:func:`~modelog.models.alerts.check_webhook_target`).

    Examples
    --------
    >>> resolve_webhook("http://127.0.0.1:8080/hook", allow_private=True).addresses
    ('127.0.0.1',)
    >>> resolve_webhook("http://[::ffff:169.254.169.254]/latest/meta-data", allow_private=True)
    Traceback (most recent call last):
    ...
    modelog.models.errors.WebhookTargetError: refusing http://[::ffff:169.254.169.254]/latest/\
meta-data: ::ffff:169.254.169.254 is a cloud metadata endpoint (IPv4 169.254.169.254 in IPv6); \
webhooks never reach it (it hands out this machine's credentials), whatever \
MODELOG_WEBHOOK_ALLOW_PRIVATE says
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise WebhookTargetError(url, None, "url", f"refusing {url}: not a URL ({exc})") from None
    host = parsed.host
    if parsed.scheme not in WEBHOOK_SCHEMES or not host:
        check_webhook_target(url, parsed.scheme, host, ())  # raises, naming the rule
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parsed.raw_host.decode("ascii"), port,
                                   type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise WebhookTargetError(url, None, UNRESOLVED,
                                 f"cannot resolve {host} of {url}: {exc}") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    check_webhook_target(url, parsed.scheme, host, addresses, allow_private=allow_private)
    return WebhookTarget(parsed, addresses)

_MAX_BODY = 1 << 16
"""Bytes of a receiver's answer read (and discarded) before the connection is released."""


class WebhookSender:
    """POST an alert to a subscriber, retrying with exponential backoff.

    Thread-safe: the delivery lanes share one sender (and its connection pools,
    one per webhook host, so no connection made for one name serves another).

    Parameters
    ----------
    timeout
        Seconds to wait for each answer (and for connecting, sending, a pool slot).
    max_attempts
        POSTs before giving up.
    backoff
        ``(first, cap)`` delay in seconds between attempts, doubling each time.
        A ``Retry-After`` header (seconds or an HTTP date) is honoured up to ``cap``.
    allow_private
        Also reach loopback, private and link-local addresses
        (``Settings.webhook_allow_private``); cloud metadata endpoints never.
    secret_key
        The deployment key (``Settings.secret_key``) that decrypts the
        subscriptions' signing secrets.

    Examples
    --------
    >>> with WebhookSender(timeout=1.0, allow_private=True) as sender:
    ...     status, error, _ = sender.post("http://127.0.0.1:1/hook", b"{}", {})
    >>> status, error.startswith("cannot reach http://127.0.0.1:1/hook")
    (None, True)
    >>> WebhookSender().post("http://127.0.0.1:1/hook", b"{}", {})
    Traceback (most recent call last):
    ...
    modelog.models.errors.WebhookTargetError: refusing http://127.0.0.1:1/hook: 127.0.0.1 is a \
loopback address; ...
    """

    def __init__(self, timeout: float = 5.0, max_attempts: int = 8,
                 backoff: tuple[float, float] = (0.5, 30.0), *, allow_private: bool = False,
                 secret_key: str | None = None) -> None:
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
        self.allow_private = allow_private
        self.secret_key = secret_key
        self._lock = threading.Lock()
        self._clients: dict[bytes, httpx.Client] = {}

    def _http(self, host: bytes) -> httpx.Client:
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = self._clients[host] = httpx.Client(
                    timeout=httpx.Timeout(self.timeout), follow_redirects=False)
            return client

    def post(self, url: str, body: bytes,
             headers: dict[str, str]) -> tuple[int | None, str | None, float | None]:
        """One POST: ``(status code or None, error or None, Retry-After seconds or None)``.

        The host is resolved and checked first (:func:`resolve_webhook`), and
        the request goes to a checked address (the next one if it cannot be reached).

        Raises
        ------
        WebhookTargetError
            The URL may not be reached (a host that does not resolve is an
            error to retry instead).
        """
        try:
            target = resolve_webhook(url, allow_private=self.allow_private)
        except WebhookTargetError as exc:
            if exc.rule != UNRESOLVED:
                raise
            return None, str(exc), None
        error = f"cannot reach {url}"
        for address in target.addresses:
            pinned, host, extensions = target.pinned(address)
            try:
                with self._http(target.url.raw_host).stream(
                    "POST", pinned, content=body, headers={**headers, **host},
                    extensions=extensions,
                ) as response:
                    _drain(response)
                    status = response.status_code
                    if 200 <= status < 300:
                        return status, None, None
                    hint = " (redirects are not followed: subscribe the final URL)" if (
                        300 <= status < 400) else ""
                    return (status, f"HTTP {status} {response.reason_phrase}{hint}",
                            _retry_after(response.headers.get("Retry-After")))
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error = f"cannot reach {url} (at {address}): {exc}"
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError,
                    ValueError) as exc:
                return None, f"cannot POST to {url}: {type(exc).__name__}: {exc}", None
        return None, error, None

    def send(self, subscription: AlertSubscriptionCreated, alert: Alert,
             stop: threading.Event | None = None) -> Outcome | None:
        """Deliver ``alert``; ``None`` when ``stop`` was set before the delivery ended.

        A secret that cannot be decrypted or a URL that may not be reached
        (now: its host may resolve elsewhere than when it subscribed) ends the
        delivery at once, failed, with the reason; nothing is POSTed then.
        """
        body = payload(alert)
        secret: str | None = None
        if subscription.secret_ciphertext is not None:
            try:
                secret = open_secret(self.secret_key, subscription.secret_ciphertext,
                                     subscription.subscription_id)
            except WebhookSecretError as exc:
                return Outcome(False, None, 0, str(exc))
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self.max_attempts + 1):
            if stop is not None and stop.is_set():
                return None
            headers = request_headers(subscription, alert, body, secret=secret)
            try:
                status, error, retry_after = self.post(subscription.url, body, headers)
            except WebhookTargetError as exc:
                return Outcome(False, None, attempt - 1, str(exc))
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

    def close(self) -> None:
        """Close the pooled connections (idempotent; a later POST opens new ones)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _drain(response: httpx.Response) -> None:
    """Read (and drop) at most :data:`_MAX_BODY` bytes of the answer."""
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read >= _MAX_BODY:
            break


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta seconds or an HTTP date)."""
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
