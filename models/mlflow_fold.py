"""What the MLflow endpoint knows: tracking and registry events folded into MLflow's entities.

:class:`MlflowFold` turns the ``runs`` topic's events (modelog's own run events
and :mod:`modelog.models.mlflow_events`) and the registry's *verified* answers
(``ModelVersionRegistered``, ``AliasSet``, ``AliasRemoved``) into experiments,
runs, logged models, registered models and versions as MLflow sees them. It
is what ``modelog mlflow-server`` answers reads from; the server feeds it its
own writes at once (read-your-writes) and everything else it reads from the
log. Applying an event twice changes nothing (events are remembered by id).

Mapping decisions (see the README's MLflow section):

* an experiment is recorded by :class:`~modelog.models.mlflow_events.ExperimentCreated`;
  runs logged by modelog's SDK name an experiment that was never created that
  way -- it is listed with its name as id. ``"0"`` is ``Default``.
* a run's status: ``RunFinished`` -> ``FINISHED``; ``RunFailed`` -> ``FAILED``,
  or ``KILLED`` when its error is ``"KILLED"``.

Pure: imports :mod:`modelog.models` only.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import RunStarted, MetricsLogged, MetricPoint
>>> t = dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc)
>>> fold = MlflowFold()
>>> fold.apply(RunStarted(id="e1", time=t, aggregate="r1", run_id="r1", experiment="churn"))
True
>>> fold.apply(MetricsLogged(id="e2", time=t, aggregate="r1", run_id="r1",
...            metrics=[MetricPoint(key="f1", value=0.8, step=1)]))
True
>>> fold.runs["r1"].latest["f1"].value, fold.experiment_id_of("churn")
(0.8, 'churn')
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from modelog.models import mlflow_events as me
from modelog.models.event_base import NAME_PATTERN
from modelog.models.events import (
    AliasRemoved,
    AliasSet,
    ArtifactLogged,
    Event,
    MetricsLogged,
    ModelVersionRegistered,
    ParamsLogged,
    RunFailed,
    RunFinished,
    RunStarted,
)

__all__ = ["DEFAULT_EXPERIMENT", "Experiment", "LoggedModel", "MetricValue", "MlflowFold",
           "RegisteredModel", "RunRecord", "VersionRecord", "millis"]

_NAME = re.compile(NAME_PATTERN)
DEFAULT_EXPERIMENT = ("0", "Default")
"""The id and name of MLflow's default experiment."""


def millis(event: Event) -> int:
    """The event time in epoch milliseconds (MLflow's timestamps)."""
    return int(event.time.timestamp() * 1000)


@dataclasses.dataclass
class Experiment:
    """An MLflow experiment."""

    experiment_id: str
    name: str
    artifact_location: str = ""
    lifecycle: str = "active"
    created_ms: int = 0
    updated_ms: int = 0
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def run_experiment(self) -> str:
        """What its runs' ``RunStarted.experiment`` says: the name, or ``mlflow-<id>``.

        MLflow allows any experiment name (``/Users/me/My Experiment``); modelog's
        run events name experiments with :data:`~modelog.models.event_base.NAME_PATTERN`.
        """
        return self.name if _NAME.fullmatch(self.name) else f"mlflow-{self.experiment_id}"


@dataclasses.dataclass(frozen=True)
class MetricValue:
    """One logged metric value."""

    key: str
    value: float
    timestamp: int
    step: int


@dataclasses.dataclass
class RunRecord:
    """An MLflow run folded from its events."""

    run_id: str
    experiment: str
    name: str = ""
    status: str = "RUNNING"
    start_ms: int = 0
    started: bool = False
    end_ms: int | None = None
    lifecycle: str = "active"
    parent_run_id: str | None = None
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    history: dict[str, list[MetricValue]] = dataclasses.field(default_factory=dict)
    latest: dict[str, MetricValue] = dataclasses.field(default_factory=dict)
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    model_inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LoggedModel:
    """An MLflow 3 logged model."""

    model_id: str
    experiment_id: str
    name: str
    artifact_location: str
    source_run_id: str | None
    model_type: str
    created_ms: int
    updated_ms: int
    status: str = "PENDING"
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    deleted: bool = False


@dataclasses.dataclass
class VersionRecord:
    """A registered model version: the registry's decision plus its MLflow metadata."""

    model: str
    version: int
    source: str
    run_id: str | None
    created_ms: int
    updated_ms: int
    flavor: str = ""
    description: str = ""
    stage: str = "None"
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    deleted: bool = False


@dataclasses.dataclass
class RegisteredModel:
    """A registered model: created through MLflow, or known from its registered versions."""

    name: str
    created_ms: int
    updated_ms: int
    description: str = ""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    versions: dict[int, VersionRecord] = dataclasses.field(default_factory=dict)
    aliases: dict[str, int] = dataclasses.field(default_factory=dict)
    deleted: bool = False


