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
:class:`AliasChangeRejectedError` with the reason. ``registry()`` and
``load_model()`` fold the registry topic; :func:`registry_as_of` reads the
history from the DuckDB ledger.

Datasets are content-addressed: logging the same rows and schema again yields
the same digest and URI, and re-emits ``DatasetVersionCreated`` with that
digest; consumers treat ``(name, digest)`` as the identity of a dataset
version and ignore repeats.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import itertools
import math
import numbers
import os
import re
import threading
import traceback as tb_module
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from random import getrandbits
from time import monotonic, time_ns
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec

from modelog.config import Settings
from modelog.models import codec
from modelog.models import registry as _registry
from modelog.models.errors import EventValidationError
from modelog.models.events import (
    NAME_PATTERN,
    AliasChangeRejected,
    AliasChangeRequested,
    AliasRemoved,
    AliasSet,
    ArtifactLogged,
    CodeVersion,
    ColumnSchema,
    DatasetVersionCreated,
    Event,
    LabelObserved,
    MetricPoint,
    MetricsLogged,
    ModelVersionRegistered,
    ModelVersionRequested,
    ParamsLogged,
    PredictionMade,
    RunDatasetUsed,
    RunFailed,
    RunFinished,
    RunStarted,
)
from modelog.models.registry import ModelState, RegistryState, VersionInfo
from modelog.store.artifacts import ArtifactStore
from modelog.streams.codeversion import capture_code_version
from modelog.streams.errors import ClientClosedError, StreamsError
from modelog.streams.producer import ClosingContext, EventProducer, OnFull, ProducerStats
from modelog.streams.topics import Topics, ensure_topics

__all__ = [
    "AliasChangeRejectedError",
    "AsyncClient",
    "Client",
    "DatasetVersion",
    "ModelNotFoundError",
    "RegistryTimeoutError",
    "Run",
    "RunNotActiveError",
    "check_output",
    "check_scalars",
    "connect",
    "connect_async",
    "default_actor",
    "read_registry_events",
    "registry_as_of",
    "resolve_version",
]

E = TypeVar("E", bound=Event)
Scalar = str | int | float | bool | None
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

_NAME = re.compile(NAME_PATTERN)
_PLAIN = frozenset({str, int, bool, type(None)})
_UTC = dt.UTC
_SCALAR_RULE = "must be a str, int, float, bool or None"
_FINITE_RULE = "numbers must be finite (no NaN or infinity)"
METRIC_BATCH = 1_000
"""Metric points buffered per run before a ``MetricsLogged`` event is emitted."""
_MAX_CACHED_NAMES = 10_000
_SUFFIX_OK = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class RunNotActiveError(StreamsError):
    """A run was used before ``with`` entered it or after it ended."""


class RegistryTimeoutError(StreamsError, TimeoutError):
    """No registry worker answered a registry command in time."""


class AliasChangeRejectedError(StreamsError):
    """The registry refused an alias change; ``reason`` says why and what to do.

    Attributes
    ----------
    event
        The ``AliasChangeRejected`` event on the registry topic.
    reason
        Its reason.
    """

    def __init__(self, event: AliasChangeRejected) -> None:
        self.event = event
        self.reason = event.reason
        target = "removal" if event.model_version is None else f"-> v{event.model_version}"
        super().__init__(f"{event.model}@{event.alias} {target} rejected: {event.reason}")


class ModelNotFoundError(StreamsError, LookupError):
    """The registry has no such model, version or alias (the message lists what exists)."""


