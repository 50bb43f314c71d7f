"""The dependency rule, checked over every module by parsing its imports.

``cli -> dashboard | streams -> store -> models``: a package imports only the
packages below it (and itself). ``models/`` is the pure core: it imports nothing
of modelog but ``modelog.errors`` and itself, and no broker, database or
network library. ``store/`` imports no Kafka client. ``dashboard/`` reads
through ``store/`` and never talks to the broker. ``config`` and ``errors`` sit
under everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "store", "streams", "dashboard", "cli")

#: What each layer may import of modelog (prefixes of dotted module names).
ALLOWED: dict[str, tuple[str, ...]] = {
    "errors": ("modelog.errors",),
    "config": ("modelog.errors", "modelog.config"),
    "models": ("modelog.errors", "modelog.models"),
    "store": ("modelog.errors", "modelog.config", "modelog.models", "modelog.store"),
    "streams": ("modelog.errors", "modelog.config", "modelog.models", "modelog.store",
                "modelog.streams"),
    "dashboard": ("modelog.errors", "modelog.config", "modelog.models", "modelog.store",
                  "modelog.dashboard"),
    "cli": ("modelog",),
    "root": ("modelog",),
}
KAFKA = ("confluent_kafka", "aiokafka", "kafka", "faust", "mode", "testcontainers")
#: Third-party or standard modules a layer must not import (top-level names or dotted prefixes).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "errors": (),
    "config": (*KAFKA, "duckdb", "streamlit"),
    "models": (*KAFKA, "duckdb", "sqlite3", "streamlit", "httpx", "requests", "socket",
               "urllib.request", "http", "starlette", "uvicorn", "subprocess", "tempfile"),
    "store": (*KAFKA, "streamlit", "httpx", "requests"),
    "streams": ("streamlit",),
    "dashboard": KAFKA,
    "cli": (),
    "root": (),
}


def layer_of(path: Path) -> str:
    """The layer a source file belongs to, from its place in the repository."""
    rel = path.relative_to(ROOT)
    top = rel.parts[0]
    if top in PACKAGES:
        return top
    if rel.name in {"errors.py", "config.py"}:
        return rel.stem
    if rel.name == "cli.py":
        return "cli"
    return "root"


def imported(source: str, filename: str = "<source>") -> set[str]:
    """Every absolute module ``source`` imports (``from X import y`` gives ``X`` and ``X.y``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{filename}: relative import; write modelog.<package>...")
            if node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(layer: str, source: str, filename: str = "<source>") -> list[str]:
    """The imports of ``source`` that break the rule for ``layer``, with the reason."""
    bad: list[str] = []
    for name in sorted(imported(source, filename)):
        if name == "modelog" or _under(name, "modelog"):
            if name == "modelog" and layer not in {"cli", "root"}:
                bad.append(f"{name}: import the subpackage you need, not the root")
            elif name != "modelog" and not any(_under(name, p) for p in ALLOWED[layer]):
                bad.append(f"{name}: {layer}/ may import only {', '.join(ALLOWED[layer])}")
        elif any(_under(name, p) for p in FORBIDDEN[layer]):
            bad.append(f"{name}: {layer}/ must not use it (I/O belongs to a higher layer)")
    return bad


SOURCES = sorted(
    p for p in ROOT.rglob("*.py")
    if not {".venv", "tests", "build", ".git"} & set(p.relative_to(ROOT).parts)
)


def test_every_package_is_checked() -> None:
    layers = {layer_of(p) for p in SOURCES}
    assert {"models", "store", "streams", "dashboard", "cli", "config", "errors"} <= layers


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_follows_the_dependency_rule(path: Path) -> None:
    bad = violations(layer_of(path), path.read_text(), str(path))
    assert not bad, f"{path.relative_to(ROOT)} breaks the dependency rule:\n" + "\n".join(bad)


@pytest.mark.parametrize(("layer", "source"), [
    ("models", "from modelog.streams.producer import EventProducer"),
    ("models", "import modelog.store.reader"),
    ("models", "from modelog.config import Settings"),
    ("models", "import duckdb"),
    ("models", "from confluent_kafka import Producer"),
    ("models", "import urllib.request"),
    ("store", "from confluent_kafka import Consumer"),
    ("store", "import aiokafka"),
    ("store", "from modelog.streams import sdk"),
    ("store", "from modelog.dashboard.data import QuerySource"),
    ("dashboard", "from modelog.streams.sdk import connect"),
    ("dashboard", "import confluent_kafka"),
    ("streams", "from modelog.dashboard import app"),
    ("streams", "import modelog.cli"),
    ("config", "from modelog.store.reader import Reader"),
])
def test_a_bad_import_is_reported(layer: str, source: str) -> None:
    assert violations(layer, source), f"{layer}: {source!r} should break the rule"


@pytest.mark.parametrize(("layer", "source"), [
    ("models", "from modelog.models.events import Event\nfrom modelog.errors import ModelogError"),
    ("models", "import numpy as np\nimport pyarrow as pa\nimport river"),
    ("store", "import duckdb\nfrom modelog.models import codec"),
    ("streams", "from confluent_kafka import Consumer\nfrom modelog.store.reader import Reader"),
    ("dashboard", "import streamlit\nfrom modelog.store.reader import Reader"),
    ("cli", "from modelog.streams.worker import run_worker\nfrom modelog.dashboard import launch"),
])
def test_an_allowed_import_passes(layer: str, source: str) -> None:
    assert violations(layer, source) == []


def test_modules_stay_small_enough_to_hold_in_the_head() -> None:
    long = {str(p.relative_to(ROOT)): n for p in SOURCES
            if (n := len(p.read_text().splitlines())) > 620}
    assert not long, f"split these by concern (~600 lines at most): {long}"