class MlflowFold:
    """MLflow's entities as a pure fold of events; :meth:`apply` is idempotent by event id."""

    def __init__(self) -> None:
        self.experiments: dict[str, Experiment] = {
            DEFAULT_EXPERIMENT[0]: Experiment(*DEFAULT_EXPERIMENT,
                                              artifact_location="mlflow-artifacts:/0")}
        self.runs: dict[str, RunRecord] = {}
        self.logged_models: dict[str, LoggedModel] = {}
        self.models: dict[str, RegisteredModel] = {}
        self.artifacts: dict[str, tuple[str, int]] = {}
        """Uploaded artifact path -> (digest, size)."""
        self._seen: set[str] = set()

    # -- reading ------------------------------------------------------------------------
    def experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment called ``name`` (an implicit one for SDK runs), if any."""
        for exp in self.experiments.values():
            if exp.name == name:
                return exp
        if all(e.run_experiment != name for e in self.experiments.values()) and any(
                r.experiment == name for r in self.runs.values()):
            return Experiment(name, name, artifact_location=f"mlflow-artifacts:/{name}")
        return None

    def experiment_id_of(self, name: str) -> str:
        """The id of the experiment runs call ``name`` (the name, when only SDK runs use it)."""
        for exp in self.experiments.values():
            if exp.run_experiment == name:
                return exp.experiment_id
        return name

    def all_experiments(self) -> list[Experiment]:
        """Every experiment, created ones first, then the implicit ones of SDK runs."""
        named = {e.run_experiment for e in self.experiments.values()}
        implicit = sorted({r.experiment for r in self.runs.values()} - named)
        return [*self.experiments.values(),
                *(Experiment(n, n, artifact_location=f"mlflow-artifacts:/{n}") for n in implicit)]

    def model(self, name: str) -> RegisteredModel:
        """The registered model ``name`` (created on first mention)."""
        found = self.models.get(name)
        if found is None:
            found = self.models[name] = RegisteredModel(name, 0, 0)
        return found

    # -- folding ------------------------------------------------------------------------
    def apply(self, event: Event) -> bool:
        """Fold ``event`` in; ``False`` when it was applied before or is not MLflow's concern."""
        if event.id in self._seen:
            return False
        handler = _HANDLERS.get(type(event))
        if handler is None:
            return False
        self._seen.add(event.id)
        handler(self, event)
        return True

    def _run(self, run_id: str) -> RunRecord:
        run = self.runs.get(run_id)
        if run is None:  # an event of a run whose start is on another partition, not read yet
            run = self.runs[run_id] = RunRecord(run_id, DEFAULT_EXPERIMENT[1])
        return run

    def _run_started(self, e: Event) -> None:
        assert isinstance(e, RunStarted)
        run = self._run(e.run_id)
        run.experiment, run.name, run.parent_run_id = e.experiment, e.name, e.parent_run_id
        run.start_ms, run.started = millis(e), True
        run.tags = {**e.tags, **run.tags}
        if e.name:
            run.tags.setdefault("mlflow.runName", e.name)
        if e.parent_run_id:
            run.tags.setdefault("mlflow.parentRunId", e.parent_run_id)
        if e.code.commit:
            run.tags.setdefault("mlflow.source.git.commit", e.code.commit)

    def _params(self, e: Event) -> None:
        assert isinstance(e, ParamsLogged)
        run = self._run(e.run_id)
        for k, v in e.params.items():
            run.params.setdefault(k, _text(v))

    def _metrics(self, e: Event) -> None:
        assert isinstance(e, MetricsLogged)
        run = self._run(e.run_id)
        for p in e.metrics:
            ts = int(p.time.timestamp() * 1000) if p.time is not None else millis(e)
            value = MetricValue(p.key, p.value, ts, p.step)
            run.history.setdefault(p.key, []).append(value)
            old = run.latest.get(p.key)
            if old is None or (value.step, value.timestamp, value.value) >= (
                    old.step, old.timestamp, old.value):
                run.latest[p.key] = value

    def _artifact(self, e: Event) -> None:
        assert isinstance(e, ArtifactLogged)
        self._run(e.run_id).artifacts[e.path] = e.digest

    def _ended(self, e: Event) -> None:
        assert isinstance(e, RunFinished | RunFailed)
        run = self._run(e.run_id)
        run.end_ms = millis(e)
        if isinstance(e, RunFinished):
            run.status = "FINISHED"
        else:
            run.status = "KILLED" if e.error == "KILLED" else "FAILED"

    def _run_tags(self, e: Event) -> None:
        assert isinstance(e, me.RunTagsSet)
        run = self._run(e.run_id)
        run.tags.update(e.tags)
        for key in e.removed:
            run.tags.pop(key, None)
        if "mlflow.runName" in e.tags:
            run.name = e.tags["mlflow.runName"]

    def _run_lifecycle(self, e: Event) -> None:
        assert isinstance(e, me.RunLifecycleChanged)
        self._run(e.run_id).lifecycle = e.lifecycle

    def _inputs(self, e: Event) -> None:
        assert isinstance(e, me.RunInputsLogged)
        run = self._run(e.run_id)
        run.inputs.extend(e.datasets)
        run.model_inputs.extend(e.models)

    def _experiment(self, e: Event) -> None:
        assert isinstance(e, me.ExperimentCreated)
        ms = millis(e)
        self.experiments[e.experiment_id] = Experiment(
            e.experiment_id, e.name, e.artifact_location, "active", ms, ms, dict(e.tags))

    def _experiment_changed(self, e: Event) -> None:
        assert isinstance(e, me.ExperimentChanged)
        exp = self.experiments.get(e.experiment_id)
        if exp is None:
            return
        _retag(exp.tags, e.set_tags, e.removed_tags)
        if e.lifecycle is not None:
            exp.lifecycle = e.lifecycle
        exp.updated_ms = millis(e)

    def _logged_model(self, e: Event) -> None:
        assert isinstance(e, me.LoggedModelCreated)
        ms = millis(e)
        self.logged_models[e.model_id] = LoggedModel(
            e.model_id, e.experiment_id, e.name, e.artifact_location, e.source_run_id,
            e.model_type, ms, ms, params=dict(e.params), tags=dict(e.tags))

    def _logged_model_updated(self, e: Event) -> None:
        assert isinstance(e, me.LoggedModelUpdated)
        lm = self.logged_models.get(e.model_id)
        if lm is None:
            return
        lm.status = e.status or lm.status
        lm.tags.update(e.set_tags)
        lm.params.update(e.params)
        for key in e.removed_tags:
            lm.tags.pop(key, None)
        lm.deleted = lm.deleted or e.deleted
        lm.updated_ms = millis(e)

    def _stored(self, e: Event) -> None:
        assert isinstance(e, me.ArtifactStored)
        self.artifacts[e.path] = (e.digest, e.size)

    def _model_changed(self, e: Event) -> None:
        assert isinstance(e, me.RegisteredModelChanged)
        ms = millis(e)
        model = self.model(e.model)
        if e.created:  # a (re)creation after a deletion starts afresh
            if model.deleted:
                model = self.models[e.model] = RegisteredModel(e.model, ms, ms)
            model.created_ms = model.created_ms or ms
        if e.description is not None:
            model.description = e.description
        _retag(model.tags, e.set_tags, e.removed_tags)
        model.deleted = e.deleted
        model.updated_ms = ms

    def _version_changed(self, e: Event) -> None:
        assert isinstance(e, me.ModelVersionChanged)
        version = self.model(e.model).versions.get(e.model_version)
        if version is None:
            return
        if e.description is not None:
            version.description = e.description
        _retag(version.tags, e.set_tags, e.removed_tags)
        version.stage = e.stage or version.stage
        version.deleted = version.deleted or e.deleted
        version.updated_ms = millis(e)
        if e.stage or e.deleted:  # as in MLflow: these also touch the registered model
            self.model(e.model).updated_ms = version.updated_ms

    def _registered(self, e: Event) -> None:
        assert isinstance(e, ModelVersionRegistered)
        ms = millis(e)
        model = self.model(e.model)
        if model.deleted:  # registering into a deleted model's name re-creates it
            model = self.models[e.model] = RegisteredModel(e.model, ms, ms)
        model.created_ms = model.created_ms or ms
        model.updated_ms = ms
        model.versions[e.model_version] = VersionRecord(
            e.model, e.model_version, e.artifact_uri, e.run_id, ms, ms, e.flavor,
            e.description)

    def _alias(self, e: Event) -> None:
        assert isinstance(e, AliasSet | AliasRemoved)
        model = self.model(e.model)
        if isinstance(e, AliasSet):
            model.aliases[e.alias] = e.model_version
        else:
            model.aliases.pop(e.alias, None)


