"""The model registry read from the DuckDB ledger: its state as of any time, its history.

The registry has no table of its own: it is the fold
(:mod:`modelog.models.registry`) of the registry events. This module is the one
place that reads those events from the projector's durable ``events`` ledger
(:func:`read_registry_events`) and folds them -- as they stand now or as they
stood at a time (:func:`fold_model`) -- and the one place that resolves a
version number or an alias to a registered version (:func:`resolve_version`).
A model's traffic policy (``ModelState.traffic``) is folded from the same
answers, so ``modelog.registry_as_of`` shows the split in force at any time.

Only the registry worker's answers to recorded commands count
(:mod:`modelog.models.registry_fold`): :func:`read_registry_log` reads the
model's commands and answers from the ledger and verifies every answer;
:func:`read_registry_events` returns the accepted ones, and
:func:`registry_state` reports the refused ones in ``ModelState.unverified``.
The SQL tables ``model_versions`` and ``alias_history`` keep only answers
whose command is in the ledger (:mod:`modelog.store.derivations`);
:func:`registry_history` re-checks their rows against the verified fold.
The SDK (``modelog.registry_as_of``, ``Client.load_model``), the CLI's
``registry show``, the lineage queries and the dashboard's registry page all
go through it.

Imports :mod:`modelog.models` and :mod:`modelog.store` only.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import AliasSet
>>> t = dt.datetime(2026, 3, 3, 14, tzinfo=dt.UTC)
>>> moved = AliasSet(id="e-1", time=t, aggregate="churn", model="churn",
...                  alias="production", model_version=2, reason="better f1")
>>> fold_model([moved], "churn").aliases["production"].version  # a fold trusts its input
2
>>> fold_model([moved], "churn", t - dt.timedelta(seconds=1)).aliases
{}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import replace

import pandas as pd

from modelog.models.codec import decode
from modelog.models.events import Event
from modelog.models.registry import (
    ModelState,
    RegistryEvent,
    RegistryState,
    Unverified,
    VersionInfo,
    as_of,
    fold,
)
from modelog.models.registry_fold import verify_log
from modelog.store.errors import NotFoundError
from modelog.store.queries import QuerySource, as_utc, fetch_frame, fetch_rows, listing

__all__ = [
    "COMMAND_TYPES",
    "REGISTRY_TYPES",
    "fold_model",
    "read_registry_events",
    "read_registry_log",
    "registry_history",
    "registry_state",
    "resolve_version",
]

REGISTRY_TYPES = ("ModelVersionRegistered", "AliasSet", "AliasRemoved", "AliasChangeRejected",
                  "TrafficPolicySet", "TrafficPolicyRejected")
"""The event types the registry is folded from."""

COMMAND_TYPES = ("ModelVersionRequested", "AliasChangeRequested", "TrafficPolicyRequested")
"""The registry command types (the answers are verified against them)."""

_EVENTS_SQL = (
    "SELECT payload FROM events WHERE aggregate = ? AND type IN ("
    + ", ".join("?" for _ in REGISTRY_TYPES) + ") ORDER BY time, id"
)
_COMMANDS_SQL = (
    "SELECT payload FROM events WHERE type IN ("
    + ", ".join("?" for _ in COMMAND_TYPES) + ") AND payload->>'$.model' = ? ORDER BY time, id"
)


def read_registry_log(source: QuerySource, model: str,
                      ) -> tuple[list[RegistryEvent], list[Unverified]]:
    """The verified registry answers of ``model`` in the ledger (in log order) and the refused.

    Raises
    ------
    modelog.store.errors.NoDataError
        Nothing was projected yet (no DuckDB file), when ``source`` is a ``Reader``.
    """
    commands = [decode(r["payload"]) for r in fetch_rows(source, _COMMANDS_SQL,
                                                    [*COMMAND_TYPES, model])]
    answers = [decode(r["payload"]) for r in fetch_rows(source, _EVENTS_SQL,
                                                   [model, *REGISTRY_TYPES])]
    return verify_log([*commands, *answers])


def read_registry_events(source: QuerySource, model: str) -> list[Event]:
    """The verified registry events of ``model`` in the ledger, in log order (empty if none).

    Raises
    ------
    modelog.store.errors.NoDataError
        Nothing was projected yet (no DuckDB file), when ``source`` is a ``Reader``.
    """
    return list(read_registry_log(source, model)[0])


def fold_model(events: Iterable[Event], model: str, as_of_time: dt.datetime | None = None,
               *, unverified: Iterable[Unverified] = ()) -> ModelState:
    """What the registry says about ``model`` after ``events``: now, or at ``as_of_time``.

    ``events`` are trusted: pass verified ones (:func:`read_registry_events`).
    ``as_of_time`` (timezone-aware) keeps only the events at or before it:
    "what was in production on March 3rd at 14:00, and why". An unknown model
    (or a time before it) gives an empty :class:`ModelState`; ``unverified``
    (the refused records to report) is attached to it.

    Raises
    ------
    modelog.models.errors.EventValidationError
        ``as_of_time`` has no time zone.
    """
    state = fold(events) if as_of_time is None else as_of(events, as_of_time)
    found = state.model(model) or ModelState(name=model)
    refused = tuple(unverified)
    return replace(found, unverified=refused) if refused else found


def resolve_version(state: RegistryState, name: str, version: int | None = None, *,
                    alias: str | None = None) -> VersionInfo:
    """The registered version ``version``, or the one ``alias`` points at, or the latest.

    Raises
    ------
    NotFoundError
        Naming what exists instead (models, versions or aliases).
    TypeError
        Both ``version`` and ``alias`` were given.

    Examples
    --------
    >>> resolve_version(RegistryState(), "churn")
    Traceback (most recent call last):
    ...
    modelog.store.errors.NotFoundError: model churn is not registered ...
    """
    model = state.model(name)
    if model is None or not model.versions:
        known = ", ".join(sorted(n for n, m in state.models.items() if m.versions)) or "none"
        raise NotFoundError(
            f"model {name} is not registered (registered models: {known}); register it "
            "with client.register_model(...) first"
        )
    if alias is not None:
        if version is not None:
            raise TypeError("pass either version or alias, not both")
        info = model.aliases.get(alias)
        if info is None:
            raise NotFoundError(
                f"alias {alias} of {name} is not set (aliases: "
                f"{', '.join(sorted(model.aliases)) or 'none'}); set it with client.set_alias"
            )
        version = info.version
    if version is None:
        version = model.latest_version
    found = model.versions.get(version) if version is not None else None
    if found is None:
        raise NotFoundError(
            f"version {version} of {name} does not exist (versions: "
            f"{', '.join(map(str, sorted(model.versions)))})"
        )
    return found


def _unknown_model(source: QuerySource, model: str) -> NotFoundError:
    models = [r["model"] for r in fetch_rows(
        source, "SELECT model FROM model_versions UNION SELECT model FROM alias_history "
                "ORDER BY 1")]
    return NotFoundError(f"no model {model!r} in the registry; models: {listing(models)}")


def registry_history(reader: QuerySource, model: str) -> pd.DataFrame:
    """Every alias change of ``model``, oldest first (the ``alias_history`` rows).

    Columns: ``time, alias, action, model_version, previous_version, actor,
    reason, command_id, event_id``.
    """
    df = fetch_frame(reader, """
