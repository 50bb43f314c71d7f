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


def test_one_up_per_data_dir_and_a_killed_up_leaves_nothing_running(tmp_path: Path) -> None:
    """`kill -9` of `up` alone: its children stop by themselves; the next `up` starts clean."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOG_")}
    env.update(MODELOG_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "modelog", "up", "--no-dashboard",
            "--broker-port", str(free_port())]
    logs = [tmp_path / "up1.log", tmp_path / "up3.log"]

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            up = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        _wait(lambda: "Ctrl-C stops all" in log.read_text(), 120, f"`modelog up` ({log})")
        return up

    first = start(logs[0])
    second: subprocess.Popen[bytes] | None = None
    try:
        again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                               check=False)
        assert again.returncode == 1
        assert "another `modelog up` runs on" in again.stderr
        assert f"locked by pid {first.pid}" in again.stderr

        children = json.loads((data / "up.lock").read_text())["children"]
        assert len(children) == 7  # broker, projector, worker, delivery, retrainer, ...

        def running(pid: int) -> bool:
            try:
                state = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return False
            return "State:\tZ" not in state

        assert all(running(p) for p in children)
        os.kill(first.pid, signal.SIGKILL)  # `up` alone; its children run in sessions of theirs
        first.wait(10)
        _wait(lambda: not any(running(p) for p in children), 30,
              "the children of the killed `up` to stop")
        second = start(logs[1])  # nothing in its way: no child of it exits
        time.sleep(3)
        assert " exited " not in logs[1].read_text(), logs[1].read_text()[-3000:]
    finally:
        for up in (first, second):
            if up is not None and up.poll() is None:
                up.send_signal(signal.SIGINT)
                try:
                    up.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(up.pid, signal.SIGKILL)
