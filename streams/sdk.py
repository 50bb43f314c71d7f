"""The producer SDK: ``modelog.connect()`` and the :class:`Client` it returns.

Every method turns a call into an immutable event of
:mod:`modelog.models.events` -- envelope filled in (``id``, ``time``,
``aggregate``, ``producer``), validated -- and queues it on its topic, keyed by
its aggregate. The shapes follow MLflow::

    import modelog

    with modelog.connect() as client:                     # MODELOG_BROKER, ...
        ds = client.log_dataset("churn-train", df)
        with client.start_run("churn", name="baseline") as run:
            run.use_dataset(ds)
            run.log_params({"max_depth": 6})
            run.log_metric("auc", 0.91)
        version = client.register_model("churn", model, run=run, dataset=ds, target="y")
        client.set_alias("churn", "production", version, reason="beats the baseline")
        model = client.load_model("churn", alias="production")
        pid = client.log_prediction("churn", 1, {"age": 42, "plan": "pro"}, 0.83)
        client.log_label("churn", pid, 1)

``log_prediction`` and ``log_label`` are the hot path: instead of the full
:func:`~modelog.models.codec.validate` they run cheap inline checks (which
still name field, value and rule in an :class:`EventValidationError`) and only
enqueue; encoding happens on the producer's sender thread. ``log_dataset``
returns only after the broker acknowledged its event.

The registry calls (``register_model``, ``set_alias``, ``remove_alias``) send
a *command* (``ModelVersionRequested``, ``AliasChangeRequested``) and wait for
the registry worker (:mod:`modelog.streams.registry_agent`, run by
``modelog worker`` / ``modelog up``) to answer on the registry topic: the
version number it assigned, the alias change, or a rejection raised as
:class:`~modelog.streams.errors.AliasChangeRejectedError` with the reason. ``registry()`` and
``load_model()`` fold the registry topic; :func:`registry_as_of` reads the
history from the DuckDB ledger (:mod:`modelog.store.registry`).

Datasets are content-addressed: logging the same rows and schema again yields
the same digest and URI, and re-emits ``DatasetVersionCreated`` with that
digest; consumers treat ``(name, digest)`` as the identity of a dataset
version and ignore repeats.

Runs are in :mod:`modelog.streams.run`, the registry calls in
:mod:`modelog.streams.registry_client`, the asyncio client in
:mod:`modelog.streams.async_client`, the input checks in
:mod:`modelog.models.validation`. May import :mod:`modelog.models`,
:mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import EventValidationError
from modelog.models.event_base import MAX_VERSION
from modelog.models.events import (
    ColumnSchema,
    DatasetVersionCreated,
    Event,
    LabelObserved,
    ModelVersionRegistered,
    PredictionMade,
)
from modelog.models.ids import UuidV7
from modelog.models.monitor_config import OUTPUT
from modelog.models.registry import ANSWERS
from modelog.models.validation import (
    FINITE_RULE,
    PLAIN_TYPES,
    RESERVED_RULE,
    Scalar,
    check_id,
    check_name,
    check_output,
    check_probabilities,
    check_scalars,
    check_time,
)
from modelog.store.artifacts import ArtifactStore
from modelog.streams.errors import RegistryAnswerEmitError
from modelog.streams.monitor_client import MonitorCalls
from modelog.streams.policy_client import PolicyCalls
from modelog.streams.predictor import PredictorCalls
from modelog.streams.producer import ClosingContext, EventProducer, OnFull, ProducerStats
from modelog.streams.registry_client import RegistryCalls
from modelog.streams.rollout_client import RolloutCalls
from modelog.streams.run import DatasetVersion, Run
from modelog.streams.topics import Topics, ensure_topics

__all__ = ["Client", "connect"]

E = TypeVar("E", bound=Event)
_json = msgspec.json.Encoder().encode
_PREDICTION_VERSION = PredictionMade.current_version()


class _PredictionWire(msgspec.Struct, tag_field="type", tag="PredictionMade", gc=False):
    """``PredictionMade``'s wire layout, for encoding only (the SDK's hot path).

    Same field names in the same order as the catalogue struct, so msgspec
    writes the same bytes; positional, without defaults, and not tracked by
    the garbage collector, which makes building one about as cheap as a tuple.
    """

    id: str
    time: dt.datetime
    aggregate: str
    producer: str
    schema_version: int
    prediction_id: str
    model: str
    model_version: int
    code_version: str | None
    inputs: dict[str, Any]
    output: Any
    alias: str | None
    shadow: bool
    paired_with: str | None
    probabilities: dict[str, float] | None


_MAX_CACHED_NAMES = 10_000


# -- the client ----------------------------------------------------------------------
class Client(RegistryCalls, PolicyCalls, RolloutCalls, PredictorCalls, MonitorCalls,
             ClosingContext):
    """Log predictions, labels, datasets, runs and registry changes.

    Build it with :func:`connect`. A context manager: leaving the ``with``
    block flushes and closes it.

    Parameters
    ----------
    settings
        Deployment settings (topics prefix, producer name, data directory).
    producer
        The transport; the client closes it on :meth:`close`.
    artifacts
        Where datasets and run artifacts are stored (default
        ``settings.data_dir / "artifacts"``).
    """

    def __init__(
        self, settings: Settings, producer: EventProducer, *,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.artifacts = artifacts or ArtifactStore.from_settings(settings)
        self.new_id = UuidV7()
        self._producer = producer
        self._send = producer.send
        self._serving = self.topics.serving
        self._name = settings.producer_name
        self._keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"Client(broker={self.settings.bootstrap_servers!r}, " \
               f"prefix={self.settings.topic_prefix!r})"

    def _key(self, model: Any, event_type: str) -> bytes:
        """The Kafka key of a model, validating (and caching) its name."""
        check_name(model, event_type, "model")
        key: bytes = model.encode()
        if len(self._keys) < _MAX_CACHED_NAMES:
            self._keys[model] = key
        return key

    # -- hot path ----------------------------------------------------------------------
    def log_prediction(
        self,
        model: str,
        version: int,
        inputs: Mapping[str, Scalar],
        output: Any,
        *,
        prediction_id: str | None = None,
        code_version: str | None = None,
        time: dt.datetime | None = None,
        probabilities: Mapping[Any, float] | None = None,
    ) -> str:
        """Record that ``model`` version ``version`` answered ``output`` for ``inputs``.

        A classifier passes the class it answered as ``output`` and, to have its
        accuracy and F1 estimated before labels arrive, its class probabilities
        as ``probabilities`` (``dict(zip(clf.classes_, clf.predict_proba(X)[0]))``;
        classes become text).

        Returns the prediction id (a new UUIDv7 unless given), to pass to
        :meth:`log_label` when the truth is known. When the SDK makes the
        prediction id it is also the event id. Only enqueues (about a
        microsecond or two); see :meth:`flush`. Without ``time`` the event
        time is the millisecond the call was made in (the one the event id
        embeds; it never goes back within a client, even if the clock does).

        Raises
        ------
        EventValidationError
            For a bad model name, a version that is not an int >= 1, inputs that
            are not a mapping of str -> finite scalar, a bad output, or
            probabilities that are not 2+ classes with probabilities in [0, 1]
            summing to 1, ``output`` among them.
        """
        try:
            key = self._keys[model]
        except (KeyError, TypeError):
            key = self._key(model, "PredictionMade")
        if type(version) is not int or not 1 <= version <= MAX_VERSION:
            raise EventValidationError("PredictionMade", "model_version", version,
                                       "must be an int >= 1 (at most 2**31 - 1)")
        feats = check_scalars(inputs, "PredictionMade", "inputs")
        if OUTPUT in feats:
            raise EventValidationError("PredictionMade", f"inputs.{OUTPUT}", feats[OUTPUT],
                                       RESERVED_RULE)
        if type(output) is float:
            if output - output != 0.0:
                raise EventValidationError("PredictionMade", "output", output, FINITE_RULE)
        elif type(output) not in PLAIN_TYPES:
            output = check_output(output, "PredictionMade", "output")
        if probabilities is not None:
            probabilities = check_probabilities(probabilities, output)
        new_id = self.new_id
        if prediction_id is None:
            prediction_id = event_id = new_id()
        else:
            check_id(prediction_id, "PredictionMade", "prediction_id")
            event_id = new_id()
        if time is None:
            time = new_id.time
        else:
            check_time(time, "PredictionMade")
        if code_version is not None and type(code_version) is not str:
            raise EventValidationError("PredictionMade", "code_version", code_version,
                                       "must be a str or None")
        # Encoded by the sender thread; same bytes as codec.encode(PredictionMade(...)).
        self._send(self._serving, key, _PredictionWire(
            event_id, time, model, self._name, _PREDICTION_VERSION, prediction_id, model,
            version, code_version, feats, output, None, False, None, probabilities), _json)
        return prediction_id

    def log_label(
        self, model: str, prediction_id: str, label: Any, *, time: dt.datetime | None = None
    ) -> None:
        """Record the ground truth of an earlier prediction.

        Keyed by the model name, like the prediction, so both land on the same
        partition in order.
        """
        try:
            key = self._keys[model]
        except (KeyError, TypeError):
            key = self._key(model, "LabelObserved")
        check_id(prediction_id, "LabelObserved", "prediction_id")
        label = check_output(label, "LabelObserved", "label")
        event_id = self.new_id()
        if time is None:
            time = self.new_id.time
        else:
            check_time(time, "LabelObserved")
        self._send(self._serving, key, LabelObserved(
            id=event_id, time=time, aggregate=model, producer=self._name,
            prediction_id=prediction_id, model=model, label=label), codec.encode)

    # -- generic path ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Validate any catalogue event fully, then queue it on its topic.

        Raises
        ------
        RegistryAnswerEmitError
            ``event`` is a registry answer (``ModelVersionRegistered``,
            ``AliasSet``, ``AliasRemoved``, ``AliasChangeRejected``,
            ``TrafficPolicySet``, ``TrafficPolicyRejected``): only the
            registry worker writes those, and readers ignore any other copy.
        """
        if isinstance(event, ANSWERS):
            how = ("client.register_model(...)" if isinstance(event, ModelVersionRegistered)
                   else "client.set_traffic(...)" if event.type_name().startswith("Traffic")
                   else "client.set_alias(...) / client.remove_alias(...)")
            raise RegistryAnswerEmitError(
                f"{event.type_name()} is written only by the registry worker, as its answer to "
                f"a command; every reader ignores any other copy. Use {how}, which sends the "
                "command and waits for the answer")
        codec.validate(event)
        self._producer.send_event(event)

    def subscribe_alerts(
        self, url: str, *, models: Sequence[str] = (), kinds: Sequence[str] = (),
        min_severity: str = "info", secret: str | None = None,
    ) -> str:
        """Subscribe a webhook to alerts; returns the subscription id.

        ``modelog deliver`` (started by ``modelog up``) POSTs each matching alert
        to ``url`` exactly once in effect, with a ``Modelog-Event-Id`` header.
        The URL must reach a public address unless ``MODELOG_WEBHOOK_ALLOW_PRIVATE``
        is set; a ``secret`` is encrypted with ``MODELOG_SECRET_KEY`` before it
        leaves the application.
        """
        from modelog.models.alerts import subscription_event
        from modelog.streams.webhooks import resolve_webhook

        event = subscription_event(url, models=models, kinds=kinds, min_severity=min_severity,
                                   secret=secret, secret_key=self.settings.secret_key,
                                   producer=self.settings.producer_name)
        resolve_webhook(url, allow_private=self.settings.webhook_allow_private)
        self.emit(event)
        self.flush()
        return event.subscription_id

    def _emit(
        self, cls: type[E], aggregate: str, *, time: dt.datetime | None = None,
        checked: bool = False, **fields: Any
    ) -> E:
        """Build and queue an event; ``checked`` means its fields were validated inline."""
        event = cls(id=self.new_id(), time=time or codec.utcnow(), aggregate=aggregate,
                    producer=self._name, **fields)
        if checked:
            self._producer.send_event(event)
        else:
            self.emit(event)
        return event

    # -- datasets -----------------------------------------------------------------------
    def log_dataset(
        self, name: str, data: Any, *, parents: Sequence[str] = (), description: str = ""
    ) -> DatasetVersion:
        """Store a dataset version content-addressed and emit ``DatasetVersionCreated``.

        ``data`` is a ``pyarrow.Table``, a ``pandas.DataFrame`` or the path of a
        Parquet or CSV file. The digest is canonical (schema + rows), so
        identical content always gives the same digest and URI; logging it
        again re-emits the event, which consumers dedupe by ``(name, digest)``.
        Returns after the broker acknowledged the event.
        """
        from modelog.models.profile import profile_table
        from modelog.store.artifacts import canonical_table, load_table

        check_name(name, "DatasetVersionCreated", "name")
        table = canonical_table(load_table(data))
        digest, uri = self.artifacts.put_table(table, canonical=True)
        columns = [ColumnSchema(f.name, str(f.type), f.nullable) for f in table.schema]
        # The per-column profile is the training reference monitoring compares against.
        self._emit(
            DatasetVersionCreated, name, name=name, digest=digest, columns=columns,
            num_rows=table.num_rows, uri=uri, parents=list(parents),
            profile=profile_table(table),
            description=description,
        )
        self.flush()
        return DatasetVersion(name=name, digest=digest, uri=uri, num_rows=table.num_rows)

    def get_dataset(self, name: str, version: str | int = "latest") -> Any:
        """The rows of a logged dataset version, as a ``pyarrow.Table``.

        ``version`` is a version number (``2`` or ``"v2"``), a digest prefix, or
        ``"latest"``. Versions are looked up in the projection (``modelog project``
        must have seen the dataset); the data is read from the artifact store and
        checked against its digest.

        Raises
        ------
        modelog.store.errors.NotFoundError
            Unknown dataset or version; the message lists what exists.
        """
        from modelog.store.errors import NotFoundError
        from modelog.store.queries import pick_version
        from modelog.store.reader import Reader

        rows = Reader(self.settings).query(
            "SELECT version, digest, uri FROM datasets WHERE name = ? ORDER BY version", [name]
        ).to_pylist()
        if not rows:
            raise NotFoundError(f"no dataset named {name!r} has been projected yet; log it "
                                "with client.log_dataset() and run `modelog project`")
        row = rows[-1] if str(version).lower() == "latest" else pick_version(name, rows, version)
        return self.artifacts.read_table(str(row["uri"]))

    # -- runs ---------------------------------------------------------------------------
    def start_run(
        self,
        experiment: str,
        name: str = "",
        *,
        tags: Mapping[str, str] | None = None,
        parent: Run | str | None = None,
        capture_code: bool = True,
    ) -> Run:
        """A new run of ``experiment``; enter it with ``with`` to start it."""
        parent_id = parent.run_id if isinstance(parent, Run) else parent
        return Run(self, experiment, name, tags=tags, parent_run_id=parent_id,
                   capture_code=capture_code)

    # -- lifecycle ----------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything logged so far is acknowledged (see ``EventProducer.flush``)."""
        self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop; idempotent. Later calls raise ``ClientClosedError``."""
        self._producer.close(timeout)

    @property
    def closed(self) -> bool:
        return self._producer.closed

    @property
    def stats(self) -> ProducerStats:
        """Counters: sent, acked, failed, dropped, buffered."""
        return self._producer.stats


# -- connecting ---------------------------------------------------------------------
def connect(
    broker: str | None = None,
    *,
    settings: Settings | None = None,
    producer_name: str | None = None,
    buffer_size: int = 100_000,
    on_full: OnFull = "block",
    block_timeout: float = 10.0,
    create_topics: bool = True,
    connect_timeout: float = 5.0,
) -> Client:
    """Connect to the broker and return a :class:`Client`.

    Parameters
    ----------
    broker
        Bootstrap servers; default from ``settings`` or ``MODELOG_BROKER``.
    settings
        Full settings; default ``Settings.from_env()``.
    producer_name
        Recorded as ``producer`` on every event (default ``<program>@<host>``).
    buffer_size, on_full, block_timeout
        The send buffer and what happens when it is full: ``"block"`` (up to
        ``block_timeout`` s), ``"drop"`` or ``"raise"``.
    create_topics
        Create modelog's topics if they are missing.
    connect_timeout
        Seconds to wait for the broker before raising ``BrokerUnavailableError``.

    Examples
    --------
    >>> import modelog
    >>> with modelog.connect("localhost:9092") as client:         # doctest: +SKIP
    ...     pid = client.log_prediction("churn", 3, {"age": 42}, 0.8)
    """
    if settings is None:
        s = Settings.from_env(broker=broker, producer_name=producer_name)
    else:
        s = settings.replace(broker=broker, producer_name=producer_name)
    producer = EventProducer(s, buffer_size=buffer_size, on_full=on_full,
                             block_timeout=block_timeout, connect_timeout=connect_timeout)
    try:
        if create_topics:
            ensure_topics(s)
    except BaseException:
        producer.close(timeout=1.0)
        raise
    return Client(s, producer)
