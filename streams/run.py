"""A training run of the SDK (:class:`Run`) and the dataset versions runs use.

A :class:`Run` is made by :meth:`modelog.streams.sdk.Client.start_run` and used
as a context manager: it turns ``log_params``, ``log_metric``,
``log_artifact``... into the run's events (``RunStarted``, ``ParamsLogged``,
``MetricsLogged``, ``RunFinished``/``RunFailed``...) and queues them through
its client.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import traceback as tb_module
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from modelog.models import codec
from modelog.models.errors import EventValidationError
from modelog.models.events import (
    ArtifactLogged,
    CodeVersion,
    MetricPoint,
    MetricsLogged,
    ParamsLogged,
    RunDatasetUsed,
    RunFailed,
    RunFinished,
    RunStarted,
)
from modelog.models.validation import (
    Scalar,
    artifact_suffix,
    check_name,
    check_scalars,
    finite_float,
)
from modelog.streams.codeversion import capture_code_version
from modelog.streams.errors import RunNotActiveError

if TYPE_CHECKING:
    from modelog.streams.sdk import Client

__all__ = ["METRIC_BATCH", "DatasetVersion", "Run"]

METRIC_BATCH = 1_000
"""Metric points buffered per run before a ``MetricsLogged`` event is emitted."""


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
        check_name(self.experiment, "RunStarted", "experiment")
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
        v = finite_float(value, "MetricsLogged", f"metrics.{key}")
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
        digest, uri = self.client.artifacts.put_bytes(data, artifact_suffix(Path(name).suffix[1:]))
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
