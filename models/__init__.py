"""modelog.models: pure ML code -- detectors, flavors, evaluation (no Kafka, no DuckDB).

The drift and anomaly monitors are importable from here; they load River on
first use only, so ``import modelog.models`` stays cheap.

The monitoring hot path is compiled with mypyc when the package is installed
(``setup.py``); the sources stay the reference. ``MODELOG_PURE=1`` in the
environment runs the sources instead. In a source checkout, a module edited
after it was compiled makes the whole compiled group step aside (the sources
run) with a warning saying how to recompile.

Examples
--------
>>> from modelog.models import ConceptDriftMonitor
>>> ConceptDriftMonitor("page_hinkley").detector
'page_hinkley'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
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


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Import the compiled modules of this package from their ``.py`` sources."""

    def __init__(self, folder: Path, names: set[str]) -> None:
        self.folder, self.names = folder, names

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, self.folder / f"{name}.py")


def compiled_modules() -> list[str]:
    """The modules of this package that run compiled (empty when the sources run).

    >>> isinstance(compiled_modules(), list)
    True
    """
    if any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
        return []
    return sorted(_compiled_files())


def _compiled_files(folder: Path | None = None) -> dict[str, Path]:
    """Compiled modules (by name) found next to their sources in ``folder``."""
    folder = folder or Path(__file__).parent
    found: dict[str, Path] = {}
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for path in folder.glob(f"*{suffix}"):
            name = path.name[: -len(suffix)]
            if not name.startswith("_") and (folder / f"{name}.py").exists():
                found[name] = path
    return found


def _sources_first(folder: Path, environ: dict[str, str]) -> _SourcesFirst | None:
    """The finder to put first on the import path when ``folder``'s sources must run.

    They must when ``MODELOG_PURE`` is set, or, in a source checkout (the
    package's parent holds ``pyproject.toml``), when a source is newer than its
    compiled module (warned). Then every compiled module steps aside, not only
    the stale one: compiled code reads its siblings' compiled classes directly.
    """
    compiled = _compiled_files(folder)
    if not compiled:
        return None
    if environ.get("MODELOG_PURE", "") in ("", "0"):
        if not (folder.parent / "pyproject.toml").exists():  # installed, not a checkout
            return None
        stale = sorted(name for name, path in compiled.items()
                       if (folder / f"{name}.py").stat().st_mtime > path.stat().st_mtime)
        if not stale:
            return None
        warnings.warn(
            f"modelog: {', '.join(f'models/{n}.py' for n in stale)} changed after the "
            f"monitoring hot path was compiled, so it runs from its sources (slower). "
            f"Recompile with `.venv/bin/pip install -c constraints.txt -e .`, or delete "
            f"models/*.so to run the sources without this warning.",
            RuntimeWarning, stacklevel=3)
    return _SourcesFirst(folder, set(compiled))


_finder = _sources_first(Path(__file__).parent, dict(os.environ))
if _finder is not None:
    sys.meta_path.insert(0, _finder)
