"""modelog.models: pure ML code -- detectors, flavors, evaluation (no Kafka, no DuckDB).

The drift and anomaly monitors are importable from here; they load River on
first use only, so ``import modelog.models`` stays cheap.

Examples
--------
>>> from modelog.models import ConceptDriftMonitor
>>> ConceptDriftMonitor("page_hinkley").detector
'page_hinkley'
"""

from __future__ import annotations

import importlib
from typing import Any

from modelog.models.errors import (
    InvalidObservationError,
    InvalidParameterError,
    ModelsError,
    UnknownDetectorError,
)

__all__ = [
    "AnomalyDecision",
    "AnomalyMonitor",
    "ConceptDriftMonitor",
    "DriftDecision",
    "InvalidObservationError",
    "InvalidParameterError",
    "ModelsError",
    "UnknownDetectorError",
]

_LAZY = {
    "AnomalyDecision": "modelog.models.anomaly",
    "AnomalyMonitor": "modelog.models.anomaly",
    "ConceptDriftMonitor": "modelog.models.drift",
    "DriftDecision": "modelog.models.drift",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelog.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
