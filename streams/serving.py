"""Serving through aliases: the SDK's :class:`Predictor` and :class:`AsyncPredictor`.

``client.predictor("churn")`` gives a :class:`Predictor`. Each ``predict``

1. routes the request by the model's traffic policy
   (:class:`~modelog.models.registry_types.TrafficPolicy`): one arm, drawn by
   weight -- sticky per routing ``key`` (a stable hash of key and model,
   :func:`~modelog.models.traffic.choose_arm`), random without one;
2. checks the inputs (finite scalars; every column of the version's signature
   present) *before* the model runs -- a bad request raises and nothing is logged;
3. answers with the version behind the chosen alias, loaded lazily from the
   artifact store with its digest checked before anything is deserialized
   (:func:`~modelog.streams.registry_client.load_version`) and cached; an
   online version (River, learning in the worker) is served from its latest
   checkpoint whose MAC verifies under the worker key of this data directory
   (``<data_dir>/worker.key``), else from its registration;
4. logs a ``PredictionMade`` with the version and alias that answered and the
   code version (git commit, ``-dirty`` when the tree has changes);
5. hands the same inputs to every *shadow* alias on a background thread pool:
   their answers are logged with ``shadow=True`` and ``paired_with`` = the
   served prediction's id, never returned; a shadow that fails is counted
   (``stats.shadow_errors``) and logged, the caller still gets its answer, and
   a :class:`~modelog.models.serving_events.ShadowScoringFailed` alert goes to
   the monitoring topic -- at most one per (model, alias, version) a minute,
   with the failures counted since the previous one (``stats.shadow_alerts``).

The predictor follows the registry topics in a background thread
(:class:`~modelog.streams.registry_agent.RegistryFollower`, verified answers
only), so an alias move or a new traffic policy applies within about
``poll_interval`` plus the broker's delivery, without a restart.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import random
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from modelog.models.errors import EventValidationError
from modelog.models.events import Event, OnlineModelCheckpointed
from modelog.models.online_models import checkpoint_mac
from modelog.models.registry import RegistryEvent, RegistryState, VersionInfo, apply
from modelog.models.serving_events import ShadowFailureLimiter, ShadowScoringFailed
from modelog.models.traffic import choose_arm
from modelog.models.validation import check_probabilities, check_scalars
from modelog.streams.errors import NoServingVersionError, StreamsError
from modelog.streams.model_calls import PredictFn, call_many, call_one

if TYPE_CHECKING:
    from modelog.streams.sdk import Client

__all__ = ["AsyncPredictor", "Predictor", "PredictorStats", "Served", "code_version_label"]

_log = logging.getLogger(__name__)


class Served(NamedTuple):
    """One answered request: the output, its prediction id, the version and alias that answered."""

    output: Any
    prediction_id: str
    model_version: int
    alias: str


@dataclass
class PredictorStats:
    """Counters of a predictor (read them any time; updated from several threads)."""

    served: int = 0
    shadow_logged: int = 0
    shadow_errors: int = 0
    shadow_dropped: int = 0
    shadow_alerts: int = 0
    loads: int = 0
    registry_updates: int = 0
    refused_checkpoints: int = 0
    refused_registry_records: int = 0
    follow_errors: int = 0
    #: Class probabilities a model gave that could not be logged (the prediction was).
    probabilities_skipped: int = 0


class _Route(NamedTuple):
    arms: tuple[tuple[str, float], ...]
    versions: Mapping[str, VersionInfo]
    shadows: tuple[str, ...]
    checkpoints: Mapping[int, OnlineModelCheckpointed]


def code_version_label(path: Any = None) -> str | None:
    """The code version logged with each prediction: the git commit (``-dirty`` with
    uncommitted changes), or ``None`` outside git."""
    from modelog.streams.codeversion import capture_code_version

    cv = capture_code_version(path)
    if cv.commit is None:
        return None
    return cv.commit[:12] + ("-dirty" if cv.dirty else "")


class Predictor:
    """Serve ``model`` through its aliases and traffic policy (get one from ``client.predictor``).

    Parameters
    ----------
    client
        The connected :class:`~modelog.streams.sdk.Client` (logging goes through it).
    model
        The registered model.
    follow
        Follow the registry in a background thread (default). ``False`` reads it
        once; :meth:`refresh` reads what is new.
    poll_interval
        Seconds between reads of the registry topics while following.
    shadow_workers
        Threads scoring shadow aliases; ``max_shadow_backlog`` requests at most
        wait for them (beyond, shadow scoring is skipped and counted).
    code_version
        Logged with each prediction; default: :func:`code_version_label` of the
        current directory.
    load_options
        Flavor name -> keyword arguments of its loader (``{"sklearn": {"trusted": [...]}}``,
        ``{"pytorch": {"model": net}}``).
    predict_fn
        ``predict_fn(model, inputs) -> output`` for one request; default:
        ``predict_one(inputs)`` when the model has it (River), else
        ``predict`` on a one-row DataFrame (scikit-learn).
    seed
        Seed of the draws of requests without a routing key.
    log_probabilities
        Log a classifier's class probabilities with each prediction (scikit-learn's
        ``predict_proba`` over ``classes_``, River's ``predict_proba_one``), which
        the worker's performance estimation reads before labels arrive. Ignored
        with ``predict_fn``. Probabilities that are not valid (one class, not
        summing to 1) are left out and counted in ``stats.probabilities_skipped``.

    Raises
    ------
    modelog.streams.errors.BrokerUnavailableError
        The registry topics cannot be read.
    """

    shadow_alert_period: float = 60.0
    """Seconds between two ``ShadowScoringFailed`` alerts of one shadow alias and version."""

    def __init__(
        self, client: Client, model: str, *, follow: bool = True, poll_interval: float = 0.05,
        shadow_workers: int = 2, max_shadow_backlog: int = 1000,
        code_version: str | None = None,
        load_options: Mapping[str, Mapping[str, Any]] | None = None,
        predict_fn: PredictFn | None = None,
        seed: int | None = None,
        log_probabilities: bool = True,
    ) -> None:
        from modelog.streams.registry_agent import RegistryFollower
        from modelog.streams.sdk import _PREDICTION_VERSION, _json, _PredictionWire

        self.client = client
        self.model = model
        self.poll_interval = poll_interval
        self.max_shadow_backlog = max_shadow_backlog
        self.code_version = code_version if code_version is not None else code_version_label()
        self.load_options = {k: dict(v) for k, v in (load_options or {}).items()}
        self.predict_fn = predict_fn
        self.log_probabilities = log_probabilities
        self.stats = PredictorStats()
        self._wire, self._json, self._schema = _PredictionWire, _json, _PREDICTION_VERSION
        self._key_bytes = model.encode()
        self._random = random.Random(seed).random
        self._state = RegistryState()
        self._checkpoints: dict[int, OnlineModelCheckpointed] = {}
        self._worker_key = self._read_worker_key()
        self._cache: dict[tuple[int, str | None], Any] = {}
        self._load_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._shadow_limiter = ShadowFailureLimiter(self.shadow_alert_period)
        self._shadow_backlog = 0
        self._shadows: ThreadPoolExecutor | None = None
        self._shadow_workers = shadow_workers
        self._changed = False
        self._route = _Route((), {}, (), {})
        self._follower = RegistryFollower(client.settings, on_other=self._on_other)
        self._follow_lock = threading.Lock()  # the follower's consumers: one thread at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._absorb(self._follower.read_to_end())
        except BaseException:
            self._follower.close()
            raise
        if follow:
            self._thread = threading.Thread(target=self._follow, daemon=True,
                                            name=f"modelog-predictor-{model}")
            self._thread.start()

    # -- the registry ---------------------------------------------------------------------
    def _read_worker_key(self) -> bytes | None:
        from modelog.store.worker_key import KEY_FILE, worker_key

        data_dir = self.client.settings.data_dir
        if not (data_dir / KEY_FILE).is_file():  # never create one: only workers sign
            return None
        return worker_key(data_dir)

    def _on_other(self, event: Event) -> None:
        if not isinstance(event, OnlineModelCheckpointed) or event.model != self.model:
            return
        if self._worker_key is None:  # the worker may have started after this predictor
            self._worker_key = self._read_worker_key()
        key = self._worker_key
        expected = (None if key is None else checkpoint_mac(
            key, event.model, event.model_version, event.artifact_digest, event.n_learned))
        if expected is None or event.mac is None or not hmac.compare_digest(
                event.mac.lower(), expected):
            self.stats.refused_checkpoints += 1
            _log.warning("not serving checkpoint %s of %s v%s: its MAC does not verify under "
                         "the worker key of %s", event.artifact_uri, event.model,
                         event.model_version, self.client.settings.data_dir)
            return
        held = self._checkpoints.get(event.model_version)
        if held is None or event.n_learned >= held.n_learned:
            self._checkpoints[event.model_version] = event
            self._changed = True

    def _absorb(self, accepted: Sequence[RegistryEvent]) -> None:
        for refused in self._follower.fold.take_unverified():
            self.stats.refused_registry_records += 1
            _log.warning("ignoring a registry record that is not a registry fact: %s", refused)
        state = self._state
        for event in accepted:
            if event.model == self.model:
                state = apply(state, event)
        if state is not self._state or self._changed:
            self._state, self._changed = state, False
            self._route = self._build_route()
            self.stats.registry_updates += 1

    def _build_route(self) -> _Route:
        m = self._state.model(self.model)
        if m is None:
            return _Route((), {}, (), {})
        policy = m.traffic
        versions = {alias: m.versions[info.version] for alias, info in m.aliases.items()
                    if alias in policy.aliases and info.version in m.versions}
        arms = tuple((a, w) for a, w in policy.arms if w > 0 and a in versions)
        shadows = tuple(a for a in policy.shadows if a in versions)
        return _Route(arms, versions, shadows, dict(self._checkpoints))

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                with self._follow_lock:
                    self._absorb(self._follower.poll())
                with self._count_lock:
                    due = self._shadow_limiter.due(dt.datetime.now(dt.UTC))
                self._emit_alerts(due)
            except Exception as exc:  # keep serving what is known; retry next round
                self.stats.follow_errors += 1
                _log.warning("predictor of %s could not read the registry: %s", self.model, exc)

    def refresh(self) -> None:
        """Read the registry topics to their ends now: what was decided before this call is
        served after it (following applies it within about a second anyway)."""
        with self._follow_lock:
            self._absorb(self._follower.read_to_end())

    @property
    def policy(self) -> Any:
        """The traffic policy in force (:class:`~modelog.models.registry_types.TrafficPolicy`)."""
        return self._state.traffic(self.model)

    def version_of(self, alias: str) -> int | None:
        """The version ``alias`` points at, as this predictor knows it."""
        info = self._state.aliases(self.model).get(alias)
        return None if info is None else info.version

    # -- models ---------------------------------------------------------------------------
    def _load(self, info: VersionInfo, route: _Route) -> Any:
        cp = route.checkpoints.get(info.version) if info.online else None
        key = (info.version, None if cp is None else cp.artifact_digest)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._load_lock:
            hit = self._cache.get(key)
            if hit is None:
                hit = self._load_uncached(info, cp)
                for old in [k for k in self._cache if k[0] == info.version]:
                    del self._cache[old]  # an older checkpoint of this version
                self._cache[key] = hit
                self.stats.loads += 1
        return hit

    def _load_uncached(self, info: VersionInfo, cp: OnlineModelCheckpointed | None) -> Any:
        from modelog.models.flavors import load_verified
        from modelog.streams.registry_client import load_version

        artifacts = self.client.artifacts
        if cp is not None:
            snap = load_verified(artifacts.read_bytes(cp.artifact_uri), cp.artifact_digest,
                                 "river")
            learner = getattr(snap, "learner", None)
            if learner is None or not hasattr(learner, "predict_one"):
                raise StreamsError(
                    f"checkpoint {cp.artifact_uri} of {info.model} v{info.version} holds no "
                    "online learner; the worker's checkpoints hold one -- check MODELOG_DATA_DIR")
            return learner
        return load_version(artifacts, info, **self.load_options.get(info.flavor, {}))

    def _call(self, model: Any, inputs: dict[str, Any],
              info: VersionInfo) -> tuple[Any, dict[str, float] | None]:
        """The model's output for one request, with its checked class probabilities."""
        output, proba = call_one(model, inputs, info, predict_fn=self.predict_fn,
                                 probabilities=self.log_probabilities)
        return output, self._checked_proba(proba, output)

    def _checked_proba(self, proba: Any, output: Any) -> dict[str, float] | None:
        if proba is None:
            return None
        try:
            return check_probabilities(proba, output)
        except EventValidationError as exc:
            with self._count_lock:
                self.stats.probabilities_skipped += 1
            _log.debug("probabilities of %s not logged: %s", self.model, exc)
            return None

    # -- serving --------------------------------------------------------------------------
    def _choose(self, route: _Route, key: object) -> tuple[str, VersionInfo]:
        arms = route.arms
        if not arms:
            raise NoServingVersionError(self._nothing_to_serve())
        alias = arms[0][0] if len(arms) == 1 else choose_arm(
            arms, self.model, None if key is None else str(key), self._random())
        return alias, route.versions[alias]

    def _nothing_to_serve(self) -> str:
        m = self._state.model(self.model)
        if m is None or not m.versions:
            return (f"model {self.model} is not registered; register it with "
                    "client.register_model(...) and set its production alias")
        policy = m.traffic
        return (f"model {self.model} has none of the aliases its traffic policy routes to "
                f"({policy}) set (aliases: {', '.join(sorted(m.aliases)) or 'none'}); set one "
                f"with client.set_alias({self.model!r}, 'production', VERSION, reason=...)")

    def _check(self, inputs: Mapping[str, Any], info: VersionInfo) -> dict[str, Any]:
        feats = check_scalars(inputs, "PredictionMade", "inputs")
        for col in info.signature:
            if col.name not in feats:
                raise EventValidationError(
                    "PredictionMade", f"inputs.{col.name}", None,
                    f"is required by the signature of {self.model} v{info.version} "
                    f"(columns: {', '.join(c.name for c in info.signature)}); the model did "
                    "not run")
        return feats

    def _log(self, version: int, alias: str, feats: dict[str, Any], output: Any,
             prediction_id: str | None, shadow: bool, paired_with: str | None,
             probabilities: dict[str, float] | None = None) -> str:
        c = self.client
        event_id = c.new_id()
        time = c.new_id.time
        pid = event_id if prediction_id is None else prediction_id
        c._send(c._serving, self._key_bytes, self._wire(
            event_id, time, self.model, c._name, self._schema, pid, self.model, version,
            self.code_version, feats, output, alias, shadow, paired_with, probabilities),
            self._json)
        return pid

    def serve(self, inputs: Mapping[str, Any], *, key: object = None,
              prediction_id: str | None = None) -> Served:
        """Answer one request; the output with its prediction id, version and alias.

        ``key`` routes stickily (a user id: the same key always gets the same
        arm while the policy stands); ``prediction_id`` is logged instead of a
        new one (pass it to ``client.log_label`` later either way).

        Raises
        ------
        NoServingVersionError
            No alias of the traffic policy is set (e.g. no production version).
        EventValidationError
            Inputs that are not finite scalars, or miss a column of the version's
            signature (the model did not run, nothing was logged).
        """
        route = self._route
        alias, info = self._choose(route, key)
        feats = self._check(inputs, info)
        output, proba = self._call(self._load(info, route), feats, info)
        pid = self._log(info.version, alias, feats, output, prediction_id, False, None, proba)
        self.stats.served += 1
        for shadow in route.shadows:
            self._submit_shadow(shadow, route, feats, pid)
        return Served(output, pid, info.version, alias)

    def predict(self, inputs: Mapping[str, Any], *, key: object = None,
                prediction_id: str | None = None) -> Any:
        """Answer one request with the routed version's output (see :meth:`serve`)."""
        return self.serve(inputs, key=key, prediction_id=prediction_id).output

    def predict_many(self, rows: Sequence[Mapping[str, Any]], *,
                     keys: Sequence[object] | None = None) -> list[Any]:
        """Answer a batch: each row routed (by ``keys[i]`` if given), answered and logged.

        Rows routed to the same alias are predicted in one call of the model
        when it has a batch ``predict`` (scikit-learn); every row is checked
        before any model runs.
        """
        return [s.output for s in self.serve_many(rows, keys=keys)]

    def serve_many(self, rows: Sequence[Mapping[str, Any]], *,
                   keys: Sequence[object] | None = None) -> list[Served]:
        """Like :meth:`predict_many`, with each row's prediction id, version and alias."""
        if keys is not None and len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows; pass one key per row")
        route = self._route
        chosen = [self._choose(route, None if keys is None else keys[i])
                  for i in range(len(rows))]
        feats = [self._check(row, info) for row, (_, info) in zip(rows, chosen, strict=True)]
        outputs: list[tuple[Any, dict[str, float] | None]] = [(None, None)] * len(rows)
        groups: dict[str, list[int]] = {}
        for i, (alias, _) in enumerate(chosen):
            groups.setdefault(alias, []).append(i)
        for alias, idx in groups.items():
            info = route.versions[alias]
            for i, out in zip(idx, self._call_many(self._load(info, route),
                                                   [feats[i] for i in idx], info), strict=True):
                outputs[i] = out
        served = []
        for i, (alias, info) in enumerate(chosen):
            output, proba = outputs[i]
            pid = self._log(info.version, alias, feats[i], output, None, False, None, proba)
            served.append(Served(output, pid, info.version, alias))
        for shadow in route.shadows:  # the batch in one call of each shadow model
            self._submit_shadows(shadow, route, feats, [s.prediction_id for s in served])
        self.stats.served += len(rows)
        return served

    def _call_many(self, model: Any, rows: list[dict[str, Any]],
                   info: VersionInfo) -> list[tuple[Any, dict[str, float] | None]]:
        return [(o, self._checked_proba(p, o)) for o, p in call_many(
            model, rows, info, predict_fn=self.predict_fn, probabilities=self.log_probabilities)]

    # -- shadows --------------------------------------------------------------------------
    def _submit_shadow(self, alias: str, route: _Route, feats: dict[str, Any],
                       paired_with: str) -> None:
        self._submit_shadows(alias, route, [feats], [paired_with])

    def _submit_shadows(self, alias: str, route: _Route, feats: list[dict[str, Any]],
                        paired_with: list[str]) -> None:
        """Queue the shadow scoring of a batch (one model call); dropped when the backlog
        of queued rows is full."""
        with self._count_lock:
            if self._shadow_backlog >= self.max_shadow_backlog:
                self.stats.shadow_dropped += len(feats)
                return
            self._shadow_backlog += len(feats)
        if self._shadows is None:
            with self._load_lock:
                if self._shadows is None:
                    self._shadows = ThreadPoolExecutor(
                        self._shadow_workers, thread_name_prefix=f"modelog-shadow-{self.model}")
        self._shadows.submit(self._score_shadows, alias, route, feats, paired_with)

    def _score_shadows(self, alias: str, route: _Route, feats: list[dict[str, Any]],
                       paired_with: list[str]) -> None:
        try:
            info = route.versions[alias]
            for row in feats:
                self._check(row, info)
            outputs = self._call_many(self._load(info, route), feats, info)
            for row, (output, proba), pid in zip(feats, outputs, paired_with, strict=True):
                self._log(info.version, alias, row, output, None, True, pid, proba)
            with self._count_lock:
                self.stats.shadow_logged += len(feats)
        except Exception as exc:  # never reaches the caller: counted, logged and alerted
            with self._count_lock:
                self.stats.shadow_errors += len(feats)
                alert = self._shadow_limiter.record(
                    self.model, alias, route.versions[alias].version, type(exc).__name__,
                    str(exc), dt.datetime.now(dt.UTC), paired_with=paired_with[0],
                    producer=self.client.settings.producer_name)
            self._emit_alerts([] if alert is None else [alert])
            _log.warning("shadow %s of %s failed on prediction %s: %s", alias, self.model,
                         ", ".join(paired_with[:3]), exc)
        finally:
            with self._count_lock:
                self._shadow_backlog -= len(feats)

    def _emit_alerts(self, alerts: Sequence[ShadowScoringFailed]) -> None:
        for alert in alerts:
            try:
                self.client.emit(alert)
                with self._count_lock:
                    self.stats.shadow_alerts += 1
            except Exception as exc:  # e.g. the client was closed: the count stays in stats
                _log.warning("could not send the alert %s: %s", alert.message, exc)

    # -- lifecycle ------------------------------------------------------------------------
    def aio(self) -> AsyncPredictor:
        """This predictor for asyncio code (models run in a thread)."""
        return AsyncPredictor(self)

    def close(self, timeout: float = 10.0) -> None:
        """Stop following the registry and wait for pending shadow scoring (idempotent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        shadows, self._shadows = self._shadows, None
        if shadows is not None:
            shadows.shutdown(wait=True)
        with self._follow_lock:
            self._follower.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Predictor({self.model!r}, {self.policy})"


class AsyncPredictor:
    """A :class:`Predictor` for asyncio applications: routing and logging stay cheap and
    synchronous, the model runs in a thread so the event loop is never blocked.

    Examples
    --------
    >>> async def handler(predictor, request):                       # doctest: +SKIP
    ...     return await predictor.predict(request.features, key=request.user_id)
    >>> predictor = client.predictor("churn").aio()                  # doctest: +SKIP
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    async def serve(self, inputs: Mapping[str, Any], *, key: object = None,
                    prediction_id: str | None = None) -> Served:
        """See :meth:`Predictor.serve`."""
        return await asyncio.to_thread(self.predictor.serve, inputs, key=key,
                                       prediction_id=prediction_id)

    async def predict(self, inputs: Mapping[str, Any], *, key: object = None,
                      prediction_id: str | None = None) -> Any:
        """See :meth:`Predictor.predict`."""
        return (await self.serve(inputs, key=key, prediction_id=prediction_id)).output

    async def predict_many(self, rows: Sequence[Mapping[str, Any]], *,
                           keys: Sequence[object] | None = None) -> list[Any]:
        """See :meth:`Predictor.predict_many`."""
        return await asyncio.to_thread(self.predictor.predict_many, rows, keys=keys)

    async def close(self) -> None:
        """Close the predictor (in a thread: it waits for shadow scoring)."""
        await asyncio.to_thread(self.predictor.close)

    async def __aenter__(self) -> AsyncPredictor:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
