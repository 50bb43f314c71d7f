"""Events of the closed loop's policies: retraining, traffic, comparison, promotion, rollback.

A policy is data in the log, never code: each ``*PolicySet`` event carries
flat scalars that a pure parser in :mod:`modelog.models` validates (field,
value and rule named on error) before anything acts on them. A later
``*PolicySet`` for the same model replaces the earlier one; an empty
``policy`` resets it to the defaults.

* :class:`RetrainPolicySet` -- when a model asks for retraining and how its
  candidate is gated (monitoring topic, keyed by model: the worker's retrain
  trigger of that model's partition reads it).
* :class:`TrafficPolicyRequested` (a command) -- how predictors split requests
  between aliases (A/B by weight, sticky per routing key) and which aliases
  score the same inputs in shadow. The registry's single writer answers with
  :class:`TrafficPolicySet` or :class:`TrafficPolicyRejected`.
* :class:`ComparisonReported` -- a challenger compared with the baseline on the
  same traffic once labels arrived: the test, effect, interval and sample size.
* :class:`PromotionPolicySet` -- when a challenger is promoted to production and
  when a promoted version is rolled back.
* :class:`RolloutDecided` -- one automatic promotion or rollback, with its
  evidence; the alias change it causes is an ordinary ``AliasChangeRequested``
  whose ``command_id`` is derived from this event's id, so a replayed or
  duplicated decision never moves an alias twice.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.codec import decode, encode
>>> event = TrafficPolicyRequested(
...     id="0190a6f2-0000-7000-8000-000000000001", command_id="c-1",
...     time=dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc), aggregate="churn",
...     model="churn", arms={"production": 0.9, "candidate": 0.1}, shadows=["shadow"])
>>> decode(encode(event)).arms
{'production': 0.9, 'candidate': 0.1}
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from modelog.models.event_base import Event, Id, Name, Scalar, Version, Window

__all__ = [
    "EVENTS",
    "ComparisonReported",
    "PromotionPolicySet",
    "RetrainPolicySet",
    "RolloutDecided",
    "TrafficPolicyRejected",
    "TrafficPolicyRequested",
    "TrafficPolicySet",
]

Weight = Annotated[float, msgspec.Meta(ge=0.0, le=1_000_000.0)]


class RetrainPolicySet(Event, frozen=True, kw_only=True):
    """A model's retrain policy changed (aggregate: the model).

    ``policy`` holds the flat keys of
    :meth:`modelog.models.retrain.RetrainPolicy.as_params` plus the gate's
    (``gate_metric``, ``gate_margin``, ``gate_min_rows``); keys left out keep
    their defaults, ``{}`` resets the model to the deployment's defaults.
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    policy: dict[str, Scalar] = {}
    actor: str = ""
    reason: str = ""


class TrafficPolicyRequested(Event, frozen=True, kw_only=True):
    """Someone asked to route a model's traffic (a command, aggregate: the model).

    ``arms`` maps an alias to its weight (A/B: a request goes to one arm, drawn
    by weight and sticky per routing key); ``shadows`` lists aliases that score
    the same inputs off the request path. ``{"production": 1}`` with no shadow
    is the default policy.
    """

    stream: ClassVar[str] = "registry_commands"
    command_id: Id
    model: Name
    arms: dict[Name, Weight]
    shadows: list[Name] = []
    actor: str = ""
    reason: str = ""


class TrafficPolicySet(Event, frozen=True, kw_only=True):
    """A model's traffic policy is now in force (the registry's answer)."""

    stream: ClassVar[str] = "registry"
    command_id: str | None = None
    model: Name
    arms: dict[Name, Weight]
    shadows: list[Name] = []
    actor: str = ""
    reason: str = ""


class TrafficPolicyRejected(Event, frozen=True, kw_only=True):
    """A traffic policy command was refused, with the reason."""

    stream: ClassVar[str] = "registry"
    command_id: Id
    model: Name
    reason: str


class ComparisonReported(Event, frozen=True, kw_only=True):
    """A challenger version was compared with the baseline on the same traffic.

    ``effect`` is the challenger's advantage in the metric's better direction
    (positive: the challenger is better), ``ci_low``/``ci_high`` its confidence
    interval at ``confidence``, ``p_value`` the test's two-sided p-value on
    ``pairs`` labelled pairs (shadow: the same requests) or observations (A/B
    arms: ``test`` names an unpaired test then).
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    baseline_version: Version
    challenger_version: Version
    baseline_alias: str | None = None
    challenger_alias: str | None = None
    metric: str
    higher_is_better: bool = True
    test: str
    pairs: Annotated[int, msgspec.Meta(ge=0)]
    baseline_value: float
    challenger_value: float
    effect: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    p_value: float
    window: Window = Window()


class PromotionPolicySet(Event, frozen=True, kw_only=True):
    """A model's promotion and rollback policy changed (aggregate: the model).

    ``policy`` holds flat scalars parsed by :mod:`modelog.models.rollout`
    (e.g. ``challenger``, ``alpha``, ``min_pairs``, ``rollback``,
    ``cooldown_s``); ``{}`` turns automatic promotion and rollback off.
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    policy: dict[str, Scalar] = {}
    actor: str = ""
    reason: str = ""


class RolloutDecided(Event, frozen=True, kw_only=True):
    """The promotion policy decided to move ``production`` (aggregate: the model).

    ``action`` ``promote`` moves it from ``from_version`` to ``to_version``
    (the challenger); ``rollback`` moves it back to the previous production
    version. ``evidence_id`` names the :class:`ComparisonReported` (or alarm)
    that justified it; ``reason`` says it in words.
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    action: Literal["promote", "rollback"]
    from_version: Version | None = None
    to_version: Version
    evidence_id: str | None = None
    reason: str
    policy: dict[str, Scalar] = {}
    #: The ``command_id`` of the ``AliasChangeRequested`` this decision sent.
    command_id: str | None = None


EVENTS: tuple[type[Event], ...] = (
    RetrainPolicySet,
    TrafficPolicyRequested,
    TrafficPolicySet,
    TrafficPolicyRejected,
    ComparisonReported,
    PromotionPolicySet,
    RolloutDecided,
)
"""The event types of this module, in the order the catalogue lists them."""
