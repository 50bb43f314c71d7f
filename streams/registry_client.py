"""The SDK's registry calls: register versions, move aliases, read the registry, load models.

The registry calls send a *command* (``ModelVersionRequested``,
``AliasChangeRequested``) and wait for the registry worker
(:mod:`modelog.streams.registry_agent`) to answer on the registry topic.
:class:`RegistryCalls` holds them for :class:`~modelog.streams.sdk.Client`;
:meth:`RegistryCalls.registry` folds the live registry topic, while
:func:`registry_as_of` reads the durable history from the DuckDB ledger
(:mod:`modelog.store.registry`, which also resolves versions and aliases).
Every read is verified (:mod:`modelog.models.registry_fold`): only the
registry worker's answers to recorded commands count, the refused records are
reported in ``unverified``; the answer a command waits for is checked the same
way before it is returned.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import replace
from time import monotonic
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models import registry as _registry
from modelog.models.errors import EventValidationError
from modelog.models.events import (
    AliasChangeRejected,
    AliasChangeRequested,
    AliasRemoved,
    AliasSet,
    ColumnSchema,
    Event,
    ModelVersionRegistered,
    ModelVersionRequested,
)
from modelog.models.ids import UuidV7
from modelog.models.policy_events import TrafficPolicyRequested
from modelog.models.registry import (
    ModelState,
    RegistryEvent,
    RegistryState,
    Unverified,
    VersionInfo,
)
from modelog.models.validation import artifact_suffix, check_name
from modelog.store.artifacts import ArtifactStore
from modelog.streams.errors import (
    AliasChangeRejectedError,
    ModelNotFoundError,
    RegistryTimeoutError,
)
from modelog.streams.producer import EventProducer
from modelog.streams.run import DatasetVersion, Run
from modelog.streams.topics import Topics

__all__ = ["RegistryCalls", "default_actor", "load_version", "read_registry_log",
           "read_registry_topic", "registry_as_of"]


class RegistryCalls:
    """The registry methods of :class:`~modelog.streams.sdk.Client` (a mixin).

    Uses the client's settings, topics, artifact store, id generator and producer.
    """

    settings: Settings
    topics: Topics
    artifacts: ArtifactStore
    new_id: UuidV7
    _producer: EventProducer
    _name: str

    def register_model(
        self,
        name: str,
        model: Any = None,
        *,
        run: Run | str | None = None,
        flavor: str | None = None,
        signature: Sequence[tuple[str, str]] | None = None,
        dataset: Any = None,
        target: str | None = None,
        artifact_uri: str | None = None,
        artifact_digest: str | None = None,
        description: str = "",
        online: bool = False,
        timeout: float = 30.0,
    ) -> int:
        """Register a new version of model ``name``; return its number once the registry decided it.

        With ``model`` (a fitted scikit-learn, River or PyTorch model) the model
        is serialized with :func:`modelog.models.flavors.dump` (``flavor``
        detected unless given), stored content-addressed in the artifact
        store, and its flavor, SHA-256 digest and library versions are
        recorded. Without it, ``artifact_uri``/``artifact_digest`` describe an
        artifact stored elsewhere (``flavor`` defaults to ``"custom"``).

        An ``online=True`` River model is registered as a specification
        (flavor ``river-spec``: allow-listed River classes and their
        hyperparameters, :mod:`modelog.models.online_spec`; learned state is not
        kept), which the workers build themselves and never unpickle. A model
        using a class off the allow-list is refused with
        :class:`~modelog.models.errors.OnlineSpecError`; ``flavor="river"``
        registers a pickle instead, which workers load only when started with
        ``MODELOG_ONLINE_ALLOW_PICKLE=1``.

        The input ``signature`` (``(column, type)`` pairs) is inferred from
        ``dataset`` when not given: a :class:`DatasetVersion` (read back from
        the artifact store), a pandas DataFrame or a pyarrow Table, minus the
        label column ``target``.

        Sends a ``ModelVersionRequested`` command and waits until the registry
        worker answers with the ``ModelVersionRegistered`` that numbers it.

        Raises
        ------
        RegistryTimeoutError
            No registry worker answered within ``timeout`` seconds.
        EventValidationError
            A bad model name, or ``target`` is not a column of ``dataset``.
        OnlineSpecError
            An online River model that cannot be written as a specification.
        """
        if isinstance(model, int) and not isinstance(model, bool):
            raise TypeError(
                f"register_model({name!r}, {model!r}, ...): version numbers are assigned by "
                "the registry now; pass the fitted model (or artifact_uri=...) and use the "
                "version it returns"
            )
        check_name(name, "ModelVersionRequested", "model")
        library_versions: dict[str, str] = {}
        if model is not None:
            from modelog.models.flavors import detect_flavor, dump

            if online and flavor is None and detect_flavor(model) == "river":
                flavor = "river-spec"  # the workers build it from allow-listed classes
            serialized = dump(model, flavor)
            artifact_digest, artifact_uri = self.artifacts.put_bytes(
                serialized.data, artifact_suffix(serialized.format))
            flavor, library_versions = serialized.flavor, dict(serialized.library_versions)
        if signature is None and dataset is not None:
            signature = self._infer_signature(dataset, target)
        command_id = self.new_id()
        command = ModelVersionRequested(
            id=command_id, time=codec.utcnow(), aggregate=name, producer=self._name,
            command_id=command_id, model=name,
            run_id=run.run_id if isinstance(run, Run) else run, flavor=flavor or "custom",
            artifact_uri=artifact_uri or "", artifact_digest=artifact_digest or "",
            signature=[ColumnSchema(col, typ) for col, typ in (signature or ())],
            description=description, online=online, library_versions=library_versions,
            actor=default_actor(),
        )
        answer = self.send_command(command, timeout)
        assert isinstance(answer, ModelVersionRegistered)  # the only answer to a registration
        return answer.model_version

    def _infer_signature(self, dataset: Any, target: str | None) -> list[tuple[str, str]]:
        from modelog.models.flavors import infer_signature
        from modelog.store.artifacts import load_table

        table = (self.artifacts.read_table(dataset.uri) if isinstance(dataset, DatasetVersion)
                 else load_table(dataset))
        if target is not None:
            if target not in table.column_names:
                raise EventValidationError(
                    "ModelVersionRequested", "target", target,
                    f"must be a column of the dataset (columns: {', '.join(table.column_names)})",
                )
            table = table.drop_columns([target])
        return infer_signature(table)

    def set_alias(
        self, model: str, alias: str, version: int, *, reason: str = "",
        actor: str | None = None, expected_version: int | None = None, timeout: float = 30.0,
    ) -> AliasSet:
        """Point ``alias`` (``production``, ``staging``...) at ``version``; return the ``AliasSet``.

        Sends an ``AliasChangeRequested`` command and waits for the registry's
        answer. ``expected_version`` (optimistic concurrency) makes the change
        conditional on the alias pointing there now. ``actor`` defaults to
        ``<OS user>@<host>``.

        Raises
        ------
        AliasChangeRejectedError
            The registry refused (unknown version, no reason for ``production``,
            ``expected_version`` conflict...); ``.reason`` says what to do.
        RegistryTimeoutError
            No registry worker answered within ``timeout`` seconds.
        """
        answer = self._change_alias(model, alias, version, reason, actor, expected_version,
                                    timeout)
        assert isinstance(answer, AliasSet)
        return answer

    def remove_alias(
        self, model: str, alias: str, *, reason: str = "", actor: str | None = None,
        expected_version: int | None = None, timeout: float = 30.0,
    ) -> AliasRemoved:
        """Remove ``alias`` from ``model``; return the ``AliasRemoved`` (see :meth:`set_alias`)."""
        answer = self._change_alias(model, alias, None, reason, actor, expected_version,
                                    timeout)
        assert isinstance(answer, AliasRemoved)
        return answer

    def _change_alias(
        self, model: str, alias: str, version: int | None, reason: str, actor: str | None,
        expected_version: int | None, timeout: float,
    ) -> Event:
        check_name(model, "AliasChangeRequested", "model")
        command_id = self.new_id()
        command = AliasChangeRequested(
            id=command_id, time=codec.utcnow(), aggregate=model, producer=self._name,
            command_id=command_id, model=model, alias=alias, model_version=version,
            expected_version=expected_version, actor=actor or default_actor(), reason=reason,
        )
        answer = self.send_command(command, timeout)
        if isinstance(answer, AliasChangeRejected):
            raise AliasChangeRejectedError(answer)
        return answer

    def send_command(
        self, command: ModelVersionRequested | AliasChangeRequested | TrafficPolicyRequested,
        timeout: float = 30.0,
    ) -> Event:
        """Send a registry command and wait for the registry event that answers it.

        For callers that choose the ``command_id`` themselves (the retrain runner
        derives it from the request, so a retried job gets the registry's first
        answer back instead of a second version); ``register_model`` and
        ``set_alias`` build the command for you.
        """
        from modelog.streams.registry_agent import LogTail, decode_records

        codec.validate(command)
        deadline = monotonic() + timeout
        # Position at the end *before* sending, so the answer cannot be missed.
        with LogTail(self.settings, self.topics.registry, from_end=True) as tail:
            self._producer.send_event(command)
            # the broker's acknowledgement is not the registry's answer: give it its own
            # time, so a slow broker is not reported as a missing registry worker
            self._producer.flush(max(timeout, 10.0))
            while True:
                for event in decode_records(tail.poll(0.2)):
                    if (getattr(event, "command_id", None) == command.command_id
                            and self._is_registry_fact(event)):
                        return event
                if monotonic() > deadline:
                    raise RegistryTimeoutError(
                        f"no registry worker answered within {timeout:g} s: is `modelog "
                        f"worker` (or `modelog up`) running against "
                        f"{self.settings.bootstrap_servers}? The command "
                        f"{command.command_id} stays on the log and is answered when one starts."
                    )

    def _is_registry_fact(self, answer: Event) -> bool:
        """Whether ``answer`` (read from the registry topic) is a verified registry fact."""
        accepted, _ = read_registry_log(self.settings, answer.aggregate)
        return answer in accepted

    def registry(self, name: str | None = None, *,
                 as_of: dt.datetime | None = None) -> RegistryState:
        """The registry folded from the registry topic: all models, or only ``name``.

        ``as_of`` (timezone-aware) gives the registry as it stood then: which
        version every alias pointed at, since when, who moved it and why.
        Only the registry worker's answers to recorded commands count; the
        records refused are in the state's ``unverified`` (with the reason).
        """
        events, refused = read_registry_log(self.settings, name)
        state = _registry.as_of(events, as_of) if as_of is not None else _registry.fold(events)
        return replace(state, unverified=tuple(refused))

    def load_model(self, name: str, version: int | None = None, *, alias: str | None = None,
                   **flavor_kwargs: Any) -> Any:
        """Load a registered model: ``version``, the version ``alias`` points at, or the latest.

        The artifact's SHA-256 is compared with the digest its registration
        recorded *before* anything is deserialized. ``flavor_kwargs`` go to the
        flavor's loader (``trusted=`` for sklearn, ``model=`` for pytorch).

        Raises
        ------
        ModelNotFoundError
            Unknown model, version or alias, or a version without a stored artifact.
        modelog.models.errors.ArtifactDigestMismatch
            The stored bytes are not the registered ones.
        """
        from modelog.store.errors import NotFoundError
        from modelog.store.registry import resolve_version

        try:
            info = resolve_version(self.registry(name), name, version, alias=alias)
        except NotFoundError as e:
            raise ModelNotFoundError(str(e)) from None
        return load_version(self.artifacts, info, **flavor_kwargs)


def load_version(artifacts: ArtifactStore, info: VersionInfo, **flavor_kwargs: Any) -> Any:
    """Load registered version ``info`` from ``artifacts``, its digest checked before loading.

    Raises
    ------
    ModelNotFoundError
        The version was registered without an artifact.
    modelog.models.errors.ArtifactDigestMismatch
        The stored bytes are not the registered ones (nothing was deserialized).
    """
    from modelog.models.flavors import load_verified

    if not info.artifact_digest:
        raise ModelNotFoundError(
            f"version {info.version} of {info.model} was registered without an artifact "
            f"(flavor {info.flavor}); register the fitted model to be able to load it"
        )
    data = artifacts.read_bytes(info.artifact_uri or info.artifact_digest)
    return load_verified(data, info.artifact_digest, info.flavor, **flavor_kwargs)


def default_actor() -> str:
    """Who is acting, for the registry's history: ``<OS user>@<host>``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def read_registry_log(settings: Settings, name: str | None = None, *, timeout: float = 30.0,
                      ) -> tuple[list[RegistryEvent], list[Unverified]]:
    """The verified registry answers (of model ``name`` only, if given) and the refused records.

    Reads the registry topic, then the commands topic, to their ends, and
    keeps an answer only as the registry worker's decision of a recorded
    command (:class:`~modelog.models.registry_fold.RegistryFold`).
    """
    from modelog.streams.registry_agent import RegistryFollower

    with RegistryFollower(settings) as follower:
        accepted = follower.read_to_end(timeout)
        refused = follower.fold.take_unverified()
    return ([e for e in accepted if name is None or e.model == name],
            [u for u in refused if name is None or u.event.aggregate == name])


