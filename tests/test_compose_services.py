"""The compose stack starts: every service of docker-compose.yml, run without a Docker engine.

Each modelog service's ``command`` runs as ``python -m modelog <command>`` (the
image's entrypoint is the CLI) with the service's ``environment`` as compose
would build it (anchors, merge keys, ``${VAR:?...}`` from a ``.env``-like
mapping holding the two tokens). Substituted, and nothing else:

* ``kafka:9092`` -> the session's test broker (``tests/conftest.py``);
* every compose service host name (``projector`` ...) and ``0.0.0.0`` keep their
  meaning on one machine: host names become ``127.0.0.1``, binds stay as written;
  the fixed ports (8765, 8501) become free ones, the same in every service;
* a container path mounted from a named volume (``modelog-data:/data``) -> one
  temporary directory per volume, shared by the services that mount it; a
  service without a volume gets its own directory;
* the topic prefix -> a fresh one (the session broker serves other tests), and
  the demo's numbers -> small ones.

The projector's query server must answer with the token and refuse without it,
the dashboard must serve HTTP and ask for its token, the worker and the
deliverer must keep running, and the demo's drift alert must reach the
dashboard's data layer (:mod:`modelog.dashboard.data` through a
:class:`~modelog.store.reader.Reader` with the dashboard's settings).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelog.config import Settings
from modelog.dashboard import data
from modelog.store.errors import QueryError, StoreError
from modelog.store.reader import Reader
from modelog.streams.broker import free_port

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
#: What a ``.env`` next to docker-compose.yml would hold (README, "Security").
DOTENV = {"MODELOG_QUERY_TOKEN": "q-" + uuid.uuid4().hex,
          "MODELOG_DASHBOARD_TOKEN": "d-" + uuid.uuid4().hex,
          "MODELOG_SECRET_KEY": "k-" + uuid.uuid4().hex,
          "MODELOG_MLFLOW_TOKEN": "m-" + uuid.uuid4().hex}
#: Long-running services, in the order compose would start them (after ``topics``).
DAEMONS = ("projector", "worker", "delivery", "retrainer", "dashboard", "mlflow")
DEMO_NUMBERS = {"--predictions": "3000", "--drift-at": "1500"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::?([?-])([^}]*))?\}")
_HOST_PORT = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*|0\.0\.0\.0):(\d+)")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` in ``value``."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op == "-" else ""
    return _VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(parsed, dict)
    return parsed


def modelog_services(compose: dict[str, Any]) -> list[str]:
    return [name for name, svc in compose["services"].items()
            if svc.get("image") == "modelog:latest"]


class Stack:
    """The compose services as local processes: environments, commands, logs."""

    def __init__(self, compose: dict[str, Any], broker: str, root: Path) -> None:
        self.compose, self.broker, self.root = compose, broker, root
        self.services: dict[str, Any] = compose["services"]
        self.prefix = f"compose{uuid.uuid4().hex[:8]}."
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _port(self, port: str) -> str:
        return str(self.ports.setdefault(port, free_port()))

    def _endpoint(self, m: re.Match[str]) -> str:
        host, port = m.groups()
        if f"{host}:{port}" == "kafka:9092":
            return self.broker
        if host in self.services:
            return f"127.0.0.1:{self._port(port)}"
        if host == "0.0.0.0":
            return f"0.0.0.0:{self._port(port)}"
        return m.group(0)

    def _data_dirs(self, name: str) -> dict[str, Path]:
        """Container path -> directory, from the service's volumes."""
        dirs: dict[str, Path] = {}
        for volume in self.services[name].get("volumes", []):
            source, target = str(volume).split(":")[:2]
            assert source in self.compose.get("volumes", {}), f"{name}: {volume} is not named"
            dirs[target] = self.root / "volumes" / source
        return dirs

    def environment(self, name: str) -> dict[str, str]:
        env: dict[str, str] = {}
        dirs = self._data_dirs(name)
        for key, raw in self.services[name].get("environment", {}).items():
            value = _HOST_PORT.sub(self._endpoint, interpolate(str(raw), DOTENV))
            if value.startswith("/") and key == "MODELOG_DATA_DIR":
                value = str(dirs.get(value, self.root / "own" / name))
            env[key] = value
        env["MODELOG_TOPIC_PREFIX"] = self.prefix
        for path in [*dirs.values(), Path(env["MODELOG_DATA_DIR"])]:
            path.mkdir(parents=True, exist_ok=True)
        return env

    def command(self, name: str) -> list[str]:
        cmd = [str(c) for c in self.services[name]["command"]]
        for i, arg in enumerate(cmd[:-1]):
            if arg == "--port":
                cmd[i + 1] = self._port(cmd[i + 1])
            if name == "demo" and arg in DEMO_NUMBERS:
                cmd[i + 1] = DEMO_NUMBERS[arg]
        return cmd

    def start(self, name: str) -> subprocess.Popen[bytes]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MODELOG_")}
        env = {**inherited, "PYTHONUNBUFFERED": "1", **self.environment(name)}
        workdir = self.root / "cwd" / name
        workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log(name), "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "modelog", *self.command(name)],
                                    env=env, cwd=workdir, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{self.log(name).read_text()}")

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(stack: Stack, name: str, url: str, token: str | None, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.alive(name)
        with contextlib.suppress(OSError):
            status, body = _get(url, token)
            if status == 200:
                return body
        time.sleep(0.3)
    pytest.fail(f"{name} did not answer {url} within {timeout:g} s:\n"
                f"{stack.log(name).read_text()}")


@pytest.fixture(scope="module")
def stack(compose: dict[str, Any], broker: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``topics`` run to completion, then the long-running services started."""
    s = Stack(compose, broker, tmp_path_factory.mktemp("compose"))
    try:
        topics = s.start("topics")
        assert topics.wait(timeout=120) == 0, s.log("topics").read_text()
        for name in DAEMONS:
            s.start(name)
        yield s
    finally:
        s.stop()


def test_every_modelog_service_is_run(compose: dict[str, Any]) -> None:
    assert set(modelog_services(compose)) == {"topics", *DAEMONS, "demo"}


def test_the_stack_refuses_to_start_without_its_tokens(compose: dict[str, Any]) -> None:
    for name in ("projector", "dashboard"):
        env = compose["services"][name]["environment"]
        for variable in DOTENV:
            if variable in env:
                with pytest.raises(ValueError, match=f"{variable} is missing"):
                    interpolate(str(env[variable]), {})


def test_projector_answers_with_the_token_only(stack: Stack) -> None:
    url = stack.environment("dashboard")["MODELOG_QUERY_URL"]
    assert stack.environment("projector")["MODELOG_QUERY_BIND"].startswith("0.0.0.0:")
    health = json.loads(_wait(stack, "projector", f"{url}/health",
                              DOTENV["MODELOG_QUERY_TOKEN"], 90))
    assert health["ok"] is True
    for token in (None, "wrong", DOTENV["MODELOG_DASHBOARD_TOKEN"]):
        status, body = _get(f"{url}/health", token)
        assert status == 401 and json.loads(body)["error"] == "unauthorized"


def test_dashboard_serves_http_and_asks_for_its_token(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = stack.ports["8501"]
    _wait(stack, "dashboard", f"http://127.0.0.1:{port}/_stcore/health", None, 90)
    from streamlit.testing.v1 import AppTest

    from modelog.dashboard.launch import APP_PATH

    for key, value in stack.environment("dashboard").items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
    assert [t.label for t in at.text_input] == ["Dashboard token"]
    assert not [t.value for t in at.title if t.value == "Live monitoring"]


def test_demo_alert_reaches_the_dashboard_data_layer(stack: Stack) -> None:
    demo = stack.start("demo")
    try:
        code = demo.wait(timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the demo did not finish:\n{stack.log('demo').read_text()}")
    assert code == 0, stack.log("demo").read_text()
    settings = Settings.from_env(stack.environment("dashboard"))
    assert settings.query_token == DOTENV["MODELOG_QUERY_TOKEN"]
    reader = Reader(settings, timeout=10.0)
    deadline = time.monotonic() + 120
    feed = None
    while (feed is None or feed.empty) and time.monotonic() < deadline:
        for name in DAEMONS:
            stack.alive(name)
        with contextlib.suppress(StoreError):  # the projector may still be catching up
            feed = data.alert_feed(reader, types=("DriftDetected",))
        time.sleep(0.0 if feed is not None and not feed.empty else 1.0)
    assert feed is not None and not feed.empty, stack.log("worker").read_text()[-5000:]
    assert set(feed["model"]) == {"demo-churn"}
    for name in DAEMONS:  # the worker and the deliverer kept running
        stack.alive(name)
    with pytest.raises(QueryError, match="refused"):
        Reader(settings.replace(query_token="wrong")).query("select 1")


def test_mlflow_endpoint_answers_with_the_token_only(stack: Stack) -> None:
    port = stack.ports["5000"]
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get?experiment_id=0"
    body = json.loads(_wait(stack, "mlflow", url, DOTENV["MODELOG_MLFLOW_TOKEN"], 90))
    assert body["experiment"]["name"] == "Default"
    for token in (None, "wrong", DOTENV["MODELOG_QUERY_TOKEN"]):
        status, answer = _get(url, token)
        assert status == 401 and json.loads(answer)["error_code"] == "UNAUTHENTICATED"
