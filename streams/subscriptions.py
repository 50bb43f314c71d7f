"""Alert subscriptions, as admin commands: subscribe, list, unsubscribe.

A service subscribes to alerts with :func:`subscribe` (an
:class:`~modelog.models.events.AlertSubscriptionCreated` on the subscriptions
topic, built and validated by :func:`~modelog.models.alerts.subscription_event`,
after the URL's host was resolved and found allowed by
:func:`~modelog.streams.webhooks.resolve_webhook`; its secret encrypted with
``Settings.secret_key``);
:func:`list_subscriptions` folds the topic into a
:class:`~modelog.models.alerts.SubscriptionBook`; :func:`unsubscribe` produces an
:class:`~modelog.models.events.AlertSubscriptionRemoved`. The delivery worker
(:mod:`modelog.streams.delivery`) follows the same topic. Kafka-facing: may
import :mod:`modelog.store`, :mod:`modelog.models` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from modelog.config import Settings
from modelog.models import codec
from modelog.models.alerts import SubscriptionBook, subscription_event
from modelog.models.errors import EventDecodeError
from modelog.models.events import AlertSubscriptionCreated, AlertSubscriptionRemoved, Event
from modelog.models.ids import new_id
from modelog.streams.errors import UnknownSubscriptionError
from modelog.streams.topics import Topics, ensure_topics
from modelog.streams.webhooks import resolve_webhook

__all__ = ["list_subscriptions", "subscribe", "unsubscribe"]


def _emit(settings: Settings, event: Event) -> None:
    """Produce one event and wait for the broker's acknowledgement."""
    from modelog.streams.kafka import Outgoing, new_producer, produce_and_wait

    ensure_topics(settings)
    producer = new_producer(settings, client_id="modelog-admin", linger_ms=0)
    record = Outgoing(Topics.from_settings(settings).for_event(event),
                      event.aggregate.encode(), codec.encode(event))
    produce_and_wait(producer, [record], timeout=15,
                     what=f"the {event.type_name()} was not recorded: nothing changed, try again")


def subscribe(
    settings: Settings, url: str, *, models: Sequence[str] = (), kinds: Sequence[str] = (),
    min_severity: str = "info", secret: str | None = None, allow_private: bool | None = None,
) -> str:
    """Subscribe ``url`` to alerts; return the new subscription id.

    Alerts from now on are delivered (alerts older than the subscription are
    not). The URL must reach public addresses only, unless ``allow_private``
    (default: ``settings.webhook_allow_private``); the delivery worker checks
    again before every request. A ``secret`` is stored encrypted with
    ``settings.secret_key`` (``MODELOG_SECRET_KEY``).

    Raises
    ------
    EventValidationError
        A bad URL, model, kind or severity.
    WebhookTargetError
        The URL is not http(s), does not resolve, or reaches a forbidden address.
    ConfigurationError
        A ``secret`` while ``MODELOG_SECRET_KEY`` is not set.
    """
    if allow_private is None:
        allow_private = settings.webhook_allow_private
    event = subscription_event(url, models=models, kinds=kinds, min_severity=min_severity,
                               secret=secret, secret_key=settings.secret_key,
                               producer=settings.producer_name)
    resolve_webhook(url, allow_private=allow_private)
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