def _retag(tags: dict[str, str], new: dict[str, str], removed: list[str]) -> None:
    tags.update(new)
    for key in removed:
        tags.pop(key, None)


def _text(value: object) -> str:
    """A parameter value as MLflow shows it (a string)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return "None" if value is None else str(value)


_HANDLERS: dict[type[Event], Any] = {
    RunStarted: MlflowFold._run_started,
    ParamsLogged: MlflowFold._params,
    MetricsLogged: MlflowFold._metrics,
    ArtifactLogged: MlflowFold._artifact,
    RunFinished: MlflowFold._ended,
    RunFailed: MlflowFold._ended,
    me.RunTagsSet: MlflowFold._run_tags,
    me.RunLifecycleChanged: MlflowFold._run_lifecycle,
    me.RunInputsLogged: MlflowFold._inputs,
    me.ExperimentCreated: MlflowFold._experiment,
    me.ExperimentChanged: MlflowFold._experiment_changed,
    me.LoggedModelCreated: MlflowFold._logged_model,
    me.LoggedModelUpdated: MlflowFold._logged_model_updated,
    me.ArtifactStored: MlflowFold._stored,
    me.RegisteredModelChanged: MlflowFold._model_changed,
    me.ModelVersionChanged: MlflowFold._version_changed,
    ModelVersionRegistered: MlflowFold._registered,
    AliasSet: MlflowFold._alias,
    AliasRemoved: MlflowFold._alias,
}
