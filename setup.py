"""Build step: compile the monitoring hot path of the pure core with mypyc.

Everything else about the package is declared in ``pyproject.toml``; this file
only adds the extension modules. The worker routes every labelled prediction
through these modules (the serving monitor, its drift, outlier, anomaly, skew,
quality and rollout processors); compiled, they take about a fifth fewer
instructions, and the same source stays importable as plain Python.

* ``MODELOG_PURE=1`` skips compilation (no C compiler needed; the package is
  then plain Python, with the same behaviour).
* If compiling fails (no compiler, no headers), the build warns and installs
  plain Python: a missing compiler never blocks an install.
* In an editable install the compiled modules sit next to their sources
  (``models/*.so``); when a source is newer than its compiled copy,
  ``modelog.models`` runs the sources and warns (re-run the install command).

The repository root is the ``modelog`` package (``package-dir`` maps it), so
mypyc, which names modules after their folders, is shown the sources through a
``build/mypyc-src/modelog`` link to the root.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent

# The modules a labelled prediction passes through in the worker, and what they call.
COMPILED = [
    "anomaly", "comparison", "config_book", "datadrift", "drift", "early_labels",
    "feature_drift", "hst", "monitor", "monitor_events", "monitor_state", "multivariate",
    "online_models", "outliers", "perf_estimation", "pickled", "quality_monitor", "retrain",
    "rollout", "segments", "serving_path", "skew", "tabular",
]  # not validation: it takes untrusted values of any type and must name each bad one
# Read as Any when translating: analysing their stubs (torch's above all) takes minutes,
# and whether they are installed when pip builds varies; msgspec and numpy are pinned
# build requirements (pyproject.toml), so the translation is the same everywhere.
UNTYPED = ["cryptography", "matplotlib", "pandas", "pyarrow", "rich", "river", "scipy",
           "skops", "sklearn", "torch"]
GROUP = "modelog.models._native"  # one shared library, inside the package


class CompiledHotPath(build_ext):  # type: ignore[misc]  # setuptools ships no types
    """Translate the hot path with mypyc, then compile it; on any failure, plain Python.

    mypyc runs here, when extensions are built, not when ``setup.py`` is read:
    pip reads it several times (metadata, then the build).
    """

    extensions: list[Any]

    def finalize_options(self) -> None:
        self.distribution.ext_modules = _translated()  # before setuptools prepares them
        super().finalize_options()

    def run(self) -> None:
        if self.inplace or getattr(self, "editable_mode", False):
            self._remove_earlier_builds()
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as exc:  # any compiler failure: plain Python instead
            sys.stderr.write(
                f"modelog: compiling the monitoring hot path failed ({exc}); installing "
                f"plain Python instead (same behaviour, slower worker). Install a C compiler "
                f"and Python headers to compile it, or set MODELOG_PURE=1 to skip this.\n")
            for ext in self.extensions:  # a shim without its shared library cannot import
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            self.extensions = []

    def _remove_earlier_builds(self) -> None:
        """Delete compiled modules an earlier build left next to the sources: one no
        longer compiled, or a build that now falls back, would shadow its source."""
        for suffix in EXTENSION_SUFFIXES:
            for path in (ROOT / "models").glob(f"*{suffix}"):
                path.unlink()


def _translated() -> list[Any]:
    """mypyc's extensions for :data:`COMPILED` (none if disabled or mypyc is missing)."""
    if os.environ.get("MODELOG_PURE", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # a build without the declared build requirements
        sys.stderr.write("modelog: mypyc is not available; installing plain Python.\n")
        return []
    # The sources through a `modelog` link: mypyc names modules after their folders, and
    # compiled code's tracebacks show these paths (kept, so they show the source lines).
    src = ROOT / "build" / "mypyc-src"
    src.mkdir(parents=True, exist_ok=True)
    link = src / "modelog"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ROOT, target_is_directory=True)
    config = src / "mypy.ini"
    config.write_text(  # types from msgspec and numpy (build requirements); the rest is Any
        "[mypy]\npython_version = 3.11\nignore_missing_imports = True\n"
        f"explicit_package_bases = True\nmypy_path = {src}\n"
        f"[mypy-{','.join(f'{m}.*' for m in UNTYPED)}]\nfollow_imports = skip\n")
    paths = [str(src / "modelog" / "models" / f"{name}.py") for name in COMPILED]
    try:
        return list(mypycify(
            [f"--config-file={config}", *paths],
            opt_level="3", debug_level="0", group_name=GROUP, target_dir="build/mypyc",
        ))
    except BaseException as exc:  # mypyc exits (SystemExit) on a type error
        sys.stderr.write(f"modelog: mypyc could not translate the sources ({exc!r}); "
                         f"installing plain Python.\n")
        return []


# A placeholder: it makes the wheel platform-specific and runs build_ext, which
# replaces it with mypyc's extensions.
setup(ext_modules=[Extension(f"{GROUP}__mypyc", sources=[])],
      cmdclass={"build_ext": CompiledHotPath})
