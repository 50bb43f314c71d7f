"""Events of the MLflow-compatible endpoint (``modelog mlflow-server``).

They record what MLflow has and modelog did not.

Runs, params, metrics, artifacts, datasets, registrations and alias changes
made through the MLflow API are ordinary modelog events (``RunStarted``,
``ParamsLogged``, ``ModelVersionRequested``...). The facts below exist only
because MLflow has the concept:

* experiments with numeric ids (:class:`ExperimentCreated`, ...): modelog's own
  runs name their experiment in ``RunStarted.experiment``; an experiment made
  through MLflow is recorded once with the id the endpoint gave it, and runs
  still carry its *name*, so ``modelog runs list`` groups them as before;
* tags that change after a run started, deleted/restored runs, MLflow
  dataset inputs (:class:`RunTagsSet`, :class:`RunLifecycleChanged`,
  :class:`RunInputsLogged`);
* MLflow 3 "logged models" (:class:`LoggedModelCreated`, :class:`LoggedModelUpdated`);
* files uploaded through the proxied ``mlflow-artifacts`` API
  (:class:`ArtifactStored`: the path maps to a content-addressed digest);
* registered-model and model-version metadata -- descriptions, tags, deletion
  (:class:`RegisteredModelChanged`, :class:`ModelVersionChanged`). Version
  numbers and aliases stay the registry's single writer's decisions.

All live on the ``runs`` topic (keyed by experiment id, run id, logged-model id,
artifact path or model name): the registry topic only carries the registry
worker's answers to commands.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.codec import decode, encode
>>> e = ExperimentCreated(id="0190a6f2-0000-7000-8000-000000000001", aggregate="1",
...     time=dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc), experiment_id="1",
...     name="churn", artifact_location="mlflow-artifacts:/1")
>>> decode(encode(e)).name
'churn'
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from modelog.models.event_base import Event, Id, Name, check_nesting

__all__ = [
    "EVENTS",
    "ArtifactStored",
    "ExperimentChanged",
    "ExperimentCreated",
    "LoggedModelCreated",
    "LoggedModelUpdated",
    "ModelVersionChanged",
    "RegisteredModelChanged",
    "RunInputsLogged",
    "RunLifecycleChanged",
    "RunTagsSet",
]

TagValue = Annotated[str, msgspec.Meta(max_length=8000)]


class ExperimentCreated(Event, frozen=True, kw_only=True):
    """An MLflow experiment was created (aggregate: its id)."""

    stream: ClassVar[str] = "runs"
    experiment_id: Id
    #: MLflow's name (any text); runs name the experiment by it when it is a
    #: modelog name, else ``mlflow-<experiment_id>``.
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    artifact_location: str = ""
    tags: dict[str, TagValue] = {}


class ExperimentChanged(Event, frozen=True, kw_only=True):
    """Tags set or removed, or the experiment deleted/restored (aggregate: its id)."""

    stream: ClassVar[str] = "runs"
    experiment_id: Id
    set_tags: dict[str, TagValue] = {}
    removed_tags: list[str] = []
    lifecycle: Literal["active", "deleted"] | None = None


class RunTagsSet(Event, frozen=True, kw_only=True):
    """Tags of a run were set (``removed``: deleted) after it started (aggregate: the run id)."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    tags: dict[str, TagValue] = {}
    removed: list[str] = []


class RunLifecycleChanged(Event, frozen=True, kw_only=True):
    """A run was deleted (hidden from searches) or restored (aggregate: the run id)."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    lifecycle: Literal["active", "deleted"]


class RunInputsLogged(Event, frozen=True, kw_only=True):
    """MLflow dataset inputs of a run: ``{"dataset": {...}, "tags": [...]}`` as MLflow sent them."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    datasets: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []

    def __post_init__(self) -> None:
        check_nesting("RunInputsLogged", "datasets", self.datasets)
        check_nesting("RunInputsLogged", "models", self.models)


class LoggedModelCreated(Event, frozen=True, kw_only=True):
    """An MLflow 3 logged model was created (aggregate: its model id)."""

    stream: ClassVar[str] = "runs"
    model_id: Id
    experiment_id: Id
    name: str = ""
    artifact_location: str = ""
    source_run_id: str | None = None
    model_type: str = ""
    params: dict[str, TagValue] = {}
    tags: dict[str, TagValue] = {}


class LoggedModelUpdated(Event, frozen=True, kw_only=True):
    """A logged model was finalized, re-tagged, given params or deleted."""

    stream: ClassVar[str] = "runs"
    model_id: Id
    status: str | None = None
    set_tags: dict[str, TagValue] = {}
    removed_tags: list[str] = []
    params: dict[str, TagValue] = {}
    deleted: bool = False


class ArtifactStored(Event, frozen=True, kw_only=True):
    """A file was uploaded through ``mlflow-artifacts`` at ``path`` (aggregate: the path).

    ``digest``/``uri`` name its bytes in the content-addressed artifact store.
    """

    stream: ClassVar[str] = "runs"
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    uri: str
    digest: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16,128}$(?!\n)")]
    size: Annotated[int, msgspec.Meta(ge=0)]


class RegisteredModelChanged(Event, frozen=True, kw_only=True):
    """A registered model was created, described, tagged or deleted (aggregate: its name).

    ``created`` marks the MLflow ``create_registered_model``: the model exists
    before it has a version (modelog's registry knows a model by its versions).
    """

    stream: ClassVar[str] = "runs"
    model: Name
    created: bool = False
    description: str | None = None
    set_tags: dict[str, TagValue] = {}
    removed_tags: list[str] = []
    deleted: bool = False


class ModelVersionChanged(Event, frozen=True, kw_only=True):
    """A model version's MLflow metadata changed: description, tags, stage, deletion."""

    stream: ClassVar[str] = "runs"
    model: Name
    model_version: Annotated[int, msgspec.Meta(ge=1)]
    description: str | None = None
    set_tags: dict[str, TagValue] = {}
    removed_tags: list[str] = []
    stage: str | None = None
    deleted: bool = False


EVENTS: tuple[type[Event], ...] = (
    ExperimentCreated,
    ExperimentChanged,
    RunTagsSet,
    RunLifecycleChanged,
    RunInputsLogged,
    LoggedModelCreated,
    LoggedModelUpdated,
    ArtifactStored,
    RegisteredModelChanged,
    ModelVersionChanged,
)
"""The MLflow endpoint's event types, in the catalogue's order."""
