"""The registry's state types: what the fold of the registry events holds.

:class:`RegistryState` (all models) and :class:`ModelState` (one model: its
versions, aliases, alias history, traffic policy and the commands answered),
with the records they hold -- :class:`VersionInfo`, :class:`AliasInfo`,
:class:`AliasChange`, :class:`TrafficPolicy` -- and :class:`Unverified` (a
record a verified read refused). :mod:`modelog.models.registry` folds events
into them and re-exports them.

Pure: imports only :mod:`modelog.models`.

Examples
--------
>>> print(ModelState(name="churn").traffic)
production=1
>>> RegistryState().aliases("churn")
{}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from modelog.models.events import (
    AliasChangeRejected,
    AliasRemoved,
    AliasSet,
    ColumnSchema,
    Event,
    ModelVersionRegistered,
)
from modelog.models.policy_events import TrafficPolicyRejected, TrafficPolicySet

__all__ = [
    "DEFAULT_TRAFFIC",
    "PRODUCER",
    "AliasChange",
    "AliasInfo",
    "Decision",
    "ModelState",
    "RegistryState",
    "TrafficDecision",
    "TrafficPolicy",
    "Unverified",
    "VersionInfo",
]

PRODUCER = "modelog-registry"
"""The ``producer`` of every answer of the registry's single writer."""


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """How predictors route a model's requests: arms by weight, and shadow aliases.

    ``arms`` are ``(alias, weight)`` pairs (a request goes to one arm, drawn by
    weight, sticky per routing key); ``shadows`` score the same inputs off the
    request path. The default is ``production=1`` with no shadow; ``since``,
    ``actor``, ``reason``, ``command_id`` and ``event_id`` say where a set
    policy came from (``None``/empty for the default).

    Examples
    --------
    >>> p = TrafficPolicy(arms=(("production", 0.9), ("candidate", 0.1)), shadows=("shadow",))
    >>> print(p)
    production=0.9 candidate=0.1 shadows=shadow
    >>> p.weights
    {'production': 0.9, 'candidate': 0.1}
    """

    arms: tuple[tuple[str, float], ...] = (("production", 1.0),)
    shadows: tuple[str, ...] = ()
    since: dt.datetime | None = None
    actor: str = ""
    reason: str = ""
    command_id: str | None = None
    event_id: str | None = None

    @property
    def weights(self) -> dict[str, float]:
        """Alias -> weight, in the order the policy lists them."""
        return dict(self.arms)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every alias the policy names: the arms, then the shadows."""
        return (*(a for a, _ in self.arms), *self.shadows)

    def __str__(self) -> str:
        arms = " ".join(f"{a}={w:g}" for a, w in self.arms)
        return arms + (f" shadows={','.join(self.shadows)}" if self.shadows else "")


DEFAULT_TRAFFIC = TrafficPolicy()
"""``production=1``, no shadow: the policy of a model nobody routed."""

TrafficDecision = TrafficPolicySet | TrafficPolicyRejected
"""What :func:`modelog.models.traffic.decide_traffic` returns for a command."""

Decision = AliasSet | AliasRemoved | AliasChangeRejected
"""What :func:`~modelog.models.registry.decide` returns for an alias command."""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version of a model (from its ``ModelVersionRegistered`` event)."""

    model: str
    version: int
    run_id: str | None
    flavor: str
    artifact_uri: str
    artifact_digest: str
    signature: tuple[ColumnSchema, ...]
    description: str
    online: bool
    registered: dt.datetime
    producer: str
    event_id: str


@dataclass(frozen=True, slots=True)
class AliasChange:
    """One entry of a model's alias history: an alias was set or removed."""

    time: dt.datetime
    model: str
    alias: str
    action: Literal["set", "removed"]
    version: int | None
    previous_version: int | None
    actor: str
    reason: str
    command_id: str | None
    event_id: str


