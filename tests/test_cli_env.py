"""Settings reach every process the CLI starts, through the one ``MODELOG_*`` table.

``modelog.config.ENV_VARS`` is derived from the fields of ``Settings``; ``env_for``
writes it for the dashboard launcher and for the processes ``modelog up``
starts. Regression: ``MODELOG_ARTIFACT_URI=memory://x modelog dashboard`` used
to die with a ``KeyError`` because the launcher kept its own, shorter table.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import modelog.config
from modelog.cli.services import _child_env
from modelog.config import ENV_VARS, Settings, env_for
from modelog.streams.broker import free_port

#: A value other than the default for every field, of the field's type.
NON_DEFAULT: dict[str, Any] = {
    "broker": "kafka-1:9092,kafka-2:9092", "data_dir": Path("/srv/modelog"),
    "topic_prefix": "acme.", "partitions": 3, "replication": 2, "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u", "sasl_password": "p",
    "ssl_cafile": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
    "producer_name": "svc@host", "query_url": "http://q:1", "query_bind": "0.0.0.0:9000",
    "artifact_uri": "memory://x", "webhook_allow_private": True, "secret_key": "k",
    "online_allow_pickle": True, "query_token": "q-token", "dashboard_token": "d-token",
    "restore_retention": 30.0,
}


def _sibling(name: str) -> ModuleType:
    """Another test module (for its helpers), loaded by path."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_{name}_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_has_a_documented_variable() -> None:
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert list(ENV_VARS) == fields
    assert set(NON_DEFAULT) == set(fields)
    table = modelog.config.__doc__ or ""
    undocumented = [v for v in ENV_VARS.values() if f"``{v}``" not in table]
    assert not undocumented, f"add these to the table in config.py's docstring: {undocumented}"


def test_every_setting_survives_the_trip_through_the_environment() -> None:
    s = Settings(**NON_DEFAULT)
    env = env_for(s)
    assert set(env) == set(ENV_VARS.values())
    assert Settings.from_env(env) == s


def test_processes_started_by_up_get_the_flags_but_name_themselves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELOG_TOPIC_PREFIX", "from-env.")
    monkeypatch.delenv("MODELOG_PRODUCER_NAME", raising=False)
    s = Settings.from_env(topic_prefix="modelog.", broker="k:1", data_dir=Path("rel"))
    env = _child_env(s)
    assert env["MODELOG_TOPIC_PREFIX"] == "modelog."  # the flag wins over the inherited value
    assert env["MODELOG_BROKER"] == "k:1"
    assert env["MODELOG_DATA_DIR"] == str(Path("rel").resolve())
    assert "MODELOG_PRODUCER_NAME" not in env
    assert env["PYTHONUNBUFFERED"] == "1"
    rebuilt = Settings.from_env(env).replace(producer_name="x")
    assert rebuilt == s.replace(data_dir=Path("rel").resolve(), producer_name="x")


def test_dashboard_starts_with_an_artifact_uri(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("modelog")
    assert script.exists(), f"{script}: install the package (pip install -e .)"
    port = free_port()
    env = {**os.environ, "MODELOG_ARTIFACT_URI": "memory://x",
           "MODELOG_DATA_DIR": str(tmp_path / "data")}
    env.pop("MODELOG_QUERY_URL", None)
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(script), "dashboard", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # poll until Streamlit answers (fails with the log if the command dies)
        _sibling("test_dashboard_browser")._wait_healthy(f"http://127.0.0.1:{port}", proc, log, 90)
    finally:  # SIGTERM to the group (`modelog dashboard` and Streamlit), then SIGKILL
        _sibling("test_e2e")._stop(proc)
    assert "KeyError" not in log.read_text()
