"""Services stop within seconds on SIGTERM and SIGINT whatever the broker's state, and a lost
broker is logged at a bounded rate (not once per reconnect attempt)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelog.streams.broker import EmbeddedBroker, free_port

SERVICES = ("project", "deliver")


def _start(command: str, broker: str, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MODELOG_BROKER": broker, "MODELOG_DATA_DIR": str(data_dir)}
    return subprocess.Popen([sys.executable, "-m", "modelog", command], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _stopped_within(proc: subprocess.Popen[bytes], sig: int, seconds: float) -> float:
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {seconds:g} s after signal {sig}") from None
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("command", SERVICES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_a_service_without_a_broker_stops_at_once(command: str, sig: int,
                                                  tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = _start(command, dead, tmp_path / "data", tmp_path / "log")
    time.sleep(4)  # connecting, well inside the broker timeout
    assert proc.poll() is None, (tmp_path / "log").read_text()
    assert _stopped_within(proc, sig, 5) < 5


@pytest.mark.slow
@pytest.mark.parametrize("command", SERVICES)
def test_a_lost_broker_is_logged_at_a_bounded_rate_and_sigterm_still_stops(
    command: str, tmp_path: Path,
) -> None:
    broker = EmbeddedBroker(port=free_port()).start()
    log = tmp_path / "log"
    try:
        proc = _start(command, broker.bootstrap_servers, tmp_path / "data", log)
        time.sleep(10)  # started and following the topics
        assert proc.poll() is None, log.read_text()
    finally:
        broker.stop()
    time.sleep(6)  # librdkafka retries every few ms; the log must not follow it
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if "refused" in line or "brokers are down" in line]
    assert len(lines) < 40, f"{len(lines)} lines about the lost broker in 6 s:\n" + \
        "\n".join(lines[:50])
    assert _stopped_within(proc, signal.SIGTERM, 10) < 10
