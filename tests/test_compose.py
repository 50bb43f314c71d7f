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
    "service", ["worker", "projector", "dashboard", "delivery", "topics", "demo", "mlflow"])
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


def _host_of(bind: str) -> str:
    return bind.rpartition(":")[0].strip("[]")


def test_services_beyond_loopback_require_their_token(compose: dict[str, Any]) -> None:
    """The query server and the dashboard listen on every interface of their container:
    their tokens come from .env (or the shell), with no default, and compose refuses to
    start without them (``${VAR:?...}``)."""
    from modelog.config import is_loopback

    services = compose["services"]
    projector = services["projector"]["environment"]
    assert not is_loopback(_host_of(projector["MODELOG_QUERY_BIND"]))
    dashboard = services["dashboard"]
    address = dashboard["command"][dashboard["command"].index("--address") + 1]
    assert not is_loopback(address)
    for env, variable in [(projector, "MODELOG_QUERY_TOKEN"),
                          (dashboard["environment"], "MODELOG_DASHBOARD_TOKEN"),
                          (dashboard["environment"], "MODELOG_QUERY_TOKEN")]:
        assert str(env[variable]).startswith(f"${{{variable}:?"), (variable, env[variable])
    assert "TOKEN" not in (ROOT / "Dockerfile").read_text()


def test_dashboard_reaches_the_projector_by_service_name(compose: dict[str, Any]) -> None:
    services = compose["services"]
    bind = services["projector"]["environment"]["MODELOG_QUERY_BIND"]
    url = services["dashboard"]["environment"]["MODELOG_QUERY_URL"]
    assert url == f"http://projector:{bind.rpartition(':')[2]}"
    shared = set(services["projector"]["volumes"]) & set(
        services["dashboard"]["volumes"])
    assert shared == {"modelog-data:/data"}