# -- ids ---------------------------------------------------------------------------
class _UuidV7:
    """UUIDv7 strings, increasing within one generator, several times cheaper than
    :func:`modelog.models.ids.new_id` (this is the SDK's hot path).

    Layout (RFC 9562): 48-bit Unix milliseconds, version 7, variant ``10``, 26
    bits random per generator (re-drawn after ``fork``) and a 48-bit counter
    whose top bit is set and whose start is random (46 bits) -- the "monotonic
    random" method: ids made in the same millisecond stay unique and ordered
    without a lock (``next`` on an ``itertools.count`` is atomic), and two
    processes collide only if they draw the same 26 bits *and* overlapping
    counter ranges in the same millisecond.

    Examples
    --------
    >>> gen = _UuidV7()
    >>> a, b = gen(), gen()
    >>> a < b, a[14], a[19] in "89ab"
    (True, '7', True)
    """

    def __init__(self) -> None:
        self._ms = 0
        self._prefix = ""
        #: The millisecond of the last id, as an aware UTC ``datetime`` (shared by
        #: every id of that millisecond; the SDK uses it as the event time).
        self.time = dt.datetime.fromtimestamp(0, _UTC)
        self._reseed()
        ref = weakref.ref(self)

        def reseed_in_child() -> None:  # a forked child must not repeat the parent's ids
            gen = ref()
            if gen is not None:
                gen._reseed()

        os.register_at_fork(after_in_child=reseed_in_child)

    def _reseed(self) -> None:
        r = getrandbits(26)
        self._mid = f"{r >> 14:03x}-{0x8000 | (r & 0x3FFF):04x}-"
        # The counter's top bit is set, so ``hex`` always gives 12 digits: 2**46
        # ids per generator before it would carry out of its 48 bits.
        self._suffix = map(hex, itertools.count((1 << 47) | getrandbits(46)))
        self._ms = 0

    def __call__(self) -> str:
        ms = time_ns() // 1_000_000
        if ms > self._ms:  # a clock stepping back keeps the last prefix: still increasing
            self._ms = ms
            self._prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{self._mid}"
            self.time = dt.datetime.fromtimestamp(ms / 1000, _UTC)
        return self._prefix + next(self._suffix)[2:]


# -- inline validation (pure) --------------------------------------------------
def _coerce(value: Any, event_type: str, field: str) -> Scalar:
    """A scalar of an unusual type (numpy scalar, float/int subclass) as a plain one."""
    if isinstance(value, bool | str):
        return bool(value) if isinstance(value, bool) else str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            raise EventValidationError(event_type, field, value, _FINITE_RULE)
        return f
    if value is None or type(value) in _PLAIN:
        return value  # type: ignore[no-any-return]
    raise EventValidationError(event_type, field, value, _SCALAR_RULE)


def check_scalars(values: Any, event_type: str, field: str) -> dict[str, Scalar]:
    """A copy of ``values`` checked as a mapping of ``str`` -> finite scalar.

    numpy scalars become plain Python values.

    Raises
    ------
    EventValidationError
        Naming ``field`` (or ``field.<key>``), the value and the rule broken.

    Examples
    --------
    >>> check_scalars({"age": 42, "plan": "pro"}, "PredictionMade", "inputs")
    {'age': 42, 'plan': 'pro'}
    >>> try:
    ...     check_scalars({"age": float("nan")}, "PredictionMade", "inputs")
    ... except EventValidationError as e:
    ...     print(e.field, e.value, e.rule, sep=" | ")
    inputs.age | nan | numbers must be finite (no NaN or infinity)
    """
    if type(values) is dict:
        out: dict[str, Any] = values.copy()
    elif isinstance(values, Mapping):
        out = dict(values)
    else:
        raise EventValidationError(
            event_type, field, values, f"must be a mapping of str -> scalar ({_SCALAR_RULE})"
        )
    for k, v in out.items():
        t = type(v)
        if t is float:
            if v - v:  # NaN or +-inf (x - x is 0.0 for every finite float)
                raise EventValidationError(event_type, f"{field}.{k}", v, _FINITE_RULE)
        elif t is not str and t is not int and t is not bool and v is not None:
            out[k] = _coerce(v, event_type, f"{field}.{k}")
        if type(k) is not str:
            raise EventValidationError(event_type, field, k, "keys must be str")
    return out


def check_output(value: Any, event_type: str, field: str) -> Any:
    """``value`` checked as a prediction output or label.

    Allowed: a scalar (str, int, float, bool, None), a list of floats (class
    probabilities, embeddings; numpy arrays are converted) or a dict of str ->
    float; every number finite.

    Examples
    --------
    >>> check_output([0.2, 0.8], "PredictionMade", "output")
    [0.2, 0.8]
    >>> try:
    ...     check_output({"a": float("inf")}, "PredictionMade", "output")
    ... except EventValidationError as e:
    ...     print(e.field, e.value, e.rule, sep=" | ")
    output.a | inf | numbers must be finite (no NaN or infinity)
    """
    t = type(value)
    if t is float:
        if value - value != 0.0:
            raise EventValidationError(event_type, field, value, _FINITE_RULE)
        return value
    if t in _PLAIN:
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise EventValidationError(event_type, field, k, "keys must be str")
            out[k] = _finite_float(v, event_type, f"{field}.{k}")
        return out
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) >= 1:
        value = value.tolist()  # numpy arrays, tensors
    if isinstance(value, list | tuple):
        return [_finite_float(v, event_type, f"{field}[{i}]") for i, v in enumerate(value)]
    return _coerce(value, event_type, field)


