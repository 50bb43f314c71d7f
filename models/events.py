"""The event catalogue: every fact in a model's life, as a frozen, typed event.

Each event carries the envelope fields of :class:`Event` -- a unique,
time-sortable ``id`` (UUIDv7), its ``type`` (the class name, written by the
codec as a tag) and ``schema_version``, the event ``time`` (UTC), the
``aggregate`` it belongs to (also its Kafka key, so one aggregate's events
stay in order) and the ``producer`` that wrote it -- plus its own payload.

Events are serialized explicitly as JSON (see :mod:`modelog.models.codec`);
no Python class path ever reaches the log. When a schema changes, the class
bumps ``schema_version`` and registers an ``upcast_vN_vM`` function in
:data:`UPCASTERS`, so old records are upgraded as they are read.

Names follow the past tense: an event states what happened.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from modelog.models import mlflow_events, policy_events, quality_events, serving_events
from modelog.models.event_base import (
    NAME_PATTERN,
    Digest,
    Event,
    Features,
    Id,
    Name,
    Output,
    Probabilities,
    Scalar,
    ServedName,
    Severity,
    Version,
    Window,
    check_nesting,
)

__all__ = [
    "CATALOGUE",
    "NAME_PATTERN",
    "AlertDelivered",
    "AlertSubscriptionCreated",
    "AlertSubscriptionRemoved",
    "AliasChangeRejected",
    "AliasChangeRequested",
    "AliasRemoved",
    "AliasSet",
    "AnomalyDetected",
    "ArtifactLogged",
    "CodeVersion",
    "ColumnSchema",
    "DatasetVersionCreated",
    "Digest",
    "DriftDetected",
    "DriftResolved",
    "Event",
    "Features",
    "Id",
    "LabelObserved",
    "MetricPoint",
    "MetricsLogged",
    "ModelVersionRegistered",
    "ModelVersionRequested",
    "MonitorConfigured",
    "MonitorStatsReported",
    "Name",
    "OnlineModelCheckpointed",
    "Output",
    "ParamsLogged",
    "PredictionMade",
    "RetrainJobEnded",
    "RetrainRequested",
    "RunDatasetUsed",
    "RunFailed",
    "RunFinished",
    "RunStarted",
    "Scalar",
    "Severity",
    "SkewDetected",
    "Version",
    "Window",
]



# -- datasets ---------------------------------------------------------------
class ColumnSchema(msgspec.Struct, frozen=True):
    """One column of a dataset or a model signature."""

    name: str
    type: str
    nullable: bool = True


class DatasetVersionCreated(Event, frozen=True, kw_only=True):
    """A new version of a dataset was recorded (aggregate: the dataset name)."""

    stream: ClassVar[str] = "datasets"
    name: Name
    digest: Digest
    columns: list[ColumnSchema]
    num_rows: Annotated[int, msgspec.Meta(ge=0)]
    uri: str
    parents: list[str] = []
    profile: dict[str, Any] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        check_nesting("DatasetVersionCreated", "profile", self.profile)


# -- runs -------------------------------------------------------------------
class CodeVersion(msgspec.Struct, frozen=True, kw_only=True):
    """Where the code that produced something came from."""

    commit: str | None = None
    branch: str | None = None
    remote: str | None = None
    dirty: bool = False
    diff_digest: str | None = None
    entry_point: str | None = None
    python: str | None = None
    packages: dict[str, str] = {}
    note: str | None = None
    #: Run from a notebook: a checkpoint of its content (the ``.ipynb`` file, or
    #: the cells executed so far) stored in the artifact store.
    notebook_uri: str | None = None
    notebook_digest: str | None = None


class RunStarted(Event, frozen=True, kw_only=True):
    """A training run started (aggregate: the run id)."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    experiment: Name
    name: str = ""
    parent_run_id: str | None = None
    tags: dict[str, str] = {}
    code: CodeVersion = CodeVersion()


class ParamsLogged(Event, frozen=True, kw_only=True):
    """Hyperparameters of a run were recorded."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    params: dict[str, Scalar]


class MetricPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One metric value at a step and time."""

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=250)]
    value: float
    step: Annotated[int, msgspec.Meta(ge=0)] = 0
    time: dt.datetime | None = None


