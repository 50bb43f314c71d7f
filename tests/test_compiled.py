"""The compiled hot path (setup.py, mypyc) against its sources.

The install compiles the monitoring modules; these tests check that it did
(where a C compiler exists), that compiled and plain builds derive the same
events from the same stream, that a snapshot written by one build continues in
the other, and that an edited source makes the compiled group step aside.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pytest

import modelog.models as models_pkg
from modelog.models import compiled_modules

# Routes a drifting stream of two models through the worker's router; can stop
# halfway to write a snapshot, or start from one. Prints what it derived.
SCRIPT = r"""
import datetime as dt, hashlib, json, pathlib, sys
import modelog.models
from modelog.models import codec
from modelog.streams.bench.worker import _registration, serving_events
from modelog.streams.topics import Topics
from modelog.streams.worker import standard_router

mode, path = sys.argv[1], pathlib.Path(sys.argv[2])
t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
models = ["c-0", "c-1"]
topics = Topics("c.")
router = standard_router(topics)
router.observe_registry([e for m in models for e in _registration(m, t0)])
streams = [serving_events(m, 4_000, seed=i, start=t0, drift_at=2_000 + 500 * i)
           for i, m in enumerate(models)]
records = [codec.encode(ev) for batch in zip(*streams, strict=True) for ev in batch]
half = len(records) // 2
lo, hi = {"whole": (0, len(records)), "first": (0, half), "second": (half, len(records))}[mode]
if mode == "second":
    router.restore(path.read_bytes())
digest, types = hashlib.sha256(), {}
for start in range(lo, hi, 500):
    chunk = records[start:min(start + 500, hi)]
    router.prepare([(v, start + i) for i, v in enumerate(chunk)])
    for i, v in enumerate(chunk):
        for out in router.route(b"k", v, topics.serving, 0, start + i):
            if start + i >= half:
                digest.update(out.topic.encode() + out.value)
            name = codec.decode(out.value).type_name()
            types[name] = types.get(name, 0) + 1
if mode == "first":
    path.write_bytes(router.snapshot())
print(json.dumps({"compiled": modelog.models.compiled_modules(),
                  "digest": digest.hexdigest(), "types": types}))
"""


def _has_compiler() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return any((Path(d) / cc).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


def _run(mode: str, snapshot: Path, *, pure: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "MODELOG_PURE"}
    if pure:
        env["MODELOG_PURE"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(snapshot)], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


needs_compiled = pytest.mark.skipif(
    not compiled_modules(),
    reason="the hot path is not compiled here (MODELOG_PURE set, no C compiler, or an "
           "edited source); reinstall with `.venv/bin/pip install -c constraints.txt -e .`")


@pytest.mark.skipif(not _has_compiler() or os.environ.get("MODELOG_PURE", "") not in ("", "0"),
                    reason="no C compiler, or MODELOG_PURE is set: plain Python is expected")
def test_the_install_compiled_the_monitoring_hot_path() -> None:
    compiled = compiled_modules()
    assert {"monitor", "datadrift", "feature_drift", "anomaly", "outliers", "rollout"} \
        <= set(compiled), "the install fell back to plain Python; see its build output"
    import modelog.models.monitor as monitor

    assert monitor.__file__ is not None and not monitor.__file__.endswith(".py")
    assert "validation" not in compiled  # untrusted values must meet the plain code's checks


@needs_compiled
def test_compiled_and_plain_derive_the_same_events(tmp_path: Path) -> None:
    compiled = _run("whole", tmp_path / "unused", pure=False)
    plain = _run("whole", tmp_path / "unused", pure=True)
    assert compiled["compiled"] and not plain["compiled"]
    types = plain["types"]
    assert isinstance(types, dict)
    assert types.get("DriftDetected", 0) >= 2  # the stream drifts: alerts are compared too
    assert compiled["digest"] == plain["digest"]
    assert compiled["types"] == plain["types"]


@needs_compiled
@pytest.mark.parametrize("first_pure", [True, False], ids=["plain-then-compiled",
                                                            "compiled-then-plain"])
def test_a_snapshot_of_one_build_continues_in_the_other(tmp_path: Path,
                                                        first_pure: bool) -> None:
    whole = _run("whole", tmp_path / "unused", pure=True)
    snapshot = tmp_path / "partition.snapshot"
    _run("first", snapshot, pure=first_pure)
    resumed = _run("second", snapshot, pure=not first_pure)
    assert resumed["digest"] == whole["digest"]


def _fake_build(root: Path) -> Path:
    folder = root / "models"
    folder.mkdir()
    (root / "pyproject.toml").write_text("")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in ("monitor", "drift"):
        (folder / f"{name}.py").write_text("")
        (folder / f"{name}{suffix}").write_bytes(b"")
    (folder / f"_native__mypyc{suffix}").write_bytes(b"")
    return folder


def test_an_edited_source_makes_the_compiled_group_step_aside(tmp_path: Path) -> None:
    folder = _fake_build(tmp_path)
    for path in folder.iterdir():  # compiled after the sources were written
        stamp = 1_000_000 if path.suffix == ".py" else 2_000_000
        os.utime(path, (stamp, stamp))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert models_pkg._sources_first(folder, {}) is None  # fresh: compiled runs
    os.utime(folder / "drift.py")  # edited now, after the build
    with pytest.warns(RuntimeWarning, match=r"models/drift\.py changed after .* Recompile"):
        finder = models_pkg._sources_first(folder, {})
    assert finder is not None and finder.names == {"monitor", "drift"}  # the whole group
    spec = finder.find_spec(f"{models_pkg.__name__}.monitor", None)
    assert spec is not None and spec.origin == str(folder / "monitor.py")
    assert finder.find_spec(f"{models_pkg.__name__}.events", None) is None  # not compiled


def test_modelog_pure_runs_the_sources_and_installed_copies_are_not_second_guessed(
        tmp_path: Path) -> None:
    folder = _fake_build(tmp_path)
    finder = models_pkg._sources_first(folder, {"MODELOG_PURE": "1"})
    assert finder is not None and finder.names == {"monitor", "drift"}
    (tmp_path / "pyproject.toml").unlink()  # site-packages: no checkout around it
    os.utime(folder / "drift.py")
    assert models_pkg._sources_first(folder, {}) is None
    assert models_pkg._sources_first(folder, {"MODELOG_PURE": "0"}) is None
