"""Which training dataset is a model version's monitoring reference (a pure, order-free fold).

A version registered from a run (``ModelVersionRegistered.run_id``) whose run
read a dataset for training (``RunDatasetUsed``, ``context="training"``) is
monitored against that dataset's profile (``DatasetVersionCreated.profile``).
:class:`TrainingReferences` folds the three kinds of events in any order --
they live on different topics -- and :meth:`TrainingReferences.reference_for`
answers once all three are known. When a run read several training datasets,
the last one it recorded counts. A dataset's version number follows the
``datasets`` view: the rank of its first appearance (time, then event id)
among the distinct contents of that name. Profiles come off the broker and
are untrusted: one without usable columns is ignored (the warm-up reference
stays). Imports only :mod:`modelog.models`.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import (ColumnSchema, DatasetVersionCreated,
...                                    ModelVersionRegistered, RunDatasetUsed)
>>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> profile = {"columns": {"age": {"kind": "numeric", "count": 3, "min": 1.0, "max": 3.0}}}
>>> refs = TrainingReferences()
>>> refs.observe(ModelVersionRegistered(id="m1", time=t, aggregate="churn", model="churn",
...     model_version=1, run_id="r1", flavor="custom", artifact_uri="", artifact_digest=""))
True
>>> refs.reference_for("churn", 1) is None
True
>>> refs.observe(RunDatasetUsed(id="u1", time=t, aggregate="r1", run_id="r1",
...     dataset="churn-train", digest="a" * 64))
True
>>> refs.observe(DatasetVersionCreated(id="d1", time=t, aggregate="churn-train",
...     name="churn-train", digest="a" * 64, columns=[ColumnSchema("age", "int64")],
...     num_rows=3, uri="file:///x", profile=profile))
True
>>> refs.reference_for("churn", 1).label
'training dataset churn-train v1'
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from modelog.models.events import (
    DatasetVersionCreated,
    Event,
    ModelVersionRegistered,
    RunDatasetUsed,
)

__all__ = ["TrainingReference", "TrainingReferences"]


@dataclasses.dataclass(frozen=True)
class TrainingReference:
    """A version's training dataset: name, version number, digest and profile."""

    name: str
    version: int
    digest: str
    profile: Mapping[str, Any]

    @property
    def label(self) -> str:
        """How alerts name it: ``training dataset churn-train v3``."""
        return f"training dataset {self.name} v{self.version}"


def _usable(profile: Any) -> bool:
    if not isinstance(profile, Mapping):
        return False
    columns = profile.get("columns")
    return isinstance(columns, Mapping) and any(isinstance(c, Mapping) for c in columns.values())


class TrainingReferences:
    """The fold of registrations, runs' training datasets and dataset versions."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, int], str] = {}
        self._used: dict[str, tuple[tuple[dt.datetime, str], str, str]] = {}
        # (name, digest) -> (first (time, id), profile)
        self._datasets: dict[tuple[str, str], tuple[tuple[dt.datetime, str], Any]] = {}

    def observe(self, event: Event) -> bool:
        """Take one event; whether it may change a reference (``False``: not relevant)."""
        if isinstance(event, ModelVersionRegistered):
            if event.run_id is None:
                return False
            self._runs[(event.model, event.model_version)] = event.run_id
            return True
        order = (event.time, event.id)
        if isinstance(event, RunDatasetUsed):
            if event.context != "training":
                return False
            old = self._used.get(event.run_id)
            if old is None or order > old[0]:
                self._used[event.run_id] = (order, event.dataset, event.digest)
            return True
        if isinstance(event, DatasetVersionCreated):
            key = (event.name, event.digest)
            old_ds = self._datasets.get(key)
            if old_ds is None or order < old_ds[0]:
                self._datasets[key] = (order, event.profile)
            return True
        return False

    def reference_for(self, model: str, version: int) -> TrainingReference | None:
        """The training reference of a version (``None``: no dataset known with a profile)."""
        run = self._runs.get((model, version))
        used = self._used.get(run) if run is not None else None
        if used is None:
            return None
        _, name, digest = used
        found = self._datasets.get((name, digest))
        if found is None or not _usable(found[1]):
            return None
        number = 1 + sum(1 for (n, _), (order, _) in self._datasets.items()
                         if n == name and order < found[0])
        return TrainingReference(name, number, digest, found[1])