class MetricsLogged(Event, frozen=True, kw_only=True):
    """A batch of metric values of a run was recorded."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    metrics: list[MetricPoint]


class ArtifactLogged(Event, frozen=True, kw_only=True):
    """A file produced by a run was stored, content-addressed."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    path: str
    uri: str
    digest: Digest
    size: Annotated[int, msgspec.Meta(ge=0)]


class RunDatasetUsed(Event, frozen=True, kw_only=True):
    """A run read a dataset version (lineage edge dataset -> run)."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    dataset: Name
    digest: Digest
    context: str = "training"


class RunFinished(Event, frozen=True, kw_only=True):
    """A run ended successfully."""

    stream: ClassVar[str] = "runs"
    run_id: Id


class RunFailed(Event, frozen=True, kw_only=True):
    """A run ended with an exception."""

    stream: ClassVar[str] = "runs"
    run_id: Id
    error: str
    traceback: str = ""


# -- registry ---------------------------------------------------------------
class ModelVersionRequested(Event, frozen=True, kw_only=True):
    """Someone asked to register a new version of a model (a command; aggregate: the model).

    The registry worker, the single writer of the model's registry partition,
    answers with a :class:`ModelVersionRegistered` carrying the next version
    number and the same ``command_id``. ``artifact_digest`` is the SHA-256 of
    the artifact bytes; ``library_versions`` the versions it was written with.
    """

    stream: ClassVar[str] = "registry_commands"
    command_id: Id
    model: Name
    run_id: str | None = None
    flavor: str
    artifact_uri: str = ""
    artifact_digest: str = ""
    signature: list[ColumnSchema] = []
    description: str = ""
    online: bool = False
    library_versions: dict[str, str] = {}
    actor: str = ""


class ModelVersionRegistered(Event, frozen=True, kw_only=True):
    """A model version was registered (aggregate: the model name).

    ``command_id`` names the :class:`ModelVersionRequested` it answers
    (``None`` for versions registered before registration became a command)
    and ``library_versions`` the library versions the artifact was written
    with. Both were added with defaults, so older records still decode as they
    are: no schema-version bump was needed.
    """

    stream: ClassVar[str] = "registry"
    model: Name
    model_version: Version
    run_id: str | None = None
    flavor: str
    artifact_uri: str
    artifact_digest: str
    signature: list[ColumnSchema] = []
    description: str = ""
    online: bool = False
    command_id: str | None = None
    library_versions: dict[str, str] = {}


class AliasChangeRequested(Event, frozen=True, kw_only=True):
    """Someone asked to point an alias at a version, or to remove it (a command).

    ``model_version`` ``None`` asks for removal. ``expected_version`` guards
    against lost updates: the change is rejected unless the alias points there.
    """

    stream: ClassVar[str] = "registry_commands"
    command_id: Id
    model: Name
    alias: Name
    model_version: Version | None = None
    expected_version: Version | None = None
    actor: str = ""
    reason: str = ""


class AliasSet(Event, frozen=True, kw_only=True):
    """An alias (production, staging, shadow, ...) now points at a version."""

    stream: ClassVar[str] = "registry"
    model: Name
    alias: Name
    model_version: Version
    previous_version: Version | None = None
    actor: str = ""
    reason: str = ""
    command_id: str | None = None


class AliasRemoved(Event, frozen=True, kw_only=True):
    """An alias was removed from a model."""

    stream: ClassVar[str] = "registry"
    model: Name
    alias: Name
    previous_version: Version | None = None
    actor: str = ""
    reason: str = ""
    command_id: str | None = None


class AliasChangeRejected(Event, frozen=True, kw_only=True):
    """An alias command was refused, with the reason."""

    stream: ClassVar[str] = "registry"
    command_id: Id
    model: Name
    alias: Name
    model_version: Version | None = None
    reason: str


# -- serving ----------------------------------------------------------------
class PredictionMade(Event, frozen=True, kw_only=True):
    """A model served a prediction (aggregate: the model name).

    ``output`` is what the model answered (for a classifier, the class);
    ``probabilities``, when the model gave them, its probability for each class
    (keys are the classes as text), which label-free performance estimation
    reads.

    Schema history: v1 (draft wire format) called ``inputs`` ``features`` and
    ``output`` ``prediction`` and had no ``code_version``; see
    :func:`upcast_prediction_v1_v2`. v2 had no ``probabilities``; see
    :func:`upcast_prediction_v2_v3`.
    """

    stream: ClassVar[str] = "serving"
    schema_version: int = 3
    prediction_id: Id
    model: ServedName
    model_version: Version
    code_version: str | None = None
    inputs: Features
    output: Output
    #: The alias whose version answered (``None``: the caller chose the version).
    alias: str | None = None
    #: ``True``: scored in shadow on the inputs of prediction ``paired_with``
    #: (never returned to the caller); its label is that prediction's label.
    shadow: bool = False
    paired_with: Id | None = None
    #: Class -> probability, as the model gave them (``None``: not logged).
    probabilities: Probabilities | None = None


class LabelObserved(Event, frozen=True, kw_only=True):
    """The ground truth for an earlier prediction became known."""

    stream: ClassVar[str] = "serving"
    prediction_id: Id
    model: ServedName
    label: Output


# -- monitoring ---------------------------------------------------------------
class DriftDetected(Event, frozen=True, kw_only=True):
    """A monitor found drift (concept: on errors; data: on a feature; prediction: on outputs)."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    kind: Literal["concept", "data", "prediction"]
    feature: str | None = None
    detector: str
    params: dict[str, Scalar] = {}
    statistic: float
    threshold: float | None = None
    window: Window = Window()
    prediction_ids: list[str] = []
    severity: Severity = "warning"
    message: str = ""


