"""docker-compose.yml parses, and every modelog service runs a real `modelog` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from modelog.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _check_command(args: list[str]) -> str:
    """Parse ``modelog ARGS --help`` with the real CLI: unknown commands or options fail."""
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_kafka_runs_in_kraft_mode_with_a_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "ZOOKEEPER" not in " ".join(env).upper()
    assert any(v.startswith("kafka-data:") for v in kafka["volumes"])
    assert "kafka-data" in compose["volumes"]


@pytest.mark.parametrize(
    "service", ["worker", "projector", "dashboard", "delivery", "topics", "demo"])
def test_each_service_command_is_a_real_modelog_command(
    compose: dict[str, Any], service: str
) -> None:
    svc = compose["services"][service]
    assert svc["image"] == "modelog:latest"
    assert svc["environment"]["MODELOG_BROKER"] == "kafka:9092"
    usage = _check_command(list(svc["command"]))
    assert f"modelog {svc['command'][0]}" in usage


def test_dockerfile_entrypoint_is_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["modelog"]' in text
    assert "whl/cpu" in text  # CPU torch, no CUDA wheels