def _finite_float(v: Any, event_type: str, field: str) -> float:
    if type(v) is float and math.isfinite(v):  # the common case, without the ABC check
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise EventValidationError(event_type, field, v, "must be a number")
    f = float(v)
    if not math.isfinite(f):
        raise EventValidationError(event_type, field, v, _FINITE_RULE)
    return f


def _check_name(value: Any, event_type: str, field: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise EventValidationError(
            event_type, field, value,
            "1-128 characters: letters, digits, '.', '_', '-', starting with a letter or digit",
        )
    return value


def _check_id(value: Any, event_type: str, field: str) -> str:
    if type(value) is not str or not 0 < len(value) <= 128:
        raise EventValidationError(event_type, field, value, "must be a str of 1-128 characters")
    return value


def _check_time(value: Any, event_type: str) -> None:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise EventValidationError(
            event_type, "time", value, "must be a timezone-aware datetime (UTC)"
        )


# -- results -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DatasetVersion:
    """A stored dataset version: its name, canonical digest, file URI and row count."""

    name: str
    digest: str
    uri: str
    num_rows: int


# -- runs ------------------------------------------------------------------------------
class Run:
    """A training run; use it as a context manager (``with`` or ``async with``).

    Entering emits ``RunStarted`` (with the code version); leaving emits
    ``RunFinished``, or ``RunFailed`` with the exception and traceback (the
    exception propagates). Metrics are buffered and sent as ``MetricsLogged``
    batches of up to :data:`METRIC_BATCH` points, and when the run ends.

    Examples
    --------
    >>> with client.start_run("churn", name="baseline") as run:     # doctest: +SKIP
    ...     run.log_params({"lr": 0.1})
    ...     for step in range(10):
    ...         run.log_metric("loss", 1.0 / (step + 1), step=step)
    """

    def __init__(
        self,
        client: Client,
        experiment: str,
        name: str = "",
        *,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        capture_code: bool = True,
    ) -> None:
        self.client = client
        self.run_id = client.new_id()
        self.experiment = experiment
        self.name = name
        self.tags = dict(tags or {})
        self.parent_run_id = parent_run_id
        self.capture_code = capture_code
        self.status: Literal["created", "running", "finished", "failed"] = "created"
        self.code: CodeVersion | None = None
        self._params: dict[str, Scalar] = {}
        self._metrics: list[MetricPoint] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, experiment={self.experiment!r}, status={self.status!r})"

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> Run:
        """Emit ``RunStarted``; ``with`` calls it for you."""
        if self.status != "created":
            raise RunNotActiveError(f"run {self.run_id} was already started ({self.status})")
        _check_name(self.experiment, "RunStarted", "experiment")
        if self.capture_code:
            self.code = capture_code_version(artifact_store=self.client.artifacts)
        else:
            self.code = CodeVersion(note="code capture disabled")
        self.client._emit(
            RunStarted, self.run_id, run_id=self.run_id, experiment=self.experiment,
            name=self.name, parent_run_id=self.parent_run_id, tags=self.tags, code=self.code,
        )
        self.status = "running"
        return self

    def end(self, error: BaseException | None = None) -> None:
        """Send buffered metrics, then ``RunFinished`` (or ``RunFailed`` for ``error``)."""
        if self.status != "running":
            return
        self._flush_metrics()
        if error is None:
            self.client._emit(RunFinished, self.run_id, run_id=self.run_id)
            self.status = "finished"
        else:
            self.client._emit(
                RunFailed, self.run_id, run_id=self.run_id,
                error=f"{type(error).__name__}: {error}"[:4000],
                traceback="".join(tb_module.format_exception(error))[-20_000:],
            )
            self.status = "failed"

    def __enter__(self) -> Run:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(exc)

    async def __aenter__(self) -> Run:
        return await asyncio.to_thread(self.start)  # git runs in a subprocess

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(exc)

    def _require_running(self) -> None:
        if self.status != "running":
            raise RunNotActiveError(
                f"run {self.run_id} is {self.status}: log to it inside "
                "`with client.start_run(...) as run:`"
            )

    # -- logging -------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Scalar]) -> None:
        """Record hyperparameters. A parameter may be logged again only with the same value."""
        self._require_running()
        checked = check_scalars(params, "ParamsLogged", "params")
        with self._lock:
            for k, v in checked.items():
                if k in self._params and self._params[k] != v:
                    raise EventValidationError(
                        "ParamsLogged", f"params.{k}", v,
                        f"already logged as {self._params[k]!r} for run {self.run_id}; "
                        "parameters cannot change within a run (start a new run)",
                    )
            new = {k: v for k, v in checked.items() if k not in self._params}
            self._params.update(new)
        if new:
            self.client._emit(ParamsLogged, self.run_id, run_id=self.run_id, params=new)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        """Buffer one metric value (sent in batches)."""
        self._require_running()
        if not isinstance(key, str) or not 0 < len(key) <= 250:
            raise EventValidationError("MetricsLogged", "metrics.key", key,
                                       "must be a str of 1-250 characters")
        v = _finite_float(value, "MetricsLogged", f"metrics.{key}")
        if type(step) is not int or step < 0:
            raise EventValidationError("MetricsLogged", f"metrics.{key}.step", step,
                                       "must be an int >= 0")
        point = MetricPoint(key=key, value=v, step=step, time=codec.utcnow())
        with self._lock:
            self._metrics.append(point)
            full = len(self._metrics) >= METRIC_BATCH
        if full:
            self._flush_metrics()

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Buffer several metric values at the same step."""
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def _flush_metrics(self) -> None:
        with self._lock:
            batch, self._metrics = self._metrics, []
        if batch:
            # Every point was checked by log_metric: skip the full re-validation.
            self.client._emit(MetricsLogged, self.run_id, run_id=self.run_id, metrics=batch,
                              checked=True)

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Store a file content-addressed, emit ``ArtifactLogged``; return its URI."""
        self._require_running()
        digest, uri, size = self.client.artifacts.put_file(path)
        self.client._emit(
            ArtifactLogged, self.run_id, run_id=self.run_id, path=name or Path(path).name,
            uri=uri, digest=digest, size=size,
        )
        return uri

    def log_bytes(self, data: bytes, name: str) -> str:
        """Store ``data`` content-addressed as the file ``name``, emit ``ArtifactLogged``.

        Returns the artifact's URI. What evaluation helpers use for figures.
        """
        self._require_running()
        ext = Path(name).suffix[1:]
        suffix = f".{ext}" if _SUFFIX_OK.match(ext) else ""
        digest, uri = self.client.artifacts.put_bytes(data, suffix)
        self.client._emit(
            ArtifactLogged, self.run_id, run_id=self.run_id, path=name,
            uri=uri, digest=digest, size=len(data),
        )
        return uri

    def use_dataset(
        self, dataset: DatasetVersion | tuple[str, str], context: str = "training"
    ) -> None:
        """Record that this run read a dataset (``DatasetVersion`` or ``(name, digest)``)."""
        self._require_running()
        if isinstance(dataset, DatasetVersion):
            name, digest = dataset.name, dataset.digest
        else:
            name, digest = dataset
        self.client._emit(RunDatasetUsed, self.run_id, run_id=self.run_id, dataset=name,
                          digest=digest, context=context)