class DriftResolved(Event, frozen=True, kw_only=True):
    """A drift condition reported earlier no longer holds."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    kind: Literal["concept", "data", "prediction"]
    feature: str | None = None
    detector: str
    detected_id: str
    statistic: float | None = None


class AnomalyDetected(Event, frozen=True, kw_only=True):
    """Inputs were anomalous beyond what chance explains."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    detector: str
    params: dict[str, Scalar] = {}
    statistic: float
    threshold: float
    window: Window = Window()
    prediction_ids: list[str] = []
    severity: Severity = "warning"
    message: str = ""


class SkewDetected(Event, frozen=True, kw_only=True):
    """Serving inputs disagree with the model's training signature."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    feature: str
    kind: Literal["missing", "unexpected", "type", "nulls"]
    expected: str | None = None
    observed: str | None = None
    prediction_ids: list[str] = []
    severity: Severity = "warning"


class RetrainRequested(Event, frozen=True, kw_only=True):
    """A retrain policy fired; the request carries everything a trainer needs."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    reason: str
    trigger_id: str | None = None
    window: Window = Window()
    policy: dict[str, Scalar] = {}


class RetrainJobEnded(Event, frozen=True, kw_only=True):
    """The retrain runner's job for ``request_id`` ended (aggregate: the model).

    ``status``: ``candidate`` (registered as ``model_version``, passed the gate,
    aliased ``candidate``), ``rejected`` (registered, failed the gate) or
    ``failed`` (nothing registered). ``reason`` says why, with the gate's numbers.
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    request_id: Id
    status: Literal["candidate", "rejected", "failed"]
    reason: str
    run_id: str | None = None
    model_version: Version | None = None
    production_version: Version | None = None
    metric: str | None = None
    candidate_value: float | None = None
    production_value: float | None = None
    holdout_rows: int = 0
    dataset: str | None = None


class MonitorStatsReported(Event, frozen=True, kw_only=True):
    """Periodic statistics of a model's monitors (rolling error, anomaly scores, ...)."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    window: Window = Window()
    stats: dict[str, float | None]


