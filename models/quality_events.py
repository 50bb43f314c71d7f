"""Events of data-quality monitoring beyond drift: point anomalies, estimated
performance, multivariate drift and per-segment metrics.

Builds on :mod:`modelog.models.event_base` only; the catalogue
(:data:`modelog.models.events.CATALOGUE`) gathers :data:`EVENTS`.
"""

from __future__ import annotations

from modelog.models.event_base import Event

__all__ = ["EVENTS"]

EVENTS: tuple[type[Event], ...] = ()
"""The event types of this module, in the order the catalogue lists them."""