# -- the client ----------------------------------------------------------------------
class Client(ClosingContext):
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
        self.new_id = _UuidV7()
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
        _check_name(model, event_type, "model")
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
    ) -> str:
        """Record that ``model`` version ``version`` answered ``output`` for ``inputs``.

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
            are not a mapping of str -> finite scalar, or a bad output.
        """
        try:
            key = self._keys[model]
        except (KeyError, TypeError):
            key = self._key(model, "PredictionMade")
        if type(version) is not int or version < 1:
            raise EventValidationError("PredictionMade", "model_version", version,
                                       "must be an int >= 1")
        feats = check_scalars(inputs, "PredictionMade", "inputs")
        if type(output) is float:
            if output - output != 0.0:
                raise EventValidationError("PredictionMade", "output", output, _FINITE_RULE)
        elif type(output) not in _PLAIN:
            output = check_output(output, "PredictionMade", "output")
        new_id = self.new_id
        if prediction_id is None:
            prediction_id = event_id = new_id()
        else:
            _check_id(prediction_id, "PredictionMade", "prediction_id")
            event_id = new_id()
        if time is None:
            time = new_id.time
        else:
            _check_time(time, "PredictionMade")
        if code_version is not None and type(code_version) is not str:
            raise EventValidationError("PredictionMade", "code_version", code_version,
                                       "must be a str or None")
        # Encoded by the sender thread; same bytes as codec.encode(PredictionMade(...)).
        self._send(self._serving, key, _PredictionWire(
            event_id, time, model, self._name, _PREDICTION_VERSION, prediction_id, model,
            version, code_version, feats, output), _json)
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
        _check_id(prediction_id, "LabelObserved", "prediction_id")
        label = check_output(label, "LabelObserved", "label")
        event_id = self.new_id()
        if time is None:
            time = self.new_id.time
        else:
            _check_time(time, "LabelObserved")
        self._send(self._serving, key, LabelObserved(
            id=event_id, time=time, aggregate=model, producer=self._name,
            prediction_id=prediction_id, model=model, label=label), codec.encode)

    # -- generic path ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Validate any catalogue event fully, then queue it on its topic."""
        codec.validate(event)
        self._producer.send_event(event)

    def subscribe_alerts(
        self, url: str, *, models: Sequence[str] = (), kinds: Sequence[str] = (),
        min_severity: str = "info", secret: str | None = None,
    ) -> str:
        """Subscribe a webhook to alerts; returns the subscription id.

        ``modelog deliver`` (started by ``modelog up``) POSTs each matching alert
        to ``url`` exactly once in effect, with a ``Modelog-Event-Id`` header.
        """
        from modelog.streams.delivery import subscription_event

        event = subscription_event(url, models=models, kinds=kinds, min_severity=min_severity,
                                   secret=secret, producer=self.settings.producer_name)
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

        _check_name(name, "DatasetVersionCreated", "name")
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

    # -- registry -----------------------------------------------------------------------
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
        """
        if isinstance(model, int) and not isinstance(model, bool):
            raise TypeError(
                f"register_model({name!r}, {model!r}, ...): version numbers are assigned by "
                "the registry now; pass the fitted model (or artifact_uri=...) and use the "
                "version it returns"
            )
        _check_name(name, "ModelVersionRequested", "model")
        library_versions: dict[str, str] = {}
        if model is not None:
            from modelog.models.flavors import dump

            serialized = dump(model, flavor)
            suffix = f".{serialized.format}" if _SUFFIX_OK.match(serialized.format) else ""
            artifact_digest, artifact_uri = self.artifacts.put_bytes(serialized.data, suffix)
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
        answer = self._command(command, timeout)
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
        _check_name(model, "AliasChangeRequested", "model")
        command_id = self.new_id()
        command = AliasChangeRequested(
            id=command_id, time=codec.utcnow(), aggregate=model, producer=self._name,
            command_id=command_id, model=model, alias=alias, model_version=version,
            expected_version=expected_version, actor=actor or default_actor(), reason=reason,
        )
        answer = self._command(command, timeout)
        if isinstance(answer, AliasChangeRejected):
            raise AliasChangeRejectedError(answer)
        return answer

    def _command(self, command: ModelVersionRequested | AliasChangeRequested,
                 timeout: float) -> Event:
        """Send a registry command and wait for the registry event that answers it."""
        from modelog.streams.registry_agent import LogTail, decode_records

        codec.validate(command)
        deadline = monotonic() + timeout
        # Position at the end *before* sending, so the answer cannot be missed.
        with LogTail(self.settings, self.topics.registry, from_end=True) as tail:
            self._producer.send_event(command)
            # the broker's acknowledgement is not the registry's answer: give it its own
            # time, so a slow broker is not reported as a missing registry worker
            self.flush(max(timeout, 10.0))
            while True:
                for event in decode_records(tail.poll(0.2)):
                    if getattr(event, "command_id", None) == command.command_id:
                        return event
                if monotonic() > deadline:
                    raise RegistryTimeoutError(
                        f"no registry worker answered within {timeout:g} s: is `modelog "
                        f"worker` (or `modelog up`) running against "
                        f"{self.settings.bootstrap_servers}? The command "
                        f"{command.command_id} stays on the log and is answered when one starts."
                    )

    def registry(self, name: str | None = None, *,
                 as_of: dt.datetime | None = None) -> RegistryState:
        """The registry folded from the registry topic: all models, or only ``name``.

        ``as_of`` (timezone-aware) gives the registry as it stood then: which
        version every alias pointed at, since when, who moved it and why.
        """
        events = read_registry_events(self.settings, name)
        return _registry.as_of(events, as_of) if as_of is not None else _registry.fold(events)

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
        from modelog.models.flavors import load_verified

        info = resolve_version(self.registry(name), name, version, alias=alias)
        if not info.artifact_digest:
            raise ModelNotFoundError(
                f"version {info.version} of {name} was registered without an artifact "
                f"(flavor {info.flavor}); register the fitted model to be able to load it"
            )
        data = self.artifacts.read_bytes(info.artifact_uri or info.artifact_digest)
        return load_verified(data, info.artifact_digest, info.flavor, **flavor_kwargs)

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



# -- registry helpers ---------------------------------------------------------------
def default_actor() -> str:
    """Who is acting, for the registry's history: ``<OS user>@<host>``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def resolve_version(state: RegistryState, name: str, version: int | None = None, *,
                    alias: str | None = None) -> VersionInfo:
    """The registered version ``version``, or the one ``alias`` points at, or the latest.

    Raises
    ------
    ModelNotFoundError
        Naming what exists instead (models, versions or aliases).

    Examples
    --------
    >>> resolve_version(RegistryState(), "churn")
    Traceback (most recent call last):
    ...
    modelog.streams.sdk.ModelNotFoundError: model churn is not registered ...
    """
    model = state.model(name)
    if model is None or not model.versions:
        known = ", ".join(sorted(n for n, m in state.models.items() if m.versions)) or "none"
        raise ModelNotFoundError(
            f"model {name} is not registered (registered models: {known}); register it "
            "with client.register_model(...) first"
        )
    if alias is not None:
        if version is not None:
            raise TypeError("pass either version or alias, not both")
        info = model.aliases.get(alias)
        if info is None:
            raise ModelNotFoundError(
                f"alias {alias} of {name} is not set (aliases: "
                f"{', '.join(sorted(model.aliases)) or 'none'}); set it with client.set_alias"
            )
        version = info.version
    if version is None:
        version = model.latest_version
    found = model.versions.get(version) if version is not None else None
    if found is None:
        raise ModelNotFoundError(
            f"version {version} of {name} does not exist (versions: "
            f"{', '.join(map(str, sorted(model.versions)))})"
        )
    return found