class MonitorConfigured(Event, frozen=True, kw_only=True):
    """The monitor configuration of a model (or of one ``model_version``) changed at run time.

    ``config`` holds settings (:data:`modelog.models.monitor_config.SETTINGS`) and
    optionally ``"reset": true`` (drop the target's settings first, see
    :mod:`modelog.models.config_book`); ``model_version`` was added with a default.
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    config: dict[str, Any]
    actor: str = ""
    model_version: Version | None = None

    def __post_init__(self) -> None:
        check_nesting("MonitorConfigured", "config", self.config)


# -- subscriptions --------------------------------------------------------------
class AlertSubscriptionCreated(Event, frozen=True, kw_only=True):
    """A service subscribed to alerts by webhook (aggregate: the subscription id).

    Schema v2: the signing secret is stored only encrypted, in
    ``secret_ciphertext`` (see :func:`modelog.models.alerts.seal_secret`); v1
    held it in clear in ``secret``, see :func:`upcast_subscription_v1_v2`.
    """

    stream: ClassVar[str] = "subscriptions"
    schema_version: int = 2
    subscription_id: Id
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    models: list[str] = []
    kinds: list[str] = []
    min_severity: Severity = "info"
    #: The HMAC-SHA256 key of the ``Modelog-Signature`` header, encrypted with the
    #: deployment key (``MODELOG_SECRET_KEY``) and bound to the subscription id;
    #: ``None``: requests are not signed.
    secret_ciphertext: str | None = None


class AlertSubscriptionRemoved(Event, frozen=True, kw_only=True):
    """A subscription was cancelled."""

    stream: ClassVar[str] = "subscriptions"
    subscription_id: Id


class AlertDelivered(Event, frozen=True, kw_only=True):
    """An alert reached a subscriber (or failed for good)."""

    stream: ClassVar[str] = "subscriptions"
    subscription_id: Id
    alert_id: Id
    status_code: int | None = None
    attempts: int = 1
    ok: bool = True
    error: str | None = None


class OnlineModelCheckpointed(Event, frozen=True, kw_only=True):
    """The state of an online model learning on the stream was saved (aggregate: the model).

    ``artifact_uri``/``artifact_digest`` name the checkpoint (``river`` flavor:
    a pickle, load it only after checking the digest), ``n_learned`` the
    labelled observations it has learned, ``metrics`` its prequential metrics
    then. ``source_offset`` maps each serving-topic partition (as a string) to
    the next offset the checkpoint does *not* cover, when the processor knew
    the offsets: a restarted worker replays the serving log from there.
    ``mac`` is the HMAC-SHA256 (hex) of the checkpoint under the writing
    worker's key: a worker restores only checkpoints whose MAC verifies under
    its own key (``None`` -- e.g. written before MACs existed -- is never
    restored; the learner starts fresh from its registration).
    """

    stream: ClassVar[str] = "registry"
    model: Name
    model_version: Version
    artifact_uri: str
    artifact_digest: Digest
    n_learned: Annotated[int, msgspec.Meta(ge=0)]
    metrics: dict[str, float] = {}
    source_offset: dict[str, int] | None = None
    run_id: str | None = None
    mac: str | None = None


_CORE: tuple[type[Event], ...] = (
    DatasetVersionCreated,
    RunStarted,
    ParamsLogged,
    MetricsLogged,
    ArtifactLogged,
    RunDatasetUsed,
    RunFinished,
    RunFailed,
    ModelVersionRequested,
    ModelVersionRegistered,
    AliasChangeRequested,
    AliasSet,
    AliasRemoved,
    AliasChangeRejected,
    PredictionMade,
    LabelObserved,
    DriftDetected,
    DriftResolved,
    AnomalyDetected,
    SkewDetected,
    RetrainRequested,
    RetrainJobEnded,
    MonitorStatsReported,
    MonitorConfigured,
    AlertSubscriptionCreated,
    AlertSubscriptionRemoved,
    AlertDelivered,
    OnlineModelCheckpointed,
)
CATALOGUE: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (*_CORE, *policy_events.EVENTS, *quality_events.EVENTS, *mlflow_events.EVENTS,
                *serving_events.EVENTS)
}
"""Every event type by its ``type`` tag."""
