"""The README's main command end to end: `modelog up` starts every service on the embedded
broker, the demo's drift becomes an alert in the views, a killed child is restarted, and
Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelog.streams.broker import free_port

pytestmark = pytest.mark.slow


def _modelog(env: dict[str, str], *args: str, timeout: float = 240) -> str:
    done = subprocess.run([sys.executable, "-m", "modelog", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_runs_the_loop_restarts_a_dead_child_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOG_")}
    env.update(MODELOG_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
    out = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "modelog", "up", "--no-dashboard",
                           "--broker-port", str(free_port())], env=env, stdout=out,
                          stderr=subprocess.STDOUT, start_new_session=True)
    log = tmp_path / "up.log"
    try:
        _wait(lambda: "Ctrl-C stops all" in log.read_text(), 90, "`modelog up` to start")
        _wait(lambda: (data / "projector.json").exists(), 60, "the projector's query server")
        _modelog(env, "demo", "--predictions", "4000", "--drift-at", "2000", "--rate", "0",
                 timeout=300)

        def alerted() -> bool:
            rows = _modelog(env, "query", "select count(*) as n from alerts where "
                            "type = 'DriftDetected'", "--format", "csv")
            return int(rows.strip().splitlines()[-1]) > 0

        _wait(alerted, 120, "a drift alert in the views")

        # kill -9 a child: the supervisor says so and starts it again
        pid = int(json.loads((data / "projector.json").read_text())["pid"])
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: "projector exited" in log.read_text(), 30, "the supervisor to notice")
        _wait(lambda: (data / "projector.json").exists()
              and json.loads((data / "projector.json").read_text())["pid"] != pid,
              60, "the restarted projector")
        assert alerted()
    finally:
        started = time.monotonic()
        up.send_signal(signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            raise AssertionError("`modelog up` did not stop within 30 s of Ctrl-C") from None
        finally:
            out.close()
    assert time.monotonic() - started < 30
    text = log.read_text()
    assert "retrainer" in text and "stopping" in text, text[-3000:]