def read_registry_events(settings: Settings, name: str | None = None, *,
                         timeout: float = 30.0) -> list[Event]:
    """Every event of the registry topic (of model ``name`` only, if given), in log order."""
    from modelog.streams.registry_agent import LogTail, decode_records

    with LogTail(settings, Topics.from_settings(settings).registry) as tail:
        events = decode_records(tail.read_to_end(timeout))
    return [e for e in events if name is None or e.aggregate == name]


_LEDGER_SQL = (
    "select payload from events where type in "
    "('ModelVersionRegistered','AliasSet','AliasRemoved') and aggregate = ? order by time, id"
)


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

    s = settings if settings is not None else Settings.from_env()
    try:
        payloads = Reader(s).query(_LEDGER_SQL, [name]).column("payload").to_pylist()
        events = [codec.decode(p) for p in payloads]
    except NoDataError:
        events = read_registry_events(s, name)
    return _registry.as_of(events, time).model(name) or ModelState(name=name)


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


# -- asyncio ---------------------------------------------------------------------------
class AsyncClient:
    """The :class:`Client` for asyncio code; get one from :func:`connect_async`.

    ``log_prediction``, ``log_label`` and ``emit`` only enqueue, so they stay
    plain methods; everything that waits for the broker or the disk is a
    coroutine running the blocking work in a thread.

    Examples
    --------
    >>> async def serve():                                          # doctest: +SKIP
    ...     async with modelog.connect_async() as client:
    ...         pid = client.log_prediction("churn", 3, {"age": 42}, 0.8)
    ...         await client.set_alias("churn", "production", 3)
    """

    def __init__(self, **connect_kwargs: Any) -> None:
        self._kwargs = connect_kwargs
        self._client: Client | None = None

    async def open(self) -> AsyncClient:
        """Connect (in a thread); ``async with`` and ``await`` call it for you."""
        if self._client is None:
            self._client = await asyncio.to_thread(connect, **self._kwargs)
        return self

    def __await__(self) -> Any:
        return self.open().__await__()

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def client(self) -> Client:
        """The underlying synchronous client."""
        if self._client is None:
            raise ClientClosedError(
                "not connected yet: use `async with modelog.connect_async(...) as client` "
                "or `client = await modelog.connect_async(...)`"
            )
        return self._client

    @property
    def stats(self) -> ProducerStats:
        return self.client.stats

    def log_prediction(
        self, model: str, version: int, inputs: Mapping[str, Scalar], output: Any, *,
        prediction_id: str | None = None, code_version: str | None = None,
        time: dt.datetime | None = None,
    ) -> str:
        """See :meth:`Client.log_prediction` (only enqueues)."""
        return self.client.log_prediction(model, version, inputs, output,
                                          prediction_id=prediction_id,
                                          code_version=code_version, time=time)

    def log_label(
        self, model: str, prediction_id: str, label: Any, *, time: dt.datetime | None = None
    ) -> None:
        """See :meth:`Client.log_label` (only enqueues)."""
        self.client.log_label(model, prediction_id, label, time=time)

    def emit(self, event: Event) -> None:
        """See :meth:`Client.emit` (only enqueues)."""
        self.client.emit(event)

    def start_run(
        self, experiment: str, name: str = "", *, tags: Mapping[str, str] | None = None,
        parent: Run | str | None = None, capture_code: bool = True,
    ) -> Run:
        """See :meth:`Client.start_run`; enter the run with ``async with``."""
        return self.client.start_run(experiment, name, tags=tags, parent=parent,
                                     capture_code=capture_code)

    async def log_dataset(
        self, name: str, data: Any, *, parents: Sequence[str] = (), description: str = ""
    ) -> DatasetVersion:
        """See :meth:`Client.log_dataset`."""
        return await asyncio.to_thread(self.client.log_dataset, name, data, parents=parents,
                                       description=description)

    async def get_dataset(self, name: str, version: str | int = "latest") -> Any:
        """See :meth:`Client.get_dataset`."""
        return await asyncio.to_thread(self.client.get_dataset, name, version)

    async def register_model(self, name: str, model: Any = None, **options: Any) -> int:
        """See :meth:`Client.register_model` (same keyword options)."""
        return await asyncio.to_thread(self.client.register_model, name, model, **options)

    async def set_alias(
        self, model: str, alias: str, version: int, *, reason: str = "",
        actor: str | None = None, expected_version: int | None = None, timeout: float = 30.0,
    ) -> AliasSet:
        """See :meth:`Client.set_alias`."""
        return await asyncio.to_thread(self.client.set_alias, model, alias, version,
                                       reason=reason, actor=actor,
                                       expected_version=expected_version, timeout=timeout)

    async def remove_alias(
        self, model: str, alias: str, *, reason: str = "", actor: str | None = None,
        expected_version: int | None = None, timeout: float = 30.0,
    ) -> AliasRemoved:
        """See :meth:`Client.remove_alias`."""
        return await asyncio.to_thread(self.client.remove_alias, model, alias, reason=reason,
                                       actor=actor, expected_version=expected_version,
                                       timeout=timeout)

    async def registry(self, name: str | None = None, *,
                       as_of: dt.datetime | None = None) -> RegistryState:
        """See :meth:`Client.registry`."""
        return await asyncio.to_thread(self.client.registry, name, as_of=as_of)

    async def load_model(self, name: str, version: int | None = None, *,
                         alias: str | None = None, **flavor_kwargs: Any) -> Any:
        """See :meth:`Client.load_model`."""
        return await asyncio.to_thread(self.client.load_model, name, version, alias=alias,
                                       **flavor_kwargs)

    async def flush(self, timeout: float = 30.0) -> None:
        """See :meth:`Client.flush`."""
        await asyncio.to_thread(self.client.flush, timeout)

    async def close(self, timeout: float = 30.0) -> None:
        """See :meth:`Client.close`."""
        if self._client is not None:
            await asyncio.to_thread(self._client.close, timeout)


def connect_async(broker: str | None = None, **options: Any) -> AsyncClient:
    """An :class:`AsyncClient`; takes the same keyword options as :func:`connect`.

    Use ``async with connect_async(...) as client`` or
    ``client = await connect_async(...)``; the connection is made in a thread.
    A misspelt option fails here, not later when connecting.

    Examples
    --------
    >>> connect_async("localhost:9092", buffer_sise=10)
    Traceback (most recent call last):
    ...
    TypeError: got an unexpected keyword argument 'buffer_sise'
    """
    inspect.signature(connect).bind(broker, **options)
    return AsyncClient(broker=broker, **options)
