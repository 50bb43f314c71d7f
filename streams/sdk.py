"""The producer SDK: ``modelog.connect()`` and the :class:`Client` it returns.

Every method turns a call into an immutable event of
:mod:`modelog.streams.events` -- envelope filled in (``id``, ``time``,
``aggregate``, ``producer``), validated -- and queues it on its topic, keyed by
its aggregate. The shapes follow MLflow::

    import modelog

    with modelog.connect() as client:                     # MODELOG_BROKER, ...
        ds = client.log_dataset("churn-train", df)
        with client.start_run("churn", name="baseline") as run:
            run.use_dataset(ds)
            run.log_params({"max_depth": 6})
            run.log_metric("auc", 0.91)
        client.register_model("churn", 1, run=run)
        client.set_alias("churn", "production", 1)
        pid = client.log_prediction("churn", 1, {"age": 42, "plan": "pro"}, 0.83)
        client.log_label("churn", pid, 1)

``log_prediction`` and ``log_label`` are the hot path: instead of the full
:func:`~modelog.streams.codec.validate` they run cheap inline checks (which
still name field, value and rule in an :class:`EventValidationError`) and only
enqueue; encoding happens on the producer's sender thread. The registry calls
(``register_model``, ``set_alias``, ``remove_alias``) and ``log_dataset``
return only after the broker acknowledged their event.

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
from time import time_ns
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec

from modelog.config import Settings
from modelog.store.artifacts import ArtifactStore
from modelog.streams import codec
from modelog.streams.codeversion import capture_code_version
from modelog.streams.errors import ClientClosedError, EventValidationError, StreamsError
from modelog.streams.events import (
    NAME_PATTERN,
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
    ParamsLogged,
    PredictionMade,
    RunDatasetUsed,
    RunFailed,
    RunFinished,
    RunStarted,
)
from modelog.streams.producer import ClosingContext, EventProducer, OnFull, ProducerStats
from modelog.streams.topics import Topics, ensure_topics

__all__ = [
    "AsyncClient",
    "Client",
    "DatasetVersion",
    "Run",
    "RunNotActiveError",
    "check_output",
    "check_scalars",
    "connect",
    "connect_async",
]

E = TypeVar("E", bound=Event)
Scalar = str | int | float | bool | None
_json = msgspec.json.Encoder().encode
_NAME = re.compile(NAME_PATTERN)
_PLAIN = frozenset({str, int, bool, type(None)})
_UTC = dt.UTC
_SCALAR_RULE = "must be a str, int, float, bool or None"
_FINITE_RULE = "numbers must be finite (no NaN or infinity)"
METRIC_BATCH = 1_000
"""Metric points buffered per run before a ``MetricsLogged`` event is emitted."""
_MAX_CACHED_NAMES = 10_000


class RunNotActiveError(StreamsError):
    """A run was used before ``with`` entered it or after it ended."""


# -- ids ---------------------------------------------------------------------------
class _UuidV7:
    """UUIDv7 strings, increasing within one generator, several times cheaper than
    :func:`modelog.streams.ids.new_id` (this is the SDK's hot path).

    Layout (RFC 9562): 48-bit Unix milliseconds, version 7, variant ``10``, and
    74 bits that are random per generator (and re-drawn after ``fork``) with a
    counter added to the low 47 -- the "monotonic random" method: ids made in
    the same millisecond stay unique and ordered without a lock
    (``itertools.count`` is atomic), and two processes collide only if they draw
    the same 26 high random bits *and* overlapping counter ranges in the same
    millisecond.

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
        self._count = itertools.count(getrandbits(47))  # 2**47 ids before the 48 bits carry
        self._ms = 0

    def __call__(self) -> str:
        ms = time_ns() // 1_000_000
        if ms > self._ms:  # a clock stepping back keeps the last prefix: still increasing
            self._ms = ms
            self._prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{self._mid}"
        return f"{self._prefix}{next(self._count):012x}"


class _MillisecondClock:
    """``datetime`` objects at millisecond precision, reused within a millisecond.

    Encoding events at 150k/s makes ``datetime`` construction a visible cost;
    events logged in the same millisecond share one (immutable) object.
    """

    def __init__(self) -> None:
        self._ms = -1
        self._dt = dt.datetime.fromtimestamp(0, _UTC)

    def __call__(self, ns: int) -> dt.datetime:
        ms = ns // 1_000_000
        if ms != self._ms:
            self._dt = dt.datetime.fromtimestamp(ms / 1000, _UTC)
            self._ms = ms
        return self._dt


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
            self.client._emit(MetricsLogged, self.run_id, run_id=self.run_id, metrics=batch)

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Store a file content-addressed, emit ``ArtifactLogged``; return its URI."""
        self._require_running()
        digest, uri, size = self.client.artifacts.put_file(path)
        self.client._emit(
            ArtifactLogged, self.run_id, run_id=self.run_id, path=name or Path(path).name,
            uri=uri, digest=digest, size=size,
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
        self._clock = _MillisecondClock()
        self._producer = producer
        self._send = producer.send
        self._serving = self.topics.serving
        self._name = settings.producer_name
        self._keys: dict[str, bytes] = {}
        self._enc_prediction = self._encode_prediction
        self._enc_label = self._encode_label

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
        microsecond or two); see :meth:`flush`.

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
        if prediction_id is None:
            prediction_id = event_id = self.new_id()
        else:
            _check_id(prediction_id, "PredictionMade", "prediction_id")
            event_id = None
        if time is not None:
            _check_time(time, "PredictionMade")
        if code_version is not None and type(code_version) is not str:
            raise EventValidationError("PredictionMade", "code_version", code_version,
                                       "must be a str or None")
        self._send(self._serving, key, (event_id, prediction_id, model, version, code_version,
                                        feats, output, time, time_ns()), self._enc_prediction)
        return prediction_id

    def _encode_prediction(self, item: tuple[Any, ...]) -> bytes:
        event_id, pid, model, version, code_version, inputs, output, t, ns = item
        return _json(PredictionMade(
            id=event_id or self.new_id(), time=t or self._clock(ns), aggregate=model,
            producer=self._name, prediction_id=pid, model=model, model_version=version,
            code_version=code_version, inputs=inputs, output=output,
        ))

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
        if time is not None:
            _check_time(time, "LabelObserved")
        self._send(self._serving, key, (prediction_id, model, label, time, time_ns()),
                   self._enc_label)

    def _encode_label(self, item: tuple[Any, ...]) -> bytes:
        pid, model, label, t, ns = item
        return _json(LabelObserved(
            id=self.new_id(), time=t or self._clock(ns), aggregate=model, producer=self._name,
            prediction_id=pid, model=model, label=label,
        ))

    # -- generic path ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Validate any catalogue event fully, then queue it on its topic."""
        codec.validate(event)
        self._producer.send_event(event)

    def _emit(
        self, cls: type[E], aggregate: str, *, time: dt.datetime | None = None, **fields: Any
    ) -> E:
        event = cls(id=self.new_id(), time=time or codec.utcnow(), aggregate=aggregate,
                    producer=self._name, **fields)
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
        from modelog.store.artifacts import canonical_table, load_table

        _check_name(name, "DatasetVersionCreated", "name")
        table = canonical_table(load_table(data))
        digest, uri = self.artifacts.put_table(table, canonical=True)
        columns = [ColumnSchema(f.name, str(f.type), f.nullable) for f in table.schema]
        self._emit(
            DatasetVersionCreated, name, name=name, digest=digest, columns=columns,
            num_rows=table.num_rows, uri=uri, parents=list(parents), profile=None,
            description=description,
        )
        self.flush()
        return DatasetVersion(name=name, digest=digest, uri=uri, num_rows=table.num_rows)

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
        version: int,
        *,
        artifact_uri: str = "",
        artifact_digest: str = "",
        flavor: str = "custom",
        run: Run | str | None = None,
        signature: Sequence[tuple[str, str]] | None = None,
        description: str = "",
        online: bool = False,
    ) -> int:
        """Emit ``ModelVersionRegistered``; return ``version`` once the broker acked it."""
        self._emit(
            ModelVersionRegistered, name, model=name, model_version=version,
            run_id=run.run_id if isinstance(run, Run) else run, flavor=flavor,
            artifact_uri=artifact_uri, artifact_digest=artifact_digest,
            signature=[ColumnSchema(col, typ) for col, typ in (signature or ())],
            description=description, online=online,
        )
        self.flush()
        return version

    def set_alias(
        self, model: str, alias: str, version: int, *, reason: str = "",
        actor: str | None = None,
    ) -> None:
        """Point ``alias`` (``production``, ``staging``...) at ``version``; wait for the ack."""
        self._emit(AliasSet, model, model=model, alias=alias, model_version=version,
                   actor=actor or self._name, reason=reason)
        self.flush()

    def remove_alias(
        self, model: str, alias: str, *, reason: str = "", actor: str | None = None
    ) -> None:
        """Remove ``alias`` from ``model``; wait for the ack."""
        self._emit(AliasRemoved, model, model=model, alias=alias, actor=actor or self._name,
                   reason=reason)
        self.flush()

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

    async def register_model(self, name: str, version: int, **options: Any) -> int:
        """See :meth:`Client.register_model` (same keyword options)."""
        return await asyncio.to_thread(self.client.register_model, name, version, **options)

    async def set_alias(
        self, model: str, alias: str, version: int, *, reason: str = "",
        actor: str | None = None,
    ) -> None:
        """See :meth:`Client.set_alias`."""
        await asyncio.to_thread(self.client.set_alias, model, alias, version, reason=reason,
                                actor=actor)

    async def remove_alias(
        self, model: str, alias: str, *, reason: str = "", actor: str | None = None
    ) -> None:
        """See :meth:`Client.remove_alias`."""
        await asyncio.to_thread(self.client.remove_alias, model, alias, reason=reason,
                                actor=actor)

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
