"""The lifecycle issue's bad inputs end to end: a specific error, nothing partial, a sane log.

Each case goes through the real SDK against the session's broker (and the CLI where
a command exists), then reads the topics back to prove that nothing of the rejected
call was written. Artifact digests that do not match are covered in
``test_registry.py::test_corrupted_artifact_is_refused_before_deserializing``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import modelog
from modelog.cli import app
from modelog.config import Settings
from modelog.models.errors import EventValidationError
from modelog.models.events import (
    AliasChangeRejected,
    AliasSet,
    DatasetVersionCreated,
    MetricsLogged,
    ParamsLogged,
)
from modelog.store.errors import NoDataError, NotFoundError
from modelog.streams.errors import AliasChangeRejectedError
from modelog.streams.logtail import LogTail, decode_records
from modelog.streams.projector import Projector
from modelog.streams.registry_agent import RegistryService
from modelog.streams.sdk import Client
from modelog.streams.topics import Topics, ensure_topics

pytestmark = [pytest.mark.broker]


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    ensure_topics(settings)
    with modelog.connect(settings=settings) as c, RegistryService(settings):
        yield c


def events_on(settings: Settings, topic: str) -> list[object]:
    with LogTail(settings, topic) as tail:
        return list(decode_records(tail.read_to_end()))


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ["../evil", "a/../../b", "/etc/passwd", ".hidden", ""])
def test_dataset_name_escaping_the_artifact_directory(client: Client, settings: Settings,
                                                      tmp_path: Path, name: str) -> None:
    before = files_under(tmp_path)
    with pytest.raises(EventValidationError) as info:
        client.log_dataset(name, pa.table({"x": [1.5, 2.5, float(len(name))]}))
    assert info.value.field == "name" and info.value.value == name
    assert "letters, digits" in info.value.rule and "nothing was sent" in str(info.value)
    client.flush()
    assert files_under(tmp_path) == before  # no artifact written, inside or outside the root
    topic = Topics.from_settings(settings).datasets
    assert not [e for e in events_on(settings, topic) if isinstance(e, DatasetVersionCreated)]


def test_non_finite_metric_and_changed_param(client: Client, settings: Settings) -> None:
    with client.start_run("bad-input") as run:
        run.log_params({"lr": 0.1})
        run.log_metric("loss", 0.5, step=1)
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(EventValidationError) as info:
                run.log_metric("loss", bad, step=2)
            assert info.value.field == "metrics.loss" and "finite" in info.value.rule
        with pytest.raises(EventValidationError) as info:
            run.log_params({"lr": 0.2, "depth": 3})
        assert info.value.field == "params.lr" and info.value.value == 0.2
        assert "already logged as 0.1" in info.value.rule
        run.log_params({"lr": 0.1})  # the same value again is fine (idempotent)
    client.flush()
    runs = events_on(settings, Topics.from_settings(settings).runs)
    metrics = [m for e in runs if isinstance(e, MetricsLogged) for m in e.metrics]
    assert [(m.key, m.value, m.step) for m in metrics] == [("loss", 0.5, 1)]
    params = [e.params for e in runs if isinstance(e, ParamsLogged)]
    assert all(p.get("lr") == 0.1 for p in params) and not any("depth" in p for p in params)


def test_alias_for_a_version_that_does_not_exist(client: Client, settings: Settings) -> None:
    client.register_model("churn", artifact_uri="s3://models/churn", flavor="custom")
    with pytest.raises(AliasChangeRejectedError) as info:
        client.set_alias("churn", "production", 5, reason="typo")
    assert "version 5 of churn does not exist (versions: 1)" in str(info.value)
    registry = events_on(settings, Topics.from_settings(settings).registry)
    assert not [e for e in registry if isinstance(e, AliasSet)]
    [rejected] = [e for e in registry if isinstance(e, AliasChangeRejected)]
    assert rejected.model_version == 5 and "does not exist" in rejected.reason
    assert "production" not in client.registry("churn").aliases("churn")


def test_unknown_dataset_or_version(client: Client, settings: Settings,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NoDataError, match="modelog project"):  # nothing projected yet
        client.get_dataset("customers")
    client.log_dataset("customers", pa.table({"age": [30, 40, 50]}))
    client.flush()
    with Projector(settings, serve=False) as projector:
        for _ in range(60):
            projector.project_once(timeout=0.5)
            if projector.connection.execute("select count(*) from datasets").fetchall()[0][0]:
                break
    with pytest.raises(NotFoundError, match="no dataset named 'nope'"):
        client.get_dataset("nope")
    with pytest.raises(NotFoundError, match="has no version 4: it has versions 1"):
        client.get_dataset("customers", 4)
    monkeypatch.setenv("MODELOG_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    out = runner.invoke(app, ["datasets", "diff", "nope", "1", "2"])
    assert out.exit_code == 1 and "nope" in out.output
    out = runner.invoke(app, ["datasets", "diff", "customers", "1", "4"])
    assert out.exit_code == 1 and "has no version 4" in out.output
