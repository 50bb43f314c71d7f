"""Online River models learning on the serving stream (no Kafka, no DuckDB).

:class:`OnlineModelProcessor` reads decoded events in log order and returns the
events to publish:

* ``ModelVersionRegistered`` with ``online=True`` and flavor ``river-spec``
  starts a learner: the artifact is read through the :class:`ArtifactIO` the
  worker passes in (its :class:`~modelog.store.artifacts.ArtifactStore`), its
  SHA-256 is checked against the event's ``artifact_digest``
  (:func:`~modelog.models.flavors.load_verified`) and the learner is *built*
  from the specification it holds: allow-listed River classes and their
  hyperparameters (:mod:`modelog.models.online_spec`), so nothing a producer
  wrote is executed. A registration of flavor ``river`` (a pickle) is refused
  with :class:`OnlineModelError` unless the processor was created with
  ``allow_pickle=True`` (the operator's ``MODELOG_ONLINE_ALLOW_PICKLE=1``):
  the digest proves the bytes are the registered ones, not that they are
  safe to unpickle;
* ``PredictionMade`` of that model (any version, at or after the registration
  time): the learner predicts for the inputs now, as River does for delayed
  labels, and keeps ``(inputs, its prediction)`` until the label comes;
* ``LabelObserved``: joined by ``(model, prediction_id)``, the kept prediction
  is scored and the learner learns the label
  (:class:`~modelog.models.online.OnlineLearner`); every ``metrics_every``
  labels learned it emits ``MetricsLogged`` (prequential metrics, ``step`` =
  labels learned) under the registration's ``run_id`` or ``online-<model>-v<version>``,
  and every ``checkpoint_every`` labels it stores a checkpoint artifact and
  emits :class:`~modelog.models.events.OnlineModelCheckpointed`.

Each online version learns from every labelled prediction of its model, so two
online versions of one model learn side by side. The join is bounded: at most
``max_pending`` predictions wait per learner (the oldest are evicted) and the
last ``max_pending`` joined ids are remembered to drop duplicate predictions
and labels. Labels whose prediction is unknown are ignored and counted
(``orphan_labels``); nothing unusual raises except an online registration that
cannot be started -- its artifact cannot be loaded or built, or it is a pickle
without ``allow_pickle`` (:class:`OnlineModelError`: the worker dead-letters
that record with the reason).

Derived events take the triggering label's time and a deterministic id
(:func:`~modelog.models.ids.derived_id` of that time, the kind, the model,
the version and the number of labels learned), so a replay publishes
duplicates that consumers drop by id.

Checkpoints are pickles (River state) that only workers write and read: each
``OnlineModelCheckpointed`` carries ``mac``, the HMAC-SHA256 of the checkpoint
(model, version, digest, labels learned) under the ``checkpoint_key`` the
worker passes in (``<data_dir>/worker.key``). :meth:`~OnlineModelProcessor.resume`
unpickles only checkpoints whose MAC verifies under that key; others are
logged, counted (``refused_checkpoints``) and skipped, and their learner
starts fresh from its registration.

Restarts. A checkpoint holds the learner, its pending predictions and
remembered ids, and -- when the worker passed ``partition``/``offset`` to
:meth:`~OnlineModelProcessor.process` -- ``source_offset``: for every serving
partition seen, the next offset it does *not* cover. To restart, the worker

1. reads the ``OnlineModelCheckpointed`` events of the registry topic and calls
   :meth:`~OnlineModelProcessor.resume` (the latest checkpoint per model
   version is restored);
2. feeds the registry topic (registrations of versions already restored are
   ignored; newer online versions start fresh);
3. seeks each serving partition to :meth:`~OnlineModelProcessor.start_offsets`
   (the smallest offset some learner still needs; partitions not listed: the
   beginning) and feeds the serving log with the offsets. Events a learner's
   checkpoint covers are skipped for that learner, so nothing is learned twice.

Without offsets (``source_offset`` is ``None``), replay from the beginning:
the remembered ids then drop what was learned, within ``max_pending``.

Examples
--------
>>> import datetime as dt
>>> from river import linear_model
>>> from modelog.models.events import LabelObserved, PredictionMade
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> proc = OnlineModelProcessor(None, metrics_every=2)
>>> proc.start("churn", 1, linear_model.LogisticRegression(), since=t0)
>>> def pair(i, x, y):
...     t = t0 + dt.timedelta(seconds=i)
...     return [PredictionMade(id=f"p{i}", time=t, aggregate="churn", prediction_id=f"p{i}",
...                            model="churn", model_version=1, inputs=x, output=None),
...             LabelObserved(id=f"l{i}", time=t, aggregate="churn", prediction_id=f"p{i}",
...                           model="churn", label=y)]
>>> out = [e for i in range(4) for ev in pair(i, {"x": float(i % 2)}, i % 2 == 1)
...        for e in proc.process(ev)]
>>> [(e.type_name(), e.run_id, [(m.key, m.step) for m in e.metrics]) for e in out]
[('MetricsLogged', 'online-churn-v1', [('prequential_accuracy', 2)]), \
('MetricsLogged', 'online-churn-v1', [('prequential_accuracy', 4)])]
>>> proc.counters("churn", 1)["learned"]
4
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mypy_extensions import mypyc_attr

from modelog.models.errors import OnlineModelError, OnlineSpecError
from modelog.models.events import (
    Event,
    LabelObserved,
    MetricPoint,
    MetricsLogged,
    ModelVersionRegistered,
    OnlineModelCheckpointed,
    PredictionMade,
)
from modelog.models.flavors import dump, load_verified
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.online import OnlineLearner, default_metric
from modelog.models.pickled import FrozenState
from modelog.models.processor import SnapshotByPickle

if TYPE_CHECKING:
    from river.metrics.base import Metric

__all__ = ["PRODUCER", "ArtifactIO", "OnlineModelProcessor", "checkpoint_mac", "online_run_id"]

_log = logging.getLogger(__name__)

PRODUCER = "modelog-online"
"""The ``producer`` of every event the processor derives."""

CHECKPOINT_SUFFIX = ".online.pkl"

_COUNTERS = ("predictions", "learned", "orphan_labels", "duplicate_predictions",
             "duplicate_labels", "evicted", "predict_errors", "learn_errors", "skipped_covered",
             "skipped_before_registration")


class ArtifactIO(Protocol):
    """Where the processor reads registered artifacts and writes checkpoints.

    The worker passes its :class:`~modelog.store.artifacts.ArtifactStore`; this
    module imports no storage of its own.
    """

    def get_bytes(self, uri_or_digest: str) -> bytes:
        """The content of an artifact (its digest is checked by the caller)."""
        ...

    def put_bytes(self, data: bytes, suffix: str = "") -> tuple[str, str]:
        """Store ``data``; return ``(sha256 hex digest, URI)``."""
        ...


def checkpoint_mac(key: bytes, model: str, version: int, digest: str, n_learned: int) -> str:
    """The HMAC-SHA256 (hex) binding a checkpoint's digest to its model version and progress.

    Examples
    --------
    >>> mac = checkpoint_mac(b"k" * 32, "churn", 1, "ab" * 32, 1000)
    >>> len(mac), mac == checkpoint_mac(b"k" * 32, "churn", 2, "ab" * 32, 1000)
    (64, False)
    """
    message = "\x00".join(("modelog-online-checkpoint/1", model, str(version),
                           digest.strip().lower(), str(n_learned)))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def online_run_id(model: str, version: int) -> str:
    """The run id of an online version registered without one.

    Examples
    --------
    >>> online_run_id("churn", 3)
    'online-churn-v3'
    """
    return f"online-{model}-v{version}"


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _Learner:
    """One online model version and its own bounded join."""

    model: str
    version: int
    learner: OnlineLearner
    run_id: str
    since: dt.datetime
    pending: collections.OrderedDict[str, tuple[dict[str, Any], Any]] = dataclasses.field(
        default_factory=collections.OrderedDict)
    joined: collections.OrderedDict[str, None] = dataclasses.field(
        default_factory=collections.OrderedDict)
    covered: dict[str, int] = dataclasses.field(default_factory=dict)
    counters: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    last_time: dt.datetime | None = None


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class _Snapshot(FrozenState):
    """What a checkpoint artifact holds (pickled with the ``river`` flavor; workers only)."""

    model: str
    version: int
    learner: OnlineLearner
    run_id: str
    since: dt.datetime
    pending: list[tuple[str, dict[str, Any], Any]]
    joined: list[str]
    counters: dict[str, int]
    source_offset: dict[str, int] | None


class OnlineModelProcessor(SnapshotByPickle):
    """Keep the online models of the registry learning from the serving log.

    Parameters
    ----------
    artifacts
        Where registered artifacts are read and checkpoints written. ``None``:
        registrations are ignored (use :meth:`start`) and no checkpoints are
        written.
    checkpoint_every
        Checkpoint a learner every this many labels it learned.
    metrics_every
        Emit its prequential metrics every this many labels (also the step of
        its learning curve).
    max_pending
        Most predictions waiting for a label, and most joined ids remembered,
        per learner.
    metric
        Builds the metric of a newly started model (default: ``Accuracy`` for
        classifiers, ``MAE`` for regressors).
    allow_pickle
        Also start online registrations of flavor ``river`` by unpickling their
        artifact (logged with a warning). Off by default: anyone who can write
        to the broker and the artifact store could make the worker run code.
    checkpoint_key
        The secret that signs checkpoints and verifies them on :meth:`resume`
        (the worker's ``<data_dir>/worker.key``). ``None``: a random key of
        this processor, so only checkpoints it wrote itself are restored.
    """

    not_state: ClassVar[tuple[str, ...]] = ("artifacts", "metric", "allow_pickle",
                                            "checkpoint_key")

    def __init__(
        self,
        artifacts: ArtifactIO | None,
        *,
        checkpoint_every: int = 1000,
        metrics_every: int = 100,
        max_pending: int = 100_000,
        metric: Callable[[Any], Metric] = default_metric,
        allow_pickle: bool = False,
        checkpoint_key: bytes | None = None,
    ) -> None:
        from modelog.models.errors import InvalidParameterError

        for name, value in (("checkpoint_every", checkpoint_every),
                            ("metrics_every", metrics_every), ("max_pending", max_pending)):
            if value < 1:
                raise InvalidParameterError("OnlineModelProcessor", name, value, "must be >= 1")
        self.artifacts = artifacts
        self.checkpoint_every = checkpoint_every
        self.metrics_every = metrics_every
        self.max_pending = max_pending
        self.metric = metric
        self.allow_pickle = allow_pickle
        if allow_pickle:
            _log.warning("online_allow_pickle is on (MODELOG_ONLINE_ALLOW_PICKLE=1): online "
                         "models registered as River pickles will be unpickled, running "
                         "whatever code their artifact holds")
        self.checkpoint_key = checkpoint_key if checkpoint_key else secrets.token_bytes(32)
        self._learners: dict[str, dict[int, _Learner]] = {}
        #: Next offset per serving partition (what a checkpoint covers).
        self._next: dict[int, int] = {}
        self.ignored_registrations = 0
        self.refused_checkpoints = 0

    # -- starting and restoring ---------------------------------------------------
    def start(self, model: str, version: int, estimator: Any, *, since: dt.datetime,
              run_id: str | None = None) -> None:
        """Start learning with ``estimator`` from predictions at or after ``since``.

        A version already learning is left as it is.
        """
        versions = self._learners.setdefault(model, {})
        if version in versions:
            return
        learner = OnlineLearner(estimator, self.metric(estimator), every=self.metrics_every)
        versions[version] = _Learner(model, version, learner,
                                     run_id or online_run_id(model, version), since)

    def resume(self, checkpoints: Iterable[OnlineModelCheckpointed]) -> int:
        """Restore the latest checkpoint of every model version; return how many were restored.

        Only checkpoints whose ``mac`` verifies under :attr:`checkpoint_key`
        are considered (the others are logged, counted in
        ``refused_checkpoints`` and never read); the latest is the one with the
        most labels learned (the later one on a tie). Call before feeding any
        event.

        Raises
        ------
        OnlineModelError
            When there is no artifact store, or a verified checkpoint is
            missing or does not match its digest.
        """
        latest: dict[tuple[str, int], OnlineModelCheckpointed] = {}
        for cp in checkpoints:
            if not self._signed_here(cp):
                self.refused_checkpoints += 1
                _log.warning(
                    "refused checkpoint %s of %s v%s: its MAC does not verify under this "
                    "worker's key (forged, or written by a worker with another data dir); "
                    "the model starts fresh from its registration", cp.artifact_uri, cp.model,
                    cp.model_version)
                continue
            key = (cp.model, cp.model_version)
            if key not in latest or cp.n_learned >= latest[key].n_learned:
                latest[key] = cp
        for cp in latest.values():
            snap = self._load(cp.artifact_uri, cp.artifact_digest, cp.model, cp.model_version,
                              "river")
            if not isinstance(snap, _Snapshot):
                raise OnlineModelError(
                    f"checkpoint {cp.artifact_uri} of {cp.model} v{cp.model_version} holds a "
                    f"{type(snap).__name__}, not an online-model checkpoint; drop that event")
            state = _Learner(snap.model, snap.version, snap.learner, snap.run_id, snap.since,
                             covered=dict(snap.source_offset or {}),
                             counters={**dict.fromkeys(_COUNTERS, 0), **snap.counters})
            state.pending.update((pid, (x, y)) for pid, x, y in snap.pending)
            state.joined.update(dict.fromkeys(snap.joined))
            self._learners.setdefault(snap.model, {})[snap.version] = state
        return len(latest)

    def start_offsets(self) -> dict[int, int]:
        """Where to start reading each serving partition so every learner gets what it needs.

        The smallest next offset over the learners' checkpoints; a learner
        without a checkpoint offset for a partition needs it from offset 0.
        Partitions not listed: from the beginning.
        """
        partitions = {p for states in self._learners.values() for s in states.values()
                      for p in s.covered}
        return {int(p): min(s.covered.get(p, 0) for states in self._learners.values()
                            for s in states.values())
                for p in sorted(partitions, key=int)}

    def _signed_here(self, cp: OnlineModelCheckpointed) -> bool:
        expected = checkpoint_mac(self.checkpoint_key, cp.model, cp.model_version,
                                  cp.artifact_digest, cp.n_learned)
        return cp.mac is not None and hmac.compare_digest(cp.mac.lower(), expected)

    def _load(self, uri: str, digest: str, model: str, version: int, flavor: str) -> Any:
        if self.artifacts is None:
            raise OnlineModelError(
                f"cannot load {uri} for {model} v{version}: the processor has no artifact "
                "store; create it with OnlineModelProcessor(ArtifactStore.from_settings(s))")
        try:
            return load_verified(self.artifacts.get_bytes(uri), digest, flavor)
        except OnlineSpecError as exc:
            raise OnlineModelError(
                f"{model} v{version} is registered online but its specification {uri} "
                f"cannot be built: {exc}") from exc
        except Exception as exc:
            raise OnlineModelError(
                f"cannot load the artifact {uri} of {model} v{version}: {exc} -- check that "
                "the artifact store is the one the model was registered with "
                "(MODELOG_DATA_DIR)") from exc

    # -- input ----------------------------------------------------------------------
    def process(self, event: Event, partition: int | None = None,
                offset: int | None = None) -> list[Event]:
        """Take one event; return the events to publish (often none).

        ``partition``/``offset`` are the serving record's position, when known:
        checkpoints then record what they cover. Event types other than
        registrations, predictions and labels are ignored.
        """
        # a pointer test: events are not subclassed
        if type(event) is not PredictionMade and type(event) is not LabelObserved:
            if isinstance(event, ModelVersionRegistered):
                return self._on_registered(event)
            return []
        if partition is not None and offset is not None and \
                offset >= self._next.get(partition, 0):
            self._next[partition] = offset + 1
        learners = self._learners.get(event.model)
        if not learners:
            return []
        covered_key = None if partition is None or offset is None else str(partition)
        out: list[Event] = []
        for state in learners.values():
            if covered_key is not None and offset is not None and \
                    offset < state.covered.get(covered_key, 0):
                state.counters["skipped_covered"] += 1
                continue
            if isinstance(event, PredictionMade):
                self._on_prediction(state, event)
            else:
                out.extend(self._on_label(state, event))
        return out

    def process_many(self, events: Iterable[Event]) -> list[Event]:
        """:meth:`process` each event in order (no offsets); all derived events, in order."""
        return [derived for event in events for derived in self.process(event)]

    def _on_registered(self, ev: ModelVersionRegistered) -> list[Event]:
        if not ev.online or ev.flavor not in ("river-spec", "river"):
            return []
        if ev.model_version in self._learners.get(ev.model, {}):
            return []
        if self.artifacts is None:
            self.ignored_registrations += 1
            return []
        if ev.flavor == "river":
            if not self.allow_pickle:
                raise OnlineModelError(
                    f"{ev.model} v{ev.model_version} is registered online as a River pickle "
                    f"({ev.artifact_uri}); workers do not unpickle registered artifacts: anyone "
                    "who can write to the broker could make them run code. Register the model "
                    "as a specification (client.register_model(name, model, online=True) "
                    "without flavor='river'), or, if everyone who can write to the broker and "
                    "the artifact store is trusted, start the workers with "
                    "MODELOG_ONLINE_ALLOW_PICKLE=1")
            _log.warning("unpickling the online registration %s v%s (%s) because "
                         "MODELOG_ONLINE_ALLOW_PICKLE is set: this runs whatever code the "
                         "artifact holds", ev.model, ev.model_version, ev.artifact_uri)
        estimator = self._load(ev.artifact_uri, ev.artifact_digest, ev.model, ev.model_version,
                               ev.flavor)
        try:
            self.start(ev.model, ev.model_version, estimator, since=ev.time, run_id=ev.run_id)
        except ValueError as exc:
            raise OnlineModelError(
                f"{ev.model} v{ev.model_version} is registered online but cannot learn: {exc}"
            ) from exc
        return []

    def _on_prediction(self, state: _Learner, ev: PredictionMade) -> None:
        c = state.counters
        if ev.time < state.since:
            c["skipped_before_registration"] += 1
            return
        pid = ev.prediction_id
        if pid in state.pending or pid in state.joined:
            c["duplicate_predictions"] += 1
            return
        x = dict(ev.inputs)
        try:
            y_pred = state.learner.predict_one(x)
        except Exception:  # a model that cannot read these inputs: counted, never fatal
            c["predict_errors"] += 1
            return
        c["predictions"] += 1
        state.pending[pid] = (x, y_pred)
        if len(state.pending) > self.max_pending:
            state.pending.popitem(last=False)
            c["evicted"] += 1

    def _on_label(self, state: _Learner, ev: LabelObserved) -> list[Event]:
        c = state.counters
        kept = state.pending.pop(ev.prediction_id, None)
        if kept is None:
            c["duplicate_labels" if ev.prediction_id in state.joined else "orphan_labels"] += 1
            return []
        state.joined[ev.prediction_id] = None
        if len(state.joined) > self.max_pending:
            state.joined.popitem(last=False)
        x, y_pred = kept
        try:
            state.learner.update(x, ev.label, y_pred)
        except Exception:  # e.g. a label of the wrong type for this model
            c["learn_errors"] += 1
            return []
        c["learned"] += 1
        state.last_time = ev.time
        n = state.learner.n_learned
        out: list[Event] = []
        if n % self.metrics_every == 0:
            out.append(self._metrics_event(state, ev.time))
        if n % self.checkpoint_every == 0 and self.artifacts is not None:
            out.append(self._checkpoint_event(state, ev.time))
        return out

    # -- output -----------------------------------------------------------------------
    def _metric_values(self, state: _Learner) -> dict[str, float]:
        return {k: v for k, v in state.learner.metric_values().items() if math.isfinite(v)}

    def _metrics_event(self, state: _Learner, time: dt.datetime) -> MetricsLogged:
        n = state.learner.n_learned
        return MetricsLogged(
            id=derived_id(epoch_ms(time), "online-metrics", state.model, str(state.version),
                          str(n)),
            time=time, aggregate=state.run_id, producer=PRODUCER, run_id=state.run_id,
            metrics=[MetricPoint(key=k, value=v, step=n, time=time)
                     for k, v in self._metric_values(state).items()],
        )

    def _checkpoint_event(self, state: _Learner, time: dt.datetime) -> OnlineModelCheckpointed:
        assert self.artifacts is not None
        offsets = {str(p): n for p, n in self._next.items()} or None
        snap = _Snapshot(state.model, state.version, state.learner, state.run_id, state.since,
                         [(pid, x, y) for pid, (x, y) in state.pending.items()],
                         list(state.joined), dict(state.counters), offsets)
        digest, uri = self.artifacts.put_bytes(dump(snap, "river").data, suffix=CHECKPOINT_SUFFIX)
        n = state.learner.n_learned
        return OnlineModelCheckpointed(
            id=derived_id(epoch_ms(time), "online-checkpoint", state.model, str(state.version),
                          str(n)),
            time=time, aggregate=state.model, producer=PRODUCER, model=state.model,
            model_version=state.version, artifact_uri=uri, artifact_digest=digest,
            n_learned=n, metrics=self._metric_values(state), source_offset=offsets,
            run_id=state.run_id,
            mac=checkpoint_mac(self.checkpoint_key, state.model, state.version, digest, n),
        )

    def checkpoint_all(self) -> list[Event]:
        """Checkpoint every learner that learned since its last checkpoint (e.g. on shutdown)."""
        if self.artifacts is None:
            return []
        return [self._checkpoint_event(s, s.last_time)
                for states in self._learners.values() for s in states.values()
                if s.last_time is not None and s.learner.n_learned % self.checkpoint_every]

    # -- inspection -------------------------------------------------------------------------
    def online_models(self) -> list[tuple[str, int]]:
        """``(model, version)`` of every learner."""
        return sorted((m, v) for m, states in self._learners.items() for v in states)

    def learner(self, model: str, version: int) -> OnlineLearner | None:
        """The learner of a model version (its ``.model`` is the River model), if any."""
        state = self._learners.get(model, {}).get(version)
        return None if state is None else state.learner

    def counters(self, model: str, version: int) -> dict[str, int]:
        """Join and learning counters of a learner (all zero when unknown), plus ``pending``."""
        state = self._learners.get(model, {}).get(version)
        if state is None:
            return {**dict.fromkeys(_COUNTERS, 0), "pending": 0}
        return {**state.counters, "pending": len(state.pending)}
