"""The package boundaries the brief sets: the ML core imports no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What ``models/`` may use of ``streams/``: the event model and ids (pure data).
ALLOWED_STREAMS = {"modelog.streams.events", "modelog.streams.ids"}
FORBIDDEN_ROOTS = {"confluent_kafka", "aiokafka", "kafka", "faust", "duckdb", "streamlit"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_no_store_no_broker_no_database(path: Path) -> None:
    bad = sorted(
        name for name in imports(path)
        if name.split(".")[0] in FORBIDDEN_ROOTS
        or name.startswith(("modelog.store", "modelog.dashboard"))
        or (name.startswith("modelog.streams") and name not in ALLOWED_STREAMS)
    )
    assert not bad, f"models/{path.name} imports {bad}: keep I/O out of the ML core"