def read_registry_topic(settings: Settings, name: str | None = None, *,
                        timeout: float = 30.0) -> list[Event]:
    """The verified events of the registry topic (of model ``name`` only, if given), in order.

    The live registry (what :meth:`Client.registry` folds); the durable history
    is the ledger's (:func:`modelog.store.registry.read_registry_events`).
    """
    return list(read_registry_log(settings, name, timeout=timeout)[0])


def registry_as_of(name: str, time: dt.datetime, *,
                   settings: Settings | None = None) -> ModelState:
    """What the registry said about model ``name`` at ``time``: versions, aliases, history.

    Reads the history from the durable DuckDB ledger the projector writes
    (it outlives the broker's log); when nothing was projected yet, folds the
    registry topic instead. ``time`` must be timezone-aware.

    Examples
    --------
    >>> import datetime as dt, modelog
    >>> state = modelog.registry_as_of("churn", dt.datetime(2026, 3, 3, 14, tzinfo=dt.UTC))
    ...                                                             # doctest: +SKIP
    >>> print(state.aliases["production"])                          # doctest: +SKIP
    churn@production -> v2 since 2026-03-02T09:12:40+00:00 by alice@build-7: better f1
    """
    from modelog.store.errors import NoDataError
    from modelog.store.reader import Reader
    from modelog.store.registry import fold_model
    from modelog.store.registry import read_registry_log as read_ledger

    s = settings if settings is not None else Settings.from_env()
    events: list[RegistryEvent]
    try:
        events, refused = read_ledger(Reader(s), name)
    except NoDataError:
        events, refused = read_registry_log(s, name)
    return fold_model(events, name, time, unverified=refused)
