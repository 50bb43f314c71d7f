"""Monitor configuration from the SDK and the CLI: configure, show, reset (real broker, real
projector, the DuckDB file it writes)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from typer.testing import CliRunner

from modelog.cli import app
from modelog.config import Settings
from modelog.models.errors import MonitorConfigError
from modelog.streams.projector import Projector
from modelog.streams.sdk import connect

pytestmark = [pytest.mark.broker]

runner = CliRunner()


def cli(s: Settings, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--broker", s.bootstrap_servers, "--topic-prefix",
                                 s.topic_prefix, "--data-dir", str(s.data_dir), *args])
    return result.exit_code, result.output


def project(s: Settings, configurations: int) -> None:
    """Project until the ledger holds ``configurations`` MonitorConfigured events."""
    with Projector(s, serve=False) as projector:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            projector.project_once(timeout=0.5)
            n = projector.connection.execute(
                "SELECT count(*) FROM events WHERE type = 'MonitorConfigured'").fetchone()
            if n and n[0] >= configurations:
                return
    raise AssertionError(f"fewer than {configurations} configurations projected")


def test_sdk_configure_show_reset(topics: Settings) -> None:
    s = topics
    with connect(settings=s) as client:
        with pytest.raises(MonitorConfigError) as err:
            client.configure_monitor("churn", psi_threshold="high")
        assert err.value.field == "psi_threshold" and "finite number" in err.value.rule
        with pytest.raises(MonitorConfigError) as err:
            client.configure_monitor("churn", version=0, check_every=10)
        assert err.value.field == "model_version"
        first = client.configure_monitor("churn", psi_threshold=0.3, outlier_margin=5)
        assert first.config == {"psi_threshold": 0.3, "outlier_margin": 5}
        sent = client.configure_monitor("churn", version=2, check_every=50,
                                        pending_ttl=dt.timedelta(hours=2))
        assert sent.config["pending_ttl"] == 7200.0  # JSON: seconds, as the worker reads it
        project(s, 2)  # the refused ones were never sent
        view = client.monitor_config("churn", 2)
        assert view.settings == {"psi_threshold": 0.3, "outlier_margin": 5, "check_every": 50,
                                 "pending_ttl": 7200.0}
        assert view.config["psi_threshold"] == 0.3 and view.config["check_every"] == 50
        assert view.config["outlier_margin"] == 5.0 and view.versions == [2]
        assert client.monitor_config("churn").config["check_every"] == 100
        client.reset_monitor("churn", 2)
        project(s, 3)
        assert client.monitor_config("churn", 2).settings == {"psi_threshold": 0.3,
                                                              "outlier_margin": 5}
        client.reset_monitor("churn")
        project(s, 4)
        view = client.monitor_config("churn", 2)
        assert view.settings == {} and view.versions == [] and view.events == 4


def test_cli_configure_show_reset(topics: Settings) -> None:
    s = topics
    code, out = cli(s, "monitor", "configure", "churn", "check_every=often")
    assert code == 1 and "check_every" in out and "must be an integer" in out
    code, out = cli(s, "monitor", "configure", "churn", "nonsense")
    assert code == 1 and "KEY=VALUE" in out
    # a detector's bound, and a quality setting: named, with what to do at a command line
    code, out = cli(s, "monitor", "configure", "churn", "psi_threshold=-1")
    assert code == 1 and "'psi_threshold' of model 'churn' = -1.0 is invalid: must be > 0;" in out
    code, out = cli(s, "monitor", "configure", "churn", "quality.window=0")
    assert code == 1 and "'quality.window'" in out and "must be >= 1" in out
    assert "nothing was sent: fix it and run the command again" in out
    assert "MonitorConfigured event" not in out and "create the monitor again" not in out
    code, out = cli(s, "monitor", "configure", "churn", "--version", "3", "psi_threshold=0.35",
                    "training_reference=false", "pending_ttl=2h")
    assert code == 0, out
    assert "churn v3" in out and "psi_threshold=0.35" in out
    project(s, 1)
    code, out = cli(s, "monitor", "show", "churn", "--version", "3")
    assert code == 0, out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line.strip()}
    assert lines["psi_threshold"] == ["0.35", "set"]
    assert lines["training_reference"] == ["false", "set"]
    assert lines["pending_ttl"] == ["7200.0", "set"]
    assert lines["check_every"] == ["100", "default"]
    code, out = cli(s, "monitor", "show", "churn")
    assert code == 0 and "the defaults" in out and "v3" in out
    code, out = cli(s, "monitor", "reset", "churn", "--version", "3")
    assert code == 0 and "reset monitor of churn v3" in out
    project(s, 2)
    code, out = cli(s, "monitor", "show", "churn", "--version", "3", "--json")
    assert code == 0 and '"settings": {}' in out