@dataclass(frozen=True, slots=True)
class AliasInfo:
    """Where an alias points: which version, since when, who set it, why, and what it replaced."""

    model: str
    alias: str
    version: int
    since: dt.datetime
    actor: str
    reason: str
    previous_version: int | None
    command_id: str | None
    event_id: str

    def __str__(self) -> str:
        who = f" by {self.actor}" if self.actor else ""
        why = f": {self.reason}" if self.reason else ""
        was = f" (was v{self.previous_version})" if self.previous_version is not None else ""
        return (
            f"{self.model}@{self.alias} -> v{self.version} since "
            f"{self.since.isoformat()}{who}{why}{was}"
        )


@dataclass(frozen=True, slots=True)
class Unverified:
    """A record of the registry topic that no reader folds, and why.

    ``source`` is whatever the reader passed along with the event (the edge's
    topic, partition and offset, to dead-letter it); the core never looks at it.
    """

    event: Event
    reason: str
    source: object = None

    def __str__(self) -> str:
        return f"{self.event.type_name()} {self.event.id}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ModelState:
    """Everything the registry knows about one model.

    Attributes
    ----------
    versions
        Version number -> registration.
    aliases
        Alias -> where it points now (removed aliases are absent).
    history
        Every alias change, in log order.
    decided
        Command id -> the event that answered it (alias set, removed or rejected;
        traffic policy set or rejected).
    seen
        Ids of the events already applied (duplicates are ignored).
    registrations
        Registration command id -> the ``ModelVersionRegistered`` that answered it.
    unverified
        Records of this model a verified read refused (see
        :mod:`modelog.models.registry_fold`); empty after a plain fold.
    traffic
        The traffic policy in force (:data:`DEFAULT_TRAFFIC` until one is set).
    """

    name: str
    versions: Mapping[int, VersionInfo] = field(default_factory=dict)
    aliases: Mapping[str, AliasInfo] = field(default_factory=dict)
    history: tuple[AliasChange, ...] = ()
    decided: Mapping[str, Decision | TrafficDecision] = field(default_factory=dict)
    seen: frozenset[str] = frozenset()
    registrations: Mapping[str, ModelVersionRegistered] = field(default_factory=dict)
    unverified: tuple[Unverified, ...] = ()
    traffic: TrafficPolicy = DEFAULT_TRAFFIC

    @property
    def latest_version(self) -> int | None:
        """The highest registered version number, or ``None``."""
        return max(self.versions) if self.versions else None


@dataclass(frozen=True, slots=True)
class RegistryState:
    """The registry folded from events: an immutable mapping of model name -> :class:`ModelState`.

    Never mutated; :func:`~modelog.models.registry.apply` returns a new state that shares every
    untouched model with the old one. ``unverified`` lists the records a
    verified read refused (:mod:`modelog.models.registry_fold`).
    """

    models: Mapping[str, ModelState] = field(default_factory=dict)
    unverified: tuple[Unverified, ...] = ()

    def model(self, name: str) -> ModelState | None:
        """The state of model ``name``, or ``None`` if no registry event mentions it."""
        return self.models.get(name)

    def versions(self, name: str) -> Mapping[int, VersionInfo]:
        """Registered versions of ``name`` (empty if unknown)."""
        m = self.models.get(name)
        return m.versions if m is not None else {}

    def aliases(self, name: str) -> Mapping[str, AliasInfo]:
        """Current aliases of ``name`` (empty if unknown)."""
        m = self.models.get(name)
        return m.aliases if m is not None else {}

    def history(self, name: str) -> tuple[AliasChange, ...]:
        """Alias history of ``name``, oldest first (empty if unknown)."""
        m = self.models.get(name)
        return m.history if m is not None else ()

    def traffic(self, name: str) -> TrafficPolicy:
        """The traffic policy of ``name`` (the default if unknown or never set)."""
        m = self.models.get(name)
        return m.traffic if m is not None else DEFAULT_TRAFFIC