SELECT time, alias, action, model_version, previous_version, actor, reason, command_id, event_id
FROM alias_history WHERE model = ? ORDER BY time, event_id""", [model])
    if not df.empty:  # re-check what SQL cannot: the whole decision (see the module doc)
        verified = {c.event_id for c in fold(read_registry_events(reader, model)).history(model)}
        df = df[df["event_id"].isin(verified)].reset_index(drop=True)
    if df.empty and not fetch_rows(reader, "SELECT 1 FROM model_versions WHERE model = ? LIMIT 1",
                              [model]):
        raise _unknown_model(reader, model)
    return df


def registry_state(reader: QuerySource, model: str,
                   as_of: dt.datetime | None = None) -> ModelState:
    """The registry's state of ``model``, folded from its registry events in the ledger.

    Parameters
    ----------
    as_of
        Fold only the events at or before this time (naive = UTC): "what was in
        production on March 3rd at 14:00, and why".

    Returns
    -------
    ModelState
        Versions, aliases (with since/who/why) and history; empty when
        ``as_of`` predates the model.

    Raises
    ------
    NotFoundError
        The ledger has no registry event of ``model`` (the message lists the models).
    """
    events, refused = read_registry_log(reader, model)
    if not events and not refused:
        raise _unknown_model(reader, model)
    return fold_model(events, model, None if as_of is None else as_utc(as_of),
                      unverified=refused)
